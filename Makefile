# The README's two commands: `make serve` (set up, build the model, serve) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCUST_VENV ?= .venv-locust
MODEL := model_repository/resnet50/1/model.onnx
WEIGHTS ?= auto
SERVE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: serve test venv locust-venv model backend backend-required system-deps clean

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

$(MODEL): | $(BIN)/shopvision
	$(BIN)/shopvision model build --weights $(WEIGHTS)

model: $(MODEL)

# Triton's native ONNX Runtime backend, built once into ~/.cache/shopvision (outside the repository).
# Without a C++ toolchain `make serve` warns and serves the python_ort stand-in; the suite needs it.
backend: venv
	$(BIN)/shopvision backend build

backend-required: system-deps venv
	$(BIN)/shopvision backend build --require

serve: venv model backend
	$(BIN)/shopvision serve $(SERVE_ARGS)

system-deps:
	scripts/install-system-deps.sh

test: system-deps venv locust-venv backend-required
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LOCUST_VENV) model_repository/resnet50/*/model.onnx model_repository/resnet50/*/provenance.json
