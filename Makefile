# Two commands do all the set-up on a fresh machine with Python 3.11+ and make:
#   make serve   build the demo registry if absent, then serve it on localhost:50051
#   make test    run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DB     ?= demo-registry
PORT   ?= 50051
# The package maps server/ and client/ to imeireg.server and imeireg.client, so it is
# installed in setuptools' strict editable mode (a tree of links mypy can follow);
# the links are renewed whenever a package file is added or changed.
PACKAGE_FILES := $(shell find proto/imeireg server client -name '*.py' -o -name '*.toml' -o -name '*.pyi' 2>/dev/null | sort)

.PHONY: serve test lint proto check-proto demo clean

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict
	touch $@

$(VENV)/.links: $(VENV)/.deps $(PACKAGE_FILES)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . --config-settings editable_mode=strict
	touch $@

$(DB)/data.mdb: | $(VENV)/.links
	$(BIN)/imeireg demo --db $(DB)

serve: $(VENV)/.links $(DB)/data.mdb
	$(BIN)/imeireg serve --db $(DB) --port $(PORT)

demo: $(DB)/data.mdb

test: $(VENV)/.links
	$(BIN)/pytest

lint: $(VENV)/.links
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p imeireg
	$(BIN)/mypy tests
	cd proto && ../$(BIN)/buf lint

proto: $(VENV)/.deps
	PATH=$(CURDIR)/$(BIN):$$PATH proto/generate

check-proto: proto
	git diff --exit-code -- proto/ || (echo "generated code is stale: run make proto and commit" >&2; exit 1)
	test -z "$$(git status --porcelain -- proto/)" || (git status --porcelain -- proto/; echo "untracked generated files" >&2; exit 1)

clean:
	rm -rf $(VENV) build *.egg-info $(DB)

# Benchmarks against Redis and PostgreSQL (benchmarks/README.md). The benchmark installs
# Debian's redis-server and postgresql itself when they are missing and it runs as root.
.PHONY: bench-quick bench

$(VENV)/.bench-deps: $(VENV)/.deps pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]' --config-settings editable_mode=strict
	touch $@

bench-quick: $(VENV)/.links $(VENV)/.bench-deps
	$(BIN)/python -m benchmarks.run --quick

bench: $(VENV)/.links $(VENV)/.bench-deps
	$(BIN)/python -m benchmarks.run --full
