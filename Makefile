# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test docs clean

install: $(STAMP)

# torch==2.13.0 first: on machines without a GPU it is a CPU build from local disk, and it then satisfies
# the worker extra's torch>=2.3 so pip does not pull a multi-GB CUDA build. Then every extra (all) and the
# test tools (dev): the development setup has everything; users pick extras (see pyproject.toml).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0 || $(BIN)/python -m pip install -q "torch>=2.3"
	$(BIN)/python -m pip install -q -e ".[all,dev]"
	touch $(STAMP)

demo: install
	$(BIN)/wattsched demo

test: install
	$(BIN)/python -m pytest -q

# The documentation (docs/, mkdocs.yml), built strictly: a broken link or a page missing from the nav fails.
docs: install
	$(BIN)/mkdocs build --strict -d build/site

clean:
	rm -rf $(VENV) build *.egg-info
