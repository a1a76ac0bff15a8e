# The two commands:  `make run` (set up, seed the demo, start the app)  and  `make test`.
HOST ?= 127.0.0.1
PORT ?= 7860
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CALIBRA_HOME ?= $(CURDIR)/.calibra

.PHONY: run test setup models demo bench system-packages

run: setup models demo
	$(BIN)/calibra serve --host $(HOST) --port $(PORT)

# Lint, type-check, then the whole suite twice: on SQLite, and on PostgreSQL (tests of SQLite
# itself are skipped there).
test: system-packages setup models
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	CALIBRA_TEST_DATABASE=postgresql $(BIN)/python -m pytest -q

# The tests start a throw-away PostgreSQL server and drive Chromium: Debian's packages, installed
# here when they are missing and we may (root with apt-get), else named with the command to run.
SYSTEM_PACKAGES_MISSING = $(strip \
	$(if $(wildcard /usr/lib/postgresql/*/bin/initdb),,postgresql) \
	$(if $(wildcard /usr/bin/chromium),,chromium))

system-packages:
ifneq ($(SYSTEM_PACKAGES_MISSING),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES_MISSING); \
	else \
		echo "The tests need Debian's $(SYSTEM_PACKAGES_MISSING). Install them with:"; \
		echo "    sudo apt-get install -y $(SYSTEM_PACKAGES_MISSING)"; \
		echo "then run make test again."; exit 1; \
	fi
endif

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
