# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# `make test` needs nothing beside the checkout; `make acceptance` needs the development data
# (CORPUS_SHARED_DATA, default ../shared/data) and fails, naming the path, when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ROOT   ?= ./lakehouse
PYTEST := HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

.PHONY: install demo test test-fast acceptance lint bench bench-clear clean

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh "$(PYTHON)" "$(VENV)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/corpus --root "$(ROOT)" demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(PYTEST) -m "not acceptance"

# the edit-test loop: no slow tests, no S3 server
test-fast: $(STAMP)
	$(PYTEST) -m "not acceptance and not slow and not s3"

# only the tests on the whole development share
acceptance: $(STAMP)
	$(PYTEST) -m acceptance

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/sql_views.py
	$(BIN)/python bench/ingest_share.py --runs 5
	$(BIN)/python bench/ingest_share.py --runs 5 --times 10
	$(BIN)/python bench/ocr_pages.py --runs 5
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
