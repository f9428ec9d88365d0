# SIDReasoner toolkit. Every target sets up what it needs: a .venv filled from
# pyproject.toml on first use (the stamp file makes that happen once).
#   make data DATASET=office FROM=../shared/data/amazon18/Office_Products
#   make sids DATASET=office
#   make synth DATASET=office TEACHER=metadata        (or TEACHER=gpt-4o-mini)
#   make train DATASET=office TEACHER=metadata MODEL=tiny
#   make test

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip picks the build that fits the machine (CUDA on a GPU box; this machine has the CPU wheel on disk).
TORCH_SPEC ?= torch==2.13.0

DATASET ?= office
DATA_DIR ?= data
TEACHER ?= metadata
MODEL ?= Qwen/Qwen3-1.7B
SEED ?= 42
CORPORA_DIR ?= corpora
CACHE_DIR ?= .cache/synth
RUNS_DIR ?= runs

# Offline-safe defaults: litellm uses its bundled price map instead of fetching one.
export LITELLM_LOCAL_MODEL_COST_MAP ?= True
export TOKENIZERS_PARALLELISM ?= false
export DATA_DIR

opt = $(if $(strip $(2)),$(1) $(2))
flag = $(if $(filter 1 true yes,$(2)),$(1))

.PHONY: setup data sids synth train eval bench baseline report test test-fast all clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

data: $(STAMP)
	$(BIN)/python -m synth.data --dataset $(DATASET) --data-dir $(DATA_DIR) \
		$(call opt,--from,$(FROM)) $(call opt,--source,$(SOURCE)) \
		$(call opt,--raw-dir,$(RAW_DIR)) $(call opt,--base-url,$(BASE_URL))

# SIDs need the dataset; with FROM= or SOURCE= given, `make sids` prepares it first.
sids: $(STAMP)
	$(BIN)/python -m synth.sids --dataset $(DATASET) --data-dir $(DATA_DIR) --seed $(SEED) \
		$(call opt,--embedder,$(EMBEDDER)) $(call opt,--device,$(DEVICE))

synth: $(STAMP)
	$(BIN)/python -m synth --dataset $(DATASET) --teacher $(TEACHER) --data-dir $(DATA_DIR) \
		--corpora-dir $(CORPORA_DIR) --cache-dir $(CACHE_DIR) --seed $(SEED) \
		$(call opt,--api-base,$(API_BASE)) $(call opt,--concurrency,$(CONCURRENCY)) \
		$(call opt,--rpm,$(RPM)) $(call opt,--tpm,$(TPM)) $(call opt,--limit,$(LIMIT)) \
		$(call opt,--budget-usd,$(BUDGET_USD)) $(call flag,--dry-run,$(DRY_RUN)) $(call flag,--batch,$(BATCH)) \
		$(call opt,--max-tokens,$(MAX_TOKENS)) $(call opt,--structured-output,$(STRUCTURED_OUTPUT)) \
		$(if $(EXTRA_BODY),--extra-body '$(EXTRA_BODY)')

# Reference rows in the same harness: MODEL=sasrec or MODEL=popular.
baseline: $(STAMP)
	$(BIN)/python -m train.baselines --model $(if $(filter sasrec popular,$(MODEL)),$(MODEL),$(error make baseline needs MODEL=sasrec or MODEL=popular)) \
		--dataset $(DATASET) --data-dir $(DATA_DIR) --runs-dir $(RUNS_DIR) --seed $(SEED) \
		$(call opt,--epochs,$(EPOCHS)) $(call opt,--device,$(DEVICE))

report: $(STAMP)
	$(BIN)/python -m train.report --dataset $(DATASET) --runs-dir $(RUNS_DIR) $(call opt,--out,$(REPORT_OUT))

# Align -> activate -> GRPO -> evaluation; each stage is skipped when its output exists (FORCE=1 redoes).
# NPROC>1 launches through accelerate (DeepSpeed ZeRO-2 by default; ACCELERATE_CONFIG=configs/accelerate/fsdp.yaml).
NPROC ?= 1
ACCELERATE_CONFIG ?= configs/accelerate/zero2.yaml
TRAIN_LAUNCH = $(if $(filter 1,$(NPROC)),$(BIN)/python -m,$(BIN)/accelerate launch --config_file $(ACCELERATE_CONFIG) --num_processes $(NPROC) -m)
train: $(STAMP)
	$(TRAIN_LAUNCH) train run --dataset $(DATASET) --teacher $(TEACHER) --model $(MODEL) \
		--data-dir $(DATA_DIR) --corpora-dir $(CORPORA_DIR) --runs-dir $(RUNS_DIR) --seed $(SEED) \
		$(call opt,--run,$(RUN)) $(call opt,--limit,$(LIMIT)) $(call flag,--force,$(FORCE)) \
		$(call opt,--stages,$(STAGES)) $(call opt,--modes,$(MODES)) \
		$(call opt,--general,$(GENERAL)) $(call opt,--general-n,$(GENERAL_N)) \
		$(call opt,--beams,$(BEAMS)) $(call opt,--best-of-n,$(BEST_OF_N))

eval: $(STAMP)
	$(BIN)/python -m train eval --ckpt $(if $(CKPT),$(CKPT),$(error make eval needs CKPT=<model folder>)) \
		--dataset $(DATASET) --data-dir $(DATA_DIR) $(call opt,--mode,$(MODE)) $(call opt,--beams,$(BEAMS)) \
		$(call opt,--limit,$(LIMIT)) $(call opt,--best-of-n,$(BEST_OF_N))

# The whole chain on data at hand: dataset, SIDs, corpus, training, evaluation, report.
all: $(STAMP)
	$(MAKE) data sids synth train report

bench: $(STAMP)
	$(BIN)/python -m bench $(call flag,--quick,$(QUICK)) $(call opt,--only,$(ONLY))

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Skips the slow end-to-end tests (CI runs them).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
