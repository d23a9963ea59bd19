# Two commands a new user needs:  `make serve`  and  `make test`; `make train-env` only sets up .venv for training.
PYTHON ?= python3
SERVE_VENV := .venv-serve
DEV_VENV := .venv

.PHONY: serve test train-env lint typecheck pytest docker-build docker-up docker-smoke docker-down docker-check clean

# Set up a torch-free environment and start the service on the bundled default model.
serve: $(SERVE_VENV)/.installed
	$(SERVE_VENV)/bin/python -m service

$(SERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install -q --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install -q -e '.[serve]'
	touch $@

# Set up the full environment (training, export, serving, tools) and run ruff, mypy and pytest.
test: $(DEV_VENV)/.installed lint typecheck pytest

# Set up the full environment (.venv: training, export, serving and the test tools) without running anything.
train-env: $(DEV_VENV)/.installed

# A CPU-only machine: `make test TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs PyTorch's CPU build
# (about 0.2 GB) first; the package index's default build brings 3.2 GB of NVIDIA libraries.
TORCH_INDEX ?=
TORCH_PINS := $(shell grep -oE '"torch(vision)?==[^"]+"' pyproject.toml | tr -d '"')

$(DEV_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/python -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(DEV_VENV)/bin/python -m pip install -q --index-url $(TORCH_INDEX) $(TORCH_PINS))
	$(DEV_VENV)/bin/python -m pip install -q -e '.[serve,train,dev]'
	touch $@

lint: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .

typecheck: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/mypy

pytest: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python -m pytest

# Containers (README, Operate): the CPU image, the compose stack, the smoke script, the container checks alone.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
docker-build:
	docker build --target cpu -t medimaging-service:latest .

docker-up: docker-build
	$(COMPOSE) up -d

docker-smoke:
	scripts/smoke.sh http://localhost:$${SERVICE_PORT:-8000}

docker-down:
	$(COMPOSE) down

docker-check: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python -m pytest tests/test_container_config.py tests/test_container_smoke.py \
		tests/test_alert_rules.py tests/test_k8s_manifests.py tests/test_container_stack.py

clean:
	rm -rf $(SERVE_VENV) $(DEV_VENV) .mypy_cache .ruff_cache .pytest_cache
