# Two commands on a fresh machine:  make demo   (set up + main job)   make test   (set up + all tests)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned for reproducible installs; any torch>=2.1 works with the package.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup chromium demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[test,notebooks]"
	touch $@

setup: $(VENV)/.installed chromium

# Chromium for tests/test_explorer_browser.py (driven by Playwright, never downloaded by it):
# installed with apt when missing and running as root; otherwise that test is skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	echo "note: chromium not installed; the browser test of the notebook explorer will be skipped"

demo: setup
	$(PY) -m hsnet_lite.demo

# Figures and ablation results the notebooks save during the tests go to temporary folders, not
# figures/ and results/: they hold measured times, and the committed ones come from
# scripts/execute_notebooks.py.
test: setup
	HSNET_LITE_FIGURES="$$(mktemp -d)" HSNET_LITE_RESULTS="$$(mktemp -d)" $(PY) -m pytest tests notebooks --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg -q -p no:cacheprovider

bench: setup
	$(PY) -m hsnet_lite.bench

clean:
	rm -rf $(VENV)
