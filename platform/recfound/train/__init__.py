"""Training: the Ray Train worker loop (DeepSpeed ZeRO, GradCache, S2Sched in the loop), checkpoints
and the training stage of a job (`launch.fit_run`); the whole job is `recfound.job.run_training`."""
