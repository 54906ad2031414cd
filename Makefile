# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ROOT   ?= ./lakehouse

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh "$(PYTHON)" "$(VENV)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/corpus --root "$(ROOT)" demo

test: $(STAMP)
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/sql_views.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/shards_build.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/loader.py
	$(BIN)/python bench/align_book.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/noise_throughput.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/train_throughput.py

clean:
	rm -rf $(VENV) lakehouse .pytest_cache
