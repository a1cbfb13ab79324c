# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install what they need; torch is the local CPU build and is installed first
# so that no other torch (with CUDA wheels) is ever pulled in.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test clean-venv browser

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# autofaiss (index selection within a memory budget, index/faiss_index.py) pins numpy<2 and pandas<3 but
	# runs on the versions above: installed without its pins
	$(PY) -m pip install --quiet --no-deps autofaiss==2.18.0 embedding-reader==1.8.1 fire==0.7.1 termcolor
	# torch pulls setuptools >= 81, which no longer ships pkg_resources; keep one that does.
	$(PY) -m pip install --quiet 'setuptools<81'
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

# Debian's chromium for the end-to-end app test (tests/test_app_browser.py fails without it; playwright's
# own browser downloads are never used). apt-get as root (CI), else through sudo.
browser:
	@command -v chromium >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

test: $(STAMP) browser
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/singrec demo

clean-venv:
	rm -rf $(VENV)
