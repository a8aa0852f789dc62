# The two commands a newcomer needs: `make demo` and `make test`. Both first build .venv/ (CPU, once).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: venv test test-fast demo tiny clean-demo

venv:
	@bash .ci/env/setup_venv.sh

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the tests marked slow (vLLM start-up, DeepSpeed, multi-process training).
test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: venv
	$(PY) -m unifer demo $(if $(FAST),--fast,) $(if $(FIGS),--figs,)

tiny: venv
	$(PY) -m unifer tiny --out model/tiny-qwen2.5-vl
