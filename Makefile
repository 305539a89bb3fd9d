# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv and install the package with the pinned torch build.
VENV ?= .venv
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev,demo]'
	touch $@

.PHONY: install test demo
install: $(VENV)/.installed

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	RAY_AUTH_MODE=disabled $(VENV)/bin/pytest -q -p no:cacheprovider

demo: install
	$(VENV)/bin/curate demo
