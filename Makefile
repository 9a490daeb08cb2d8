# `sudo make demo` and `sudo make test` are the two commands of the README.
VENV := .venv
PY := $(VENV)/bin/python
FWLAB := $(VENV)/bin/fwlab

.PHONY: setup demo test lint bench clean

setup:
	@scripts/setup

demo: setup
	@scripts/demo

test: setup
	@$(VENV)/bin/ruff check fw tests scripts
	@$(VENV)/bin/pytest -q -p no:cacheprovider; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: setup
	@$(VENV)/bin/ruff check fw tests scripts

bench: setup
	@$(PY) scripts/bench_parse.py
	@$(PY) scripts/bench_engine.py
	@$(PY) scripts/bench_exposure.py
