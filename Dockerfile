# Serving images: the torch-free service, onnxruntime and the bundled default model.
#   CPU (default):  docker build --target cpu -t medimaging-service .   (name the target: the legacy builder
#                   builds every stage otherwise, the GPU ones too; BuildKit builds only the last, `FROM cpu`)
#   GPU:            docker build --target gpu -t medimaging-service:gpu .
#                   docker run --gpus all -p 8000:8000 medimaging-service:gpu   (needs the NVIDIA container toolkit)
# Both images are one Python on one base: they differ only in their virtual environment. The GPU one holds
# onnxruntime-gpu (the same onnxruntime minor version as the CPU one) with CUDA 13, cuDNN 9 and nvJPEG as NVIDIA's
# pip packages, which the service loads at start (onnxruntime.preload_dlls); the driver comes from the host.
# The bundled model directory is /app/models (SERVE_MODEL_DIR). Mount your own model directory
# (<name>/<version>/model.onnx, see the README) read-only at /models and set SERVE_MODEL_DIR=/models.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- What every stage shares: the base image and the environment.
FROM ${PYTHON_IMAGE} AS base
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SERVE_HOST=0.0.0.0 \
    SERVE_PORT=8000 \
    SERVE_MODEL_DIR=/app/models

# ---- The pinned dependencies of the CPU image, resolved into a virtual environment; pip is dropped from it.
FROM base AS cpu-deps
COPY docker/requirements-serve.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps -r /tmp/requirements.txt \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall -y -q pip setuptools

# ---- The runtime both images share: the code, the bundled model, the user, the port, the healthcheck.
FROM base AS runtime
# The DICOM outbox's mount point, owned by the service user and closed to others (results not yet delivered hold PHI);
# a volume mounted there (compose `pacs` profile) takes this owner and mode.
RUN useradd --system --uid 10001 --gid 0 --no-create-home --home-dir /nonexistent service \
    && install -d -m 0700 -o 10001 -g 0 /var/lib/medimaging/dicom-outbox
WORKDIR /app
COPY models ./models
COPY medcore ./medcore
COPY service ./service
# Compiled once here, so a restarted container does not recompile the code it imports.
RUN python -m compileall -q medcore service
USER 10001
EXPOSE 8000
# The start period covers the warm-up of every batch shape (cuDNN's algorithm search on a GPU).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; u.urlopen(f\"http://127.0.0.1:{os.environ.get('SERVE_PORT', '8000')}/health/ready\", timeout=2); sys.exit(0)"]
CMD ["python", "-m", "service"]

# ---- The two images: the shared runtime with its virtual environment. The CPU one comes first: the legacy builder
# builds every stage before the target, so `--target cpu` never builds the GPU dependencies.
FROM runtime AS cpu
COPY --from=cpu-deps /opt/venv /opt/venv

# The GPU image's pinned dependencies (onnxruntime-gpu, CUDA 13, cuDNN 9, nvJPEG, nvImageCodec: about 3 GB).
FROM base AS gpu-deps
COPY docker/requirements-serve-gpu.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps -r /tmp/requirements.txt \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall -y -q pip setuptools

FROM runtime AS gpu
COPY --from=gpu-deps /opt/venv /opt/venv
ENV SERVE_PROVIDER=cuda

# The default target (last stage wins otherwise) is the CPU image.
FROM cpu
