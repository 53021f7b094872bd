# Vigil. `make run` and `make test` work on a fresh machine with Python 3.11+:
# everything else (servers included) is installed into .venv from PyPI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps run test lint bench-catalog bench-export bench-watermark bench-verify \
	bench-retention \
	stack-up stack-down clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Vigil needs Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

## The whole system on the embedded stack, in the foreground; Ctrl-C stops it all.
run: install
	$(BIN)/vigil run

## Debian packages the tests need (GStreamer test camera, ffprobe); not needed by `run`.
system-deps:
	@bash ops/system-deps.sh

## Lint, then the whole suite on its own embedded stack (started and stopped by it).
test: system-deps install lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .

bench-catalog: install
	$(BIN)/python bench/catalog.py

bench-export: install
	$(BIN)/python bench/export.py

bench-watermark: install
	$(BIN)/python bench/watermark.py

bench-verify: install
	$(BIN)/python bench/verify.py

bench-retention: install
	$(BIN)/python bench/retention.py

stack-up: install
	$(BIN)/vigil stack up

stack-down: install
	$(BIN)/vigil stack down

clean:
	-$(BIN)/vigil stack down
	rm -rf $(VENV) var
