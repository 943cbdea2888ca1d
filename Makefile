# Two commands do all set-up: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PKGS   := -e . -e plugins/resnet -e plugins/vgg -e plugins/timm

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): requirements-dev.txt pyproject.toml plugins/resnet/pyproject.toml plugins/vgg/pyproject.toml plugins/timm/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-build-isolation --no-deps $(PKGS)
	touch $@

demo: $(STAMP)
	$(BIN)/zoo demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/transfer_vs_plain_loop.py
	$(BIN)/python benchmarks/head_fit.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info */*.egg-info plugins/*/*.egg-info
