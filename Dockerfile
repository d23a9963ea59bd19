# CPU serving image: the torch-free service, onnxruntime and the bundled default model.
# Build: docker build -t medimaging-service .        Run: docker compose up
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY docker/requirements-serve.txt /tmp/requirements-serve.txt
RUN pip install --no-cache-dir -r /tmp/requirements-serve.txt \
    && useradd --system --uid 10001 --no-create-home service

COPY pyproject.toml README.md ./
COPY medcore ./medcore
COPY service ./service
RUN pip install --no-cache-dir --no-deps .

COPY models ./models

USER 10001
EXPOSE 8000
ENV SERVE_HOST=0.0.0.0 \
    SERVE_PORT=8000 \
    SERVE_MODEL_PATH=/app/models/pneumoniamnist-convnext_atto/1.0.0/model.onnx

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status == 200 else 1)"]

CMD ["python", "-m", "service"]
