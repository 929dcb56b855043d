# The two commands a new user needs: `make demo` and `make test`. Each creates .venv if it is missing and
# installs the pinned stack and the package into it, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test lint install bench clean

$(STAMP): requirements.txt setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/speechid demo --workdir demo-work

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_prep.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_embed.py
	$(BIN)/python benchmarks/bench_index.py

clean:
	rm -rf demo-work demo-real-work build *.egg-info .pytest_cache
