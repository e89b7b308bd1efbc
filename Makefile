# Set-up and everyday commands. Each target creates (once) and reuses the virtual environment
# .venv in this checkout; torch is pinned by constraints.txt to the CPU wheel on local disk.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export LAPE_EVAL_CACHE ?= $(CURDIR)/.cache
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: install test test-fast test-numerics demo demo-baseline bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[demo,test]"
	touch $(STAMP)

## The main job: the whole method on Gemma-3-270M (from its PyPI package), offline (see README).
demo: $(STAMP)
	$(OFFLINE) $(BIN)/lape-eval demo --out runs/demo $(DEMO_ARGS)

## All tests, the slow real-model ones included (they run in CI).
test: $(STAMP)
	$(BIN)/lint-imports
	$(OFFLINE) $(BIN)/python -m pytest -ra $(PYTEST_ARGS)

## The tests that compare floats computed on the fly (marker `numerics`), again under another CPU
## kernel set than this machine's own: AVX2 (PyTorch, MKL and oneDNN switches), or the scalar kernels
## where AVX2 is already the native set. CI (.ci/run) runs it before `make test`, so a pass that holds only
## for one machine's kernels cannot land. SECOND_ISA=avx2|default chooses by hand.
test-numerics: $(STAMP)
	$(OFFLINE) $(BIN)/python scripts/second_isa.py $(SECOND_ISA) -- $(BIN)/python -m pytest -ra -m numerics $(PYTEST_ARGS)

## Unit tests only (tiny random models, seconds).
test-fast: $(STAMP)
	$(BIN)/lint-imports
	$(OFFLINE) $(BIN)/python -m pytest -ra -m "not slow" $(PYTEST_ARGS)

## Re-measure the reduced-demo scores that CI gates with `lape-eval regress` (tests/data/demo_baseline).
demo-baseline: $(STAMP)
	$(OFFLINE) $(BIN)/python scripts/update_demo_baseline.py

bench: $(STAMP)
	$(OFFLINE) $(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
