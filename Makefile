# Two commands do all set-up: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
RTSTAMP := $(VENV)/.installed-runtime-stamp
PKGS   := -e . -e plugins/resnet -e plugins/vgg -e plugins/timm -e plugins/effnet_lite
PYPROJECTS := pyproject.toml plugins/resnet/pyproject.toml plugins/vgg/pyproject.toml plugins/timm/pyproject.toml \
              plugins/effnet_lite/pyproject.toml

.PHONY: install demo test lint bench clean

install: $(STAMP)

# the demo needs only the runtime (requirements.txt); tests, lint and benchmarks add requirements-dev.txt
$(RTSTAMP): requirements.txt $(PYPROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-build-isolation --no-deps $(PKGS)
	touch $@

$(STAMP): $(RTSTAMP) requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

demo: $(RTSTAMP)
	$(BIN)/zoo demo

# the HTML report's browser test (tests/test_report.py) needs Debian's headless Chromium
test: $(STAMP)
	test -x /usr/bin/chromium || (apt-get install -y chromium chromium-driver || \
	  (apt-get update && apt-get install -y chromium chromium-driver))
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/transfer_vs_plain_loop.py
	$(BIN)/python benchmarks/head_fit.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info */*.egg-info plugins/*/*.egg-info
