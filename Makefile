# es-l2l: every target sets itself up first (virtual environment, CPU torch, the package).
#   make run    ES meta-training on the teacher family with the default config
#   make test   the whole test suite
#   make compare ES vs BPTT vs hybrid on the teacher family, same training time each (~20 min)
#   make bench  the benchmark suite: simulation grid, Norse peer, ES generation, BPTT step (JSON under benchmarks/results/)
# GPU users: create .venv and install the torch build for their CUDA into it first; setup then
# keeps it (it installs the CPU wheel only when .venv has no torch).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
CONFIG ?= configs/teacher_es.yaml

.PHONY: setup run test compare bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/es-l2l run $(CONFIG)

compare: setup
	$(BIN)/es-l2l compare configs/compare_teacher.yaml

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/es-l2l bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
