# The two commands: `make demo` and `make test`. Both install what they need and are idempotent.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The install is redone when the package definition changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install demo test test-unit test-k8s manifests serve compile clean stop

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	$(BIN)/pip install -q -e ".[test]"
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/rtml demo

test: install
	$(BIN)/python -m pytest -q -ra tests

test-unit: install
	$(BIN)/python -m pytest -q -ra tests/unit

test-k8s: install
	$(BIN)/python -m pytest -q -ra -m k8s tests/k8s tests/e2e/kind

manifests: install
	$(BIN)/python manifests/generate.py

serve: install
	$(BIN)/python -m inference --role all

compile: install
	$(BIN)/rtml compile

stop: install
	$(BIN)/rtml stop

clean:
	rm -rf .rtml
