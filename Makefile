# The README's two commands: `make serve` (set up, build the model, serve) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCUST_VENV ?= .venv-locust
# The served model repository, assembled from the model_repository/ template (which no command writes).
BUILD_DIR ?= build/model_repository
# Empty: keep the built weights (auto on the first build). Or auto, synthetic, a zoo name, a file.
WEIGHTS ?=
SERVE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: serve test test-fast lint venv locust-venv model backend backend-required system-deps clean

$(BIN)/shopvision: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all]'
	touch $@

venv: $(BIN)/shopvision

# Locust cannot share .venv (see benchmarks/locust-requirements.txt).
$(LOCUST_VENV)/bin/locust: benchmarks/locust-requirements.txt pyproject.toml
	$(PYTHON) -m venv $(LOCUST_VENV)
	$(LOCUST_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCUST_VENV)/bin/pip install --quiet -r benchmarks/locust-requirements.txt
	$(LOCUST_VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

locust-venv: $(LOCUST_VENV)/bin/locust

# Cheap when nothing changed: it re-copies the template's configs and keeps the built weights.
model: venv
	$(BIN)/shopvision model build --template model_repository --repository $(BUILD_DIR) $(if $(WEIGHTS),--weights $(WEIGHTS))

# Triton's native ONNX Runtime backend, built once into ~/.cache/shopvision (outside the repository).
# Without a C++ toolchain `make serve` warns and serves the python_ort stand-in; the suite needs it.
backend: venv
	$(BIN)/shopvision backend build

backend-required: system-deps venv
	$(BIN)/shopvision backend build --require

# Triton (8000 HTTP, 8001 gRPC, 8002 metrics), then the search API and page on 8080.
serve: venv model backend
	$(BIN)/shopvision serve --repository $(BUILD_DIR) --api $(SERVE_ARGS)

system-deps:
	scripts/install-system-deps.sh

lint: venv
	$(BIN)/ruff check client tests benchmarks model_repository
	$(BIN)/mypy

test: system-deps venv locust-venv backend-required lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every test that needs no tritonserver: seconds, no native backend, no Locust.
test-fast: venv
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LOCUST_VENV) build
