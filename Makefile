# minillm: the two commands of the README, each making its own virtual environment.
#   make demo   install, fetch tiny Shakespeare, prepare, pretrain the tiny config, plot, sample
#   make test   install with the test extras, lint (ruff) and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test,mpi]"
	touch $(STAMP)

venv: $(STAMP)

# Re-running continues the same run (--resume) instead of overwriting its checkpoints.
demo: $(STAMP)
	$(BIN)/minillm pretrain --config shakespeare_char_tiny \
		$$(test -f out/shakespeare_char_tiny/last/state.json && echo --resume)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
