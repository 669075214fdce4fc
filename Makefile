# Two commands on a fresh machine:  make demo   (set up + main job)   make test   (set up + all tests)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned for reproducible installs; any torch>=2.1 works with the package.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[test,notebooks]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m hsnet_lite.demo

test: setup
	$(PY) -m pytest tests notebooks --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg -q -p no:cacheprovider

bench: setup
	$(PY) -m hsnet_lite.bench

clean:
	rm -rf $(VENV)
