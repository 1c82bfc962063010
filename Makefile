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
# The demo catalog's photos when no catalog is configured: the Grocery Store Dataset's catalog photos where
# ../shared/data is beside the checkout (see its README), generated pictures otherwise.
DEMO_PHOTOS ?= $(wildcard ../shared/data/grocery-store-dataset/iconic-images-and-descriptions)
PYTEST_ARGS ?=
# The suite runs on this many processes, a test file each at a time (--dist loadfile: a file's module-scoped servers
# and services are started once, on one worker). Each worker starts its own session tritonserver. 0: one process.
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: serve test test-fast lint audit venv locust-venv model system-deps clean

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

# Triton (8000 HTTP, 8001 gRPC, 8002 metrics) with the `cpu` configuration, then the search API and page on 8080.
serve: venv model
	$(BIN)/shopvision serve --repository $(BUILD_DIR) --api $(if $(DEMO_PHOTOS),--demo-photos $(DEMO_PHOTOS)) $(SERVE_ARGS)

system-deps:
	scripts/install-system-deps.sh

lint: venv
	$(BIN)/ruff check src tests benchmarks model_repository
	$(BIN)/mypy

# Known vulnerabilities in the resolved environment; says so when no advisory database could be reached.
audit: venv
	$(BIN)/pip install --quiet pip-audit
	$(BIN)/python scripts/audit.py

test: system-deps venv locust-venv lint
	$(PYTEST) $(PYTEST_ARGS)

# The tests that need only the venv: no tritonserver, no system package, nothing slow (docs/development.md).
test-fast: venv
	$(PYTEST) -m "not integration and not system and not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LOCUST_VENV) build
