# Two entry points for a new user: `make demo` and `make test`.
# Both create or refresh the environment in .venv/ first.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.facelab-installed
# The CPU wheel of torch. A GPU user installs a CUDA torch into .venv first; it is then kept.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: env demo test lint bench clean-env

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -c "import torch" 2>/dev/null || \
		$(VENV)/bin/pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(VENV)/bin/pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/facelab demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check facelab tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/video_io.py

clean-env:
	rm -rf $(VENV)
