# The two commands:  `make run` (set up, seed the demo, start the app)  and  `make test`.
HOST ?= 127.0.0.1
PORT ?= 7860
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CALIBRA_HOME ?= $(CURDIR)/.calibra

.PHONY: run test setup models demo bench

run: setup models demo
	$(BIN)/calibra serve --host $(HOST) --port $(PORT)

test: setup models
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

setup: $(BIN)/.installed

# torch is installed first and pinned, so pip takes the CPU build instead of a multi-GB CUDA one.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

models: setup
	$(BIN)/calibra models fetch

demo: setup models
	$(BIN)/calibra demo seed

bench: setup models
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/annotate_load.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/reward_tldr.py --model reward
	$(BIN)/python bench/reward_tldr.py --model ranker --out $(CALIBRA_HOME)/bench/ranker-tldr
	$(BIN)/python bench/slic_step.py
	$(BIN)/python bench/slic_tldr.py --ranker $(CALIBRA_HOME)/bench/ranker-tldr
