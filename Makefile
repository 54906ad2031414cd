# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ROOT   ?= ./lakehouse

.PHONY: install demo test lint bench bench-clear clean

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
	$(BIN)/python bench/ingest_share.py --runs 5
	$(BIN)/python bench/ocr_pages.py --runs 3
	HF_HUB_OFFLINE=1 $(BIN)/python bench/shards_build.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/loader.py
	$(BIN)/python bench/align_book.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/noise_throughput.py --nlpaug-python $(BIN)/python
	HF_HUB_OFFLINE=1 $(BIN)/python bench/train_throughput.py

# R1 in BENCHMARKS.md: the pipeline and two trainings on CLEAR (~45 min on 2 cores)
bench-clear: $(STAMP)
	bash bench/clear_readability.sh

clean:
	rm -rf $(VENV) lakehouse runs reports .pytest_cache
