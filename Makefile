# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench mutants docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/polymodal demo --out runs/demo

# two test processes of one thread each (pytest-xdist): the 2-core machine's cores both busy, without
# torch's threads of one test competing with the other's
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2

# Not part of `make test`: applies each plausible bug of tests/mutation/mutants.py and runs the suite.
mutants: $(STAMP)
	$(BIN)/python tests/mutation/run.py

bench: $(STAMP)
	$(BIN)/python benchmarks/clip_vs_hf.py
	$(BIN)/python benchmarks/generation.py
	$(BIN)/python benchmarks/av_loading.py
	$(BIN)/python benchmarks/shard_loading.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/search_index.py

# The docs site (MkDocs, Material theme) into site/; --strict fails on any warning (a broken link or anchor).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf runs .pytest_cache site
