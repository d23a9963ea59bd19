# Serving images: the torch-free service, onnxruntime and the bundled default model.
#   CPU (default):  docker build --target cpu -t medimaging-service .   (name the target: the legacy builder
#                   builds every stage otherwise, the GPU ones too; BuildKit builds only the last, `FROM cpu`)
#   GPU:            docker build --target gpu -t medimaging-service:gpu .     (CUDA 13 + cuDNN 9, onnxruntime-gpu)
# The bundled model directory is /app/models (SERVE_MODEL_DIR). Mount your own model directory
# (<name>/<version>/model.onnx, see the README) read-only at /models and set SERVE_MODEL_DIR=/models.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

# ---- CPU: resolve the pinned dependencies into a virtual environment, then drop pip from it.
FROM ${PYTHON_IMAGE} AS cpu-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/requirements-serve.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps -r /tmp/requirements.txt \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall -y -q pip setuptools

# ---- CPU runtime: the slim base, the venv, the code and the bundled model; no compiler, no pip in the venv.
FROM ${PYTHON_IMAGE} AS cpu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SERVE_HOST=0.0.0.0 \
    SERVE_PORT=8000 \
    SERVE_MODEL_DIR=/app/models
# The DICOM outbox's mount point, owned by the service user and closed to others (results not yet delivered hold PHI);
# a volume mounted there (compose `pacs` profile) takes this owner and mode.
RUN useradd --system --uid 10001 --gid 0 --no-create-home --home-dir /nonexistent service \
    && install -d -m 0700 -o 10001 -g 0 /var/lib/medimaging/dicom-outbox
COPY --from=cpu-deps /opt/venv /opt/venv
WORKDIR /app
COPY models ./models
COPY medcore ./medcore
COPY service ./service
# Compiled once here, so a restarted container does not recompile the code it imports.
RUN python -m compileall -q medcore service
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; u.urlopen(f\"http://127.0.0.1:{os.environ.get('SERVE_PORT', '8000')}/health/ready\", timeout=2); sys.exit(0)"]
CMD ["python", "-m", "service"]

# ---- GPU: Ubuntu 24.04's Python 3.12 on the CUDA 13 runtime with cuDNN 9 (linted here; built where a GPU is).
FROM ${CUDA_IMAGE} AS gpu-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# Ubuntu replaces point releases with security updates, so the interpreter is pinned by its minor version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
COPY docker/requirements-serve-gpu.txt /tmp/requirements.txt
RUN python3.12 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps -r /tmp/requirements.txt \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall -y -q pip setuptools

FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --gid 0 --no-create-home --home-dir /nonexistent service \
    && install -d -m 0700 -o 10001 -g 0 /var/lib/medimaging/dicom-outbox
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SERVE_HOST=0.0.0.0 \
    SERVE_PORT=8000 \
    SERVE_MODEL_DIR=/app/models \
    SERVE_PROVIDER=cuda
COPY --from=gpu-deps /opt/venv /opt/venv
WORKDIR /app
COPY models ./models
COPY medcore ./medcore
COPY service ./service
RUN python -m compileall -q medcore service
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; u.urlopen(f\"http://127.0.0.1:{os.environ.get('SERVE_PORT', '8000')}/health/ready\", timeout=2); sys.exit(0)"]
CMD ["python", "-m", "service"]

# The default target (last stage wins otherwise) is the CPU image.
FROM cpu
