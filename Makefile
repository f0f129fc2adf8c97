# Two commands a newcomer needs:  `make demo` (the main job) and `make test` (what CI runs).
# Both create .venv with Python 3.11+ and install the project into it on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; on a CUDA machine install your CUDA torch into $(VENV) first (it is kept),
# or run e.g. `make install TORCH_SPEC="torch==2.11.0"`.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Renders one video with the embedded model, dense and with the default efficient method, into demo_output/
# and prints the speedup and PSNR/SSIM; e.g. `make demo DEMO_ARGS="--method sparse --steps 8"`.
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/python -m swiftdit.demo $(DEMO_ARGS)

# The app's browser test drives Debian's chromium (Playwright cannot download browsers here); as root with
# apt it is installed once, elsewhere that one test is skipped and says so.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "chromium is not installed and cannot be installed here: the browser test will be skipped"; fi

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) build *.egg-info
