# SIDReasoner toolkit. Every target sets up what it needs: a .venv filled from
# pyproject.toml on first use (the stamp file makes that happen once).
#   make data DATASET=office FROM=../shared/data/amazon18/Office_Products
#   make sids DATASET=office
#   make synth DATASET=office TEACHER=metadata        (or TEACHER=gpt-4o-mini)
#   make train DATASET=office TEACHER=metadata MODEL=tiny
#   make view DATASET=office TEACHER=metadata         (corpora/office/metadata/report.html; TEACHER=a,b compares two)
#   REPORT_TO=tensorboard,wandb,mlflow on synth/train: log to those trackers (runs/<dataset>/<run>/tb/, W&B offline
#   unless logged in, MLflow at runs/mlflow.db unless MLFLOW_TRACKING_URI; README "Experiment tracking")
#   SIDS=reference on synth/train/eval: the publishers' SIDs (data/<dataset>/reference_sids.json) instead of
#   the project's own (SIDS=own, sids.json); corpora for them live in corpora/<dataset>/<teacher>@reference/
#   DATASET=office+industrial: a combination of prepared parts (make data/sids/synth/train/report on it;
#   RL_DATASET=office runs GRPO on one part; README "Several domains")
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
CORPORA_DIR ?= corpora
RUNS_DIR ?= runs

# Offline-safe defaults: litellm uses its bundled price map instead of fetching one.
export LITELLM_LOCAL_MODEL_COST_MAP ?= True
export TOKENIZERS_PARALLELISM ?= false
export DATA_DIR

opt = $(if $(strip $(2)),$(1) $(2))
flag = $(if $(filter 1 true yes,$(2)),$(1))
# $(call given,--flag,VAR): the flag only when VAR was set on the command line or in the environment,
# so a Makefile-wide default shared with other targets does not override a preset.
given = $(if $(filter-out undefined default file,$(origin $(2))),$(1) $($(2)))

.PHONY: setup data sids synth train eval bench baseline report view lint test test-fast all clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

data: $(STAMP)
	$(BIN)/python -m synth.data --dataset $(DATASET) $(call given,--data-dir,DATA_DIR) \
		$(call opt,--from,$(FROM)) $(call opt,--source,$(SOURCE)) \
		$(call opt,--raw-dir,$(RAW_DIR)) $(call opt,--base-url,$(BASE_URL))

# SIDs need the dataset; with FROM= or SOURCE= given, `make sids` prepares it first.
sids: $(STAMP) $(if $(FROM)$(SOURCE),data)
	$(BIN)/python -m synth.sids --dataset $(DATASET) $(call given,--data-dir,DATA_DIR) $(call given,--seed,SEED) \
		$(call opt,--embedder,$(EMBEDDER)) $(call opt,--device,$(DEVICE))

# Every default is in synth/engine.py's SynthConfig (`python -m synth --help` lists them); CONFIG= names a
# preset (configs/synth/paper.yaml: the paper's run) applied before the variables, each passed only when set.
synth: $(STAMP)
	$(BIN)/python -m synth --dataset $(DATASET) $(call opt,--config,$(CONFIG)) $(call given,--teacher,TEACHER) \
		$(call given,--data-dir,DATA_DIR) $(call given,--corpora-dir,CORPORA_DIR) $(call given,--cache-dir,CACHE_DIR) \
		$(call opt,--sids,$(SIDS)) \
		$(call given,--seed,SEED) $(call opt,--prompts-dir,$(PROMPTS_DIR)) $(call opt,--api-base,$(API_BASE)) \
		$(call opt,--concurrency,$(CONCURRENCY)) $(call opt,--rpm,$(RPM)) $(call opt,--tpm,$(TPM)) \
		$(call opt,--limit,$(LIMIT)) $(call opt,--only,$(ONLY)) $(call opt,--budget-usd,$(BUDGET_USD)) \
		$(call flag,--dry-run,$(DRY_RUN)) $(call flag,--batch,$(BATCH)) $(call opt,--temperature,$(TEMPERATURE)) \
		$(call opt,--max-tokens,$(MAX_TOKENS)) $(call opt,--max-samples,$(MAX_SAMPLES)) \
		$(call opt,--timeout,$(TIMEOUT)) $(call opt,--max-attempts,$(MAX_ATTEMPTS)) $(call opt,--backoff,$(BACKOFF)) \
		$(call opt,--structured-output,$(STRUCTURED_OUTPUT)) $(if $(EXTRA_BODY),--extra-body '$(EXTRA_BODY)') \
		$(call opt,--report-to,$(REPORT_TO)) $(call given,--runs-dir,RUNS_DIR)

# One self-contained HTML page of a corpus (corpora/<dataset>/<teacher>/report.html); TEACHER=a,b compares two.
view: $(STAMP)
	$(BIN)/python -m synth.view --dataset $(DATASET) --teacher $(TEACHER) $(call given,--data-dir,DATA_DIR) \
		$(call given,--corpora-dir,CORPORA_DIR) $(call opt,--out,$(VIEW_OUT))

# Reference rows in the same harness: MODEL=sasrec, MODEL=popular or MODEL=tiger.
# MODEL=tiger generates SIDs: SIDS=own|reference|<path> picks them (runs/<dataset>/baseline-tiger@reference/).
baseline: $(STAMP)
	$(BIN)/python -m train.baselines --model $(if $(filter sasrec popular tiger,$(MODEL)),$(MODEL),$(error make baseline needs MODEL=sasrec, MODEL=popular or MODEL=tiger)) \
		$(strip --dataset $(DATASET) $(call given,--data-dir,DATA_DIR) $(call given,--runs-dir,RUNS_DIR) \
		$(if $(filter tiger,$(MODEL)),$(call opt,--sids,$(SIDS))) \
		$(call given,--seed,SEED) $(call opt,--epochs,$(EPOCHS)) $(call opt,--device,$(DEVICE)))

report: $(STAMP)
	$(BIN)/python -m train.report --dataset $(DATASET) $(call given,--runs-dir,RUNS_DIR) $(call opt,--out,$(REPORT_OUT))

# Align -> activate -> GRPO -> evaluation; each stage is skipped when its output exists (FORCE=1 redoes).
# Settings: train/config.py, the preset CONFIG=configs/train/<name>.yaml (default: tiny.yaml for MODEL=tiny,
# qwen3-1.7b.yaml otherwise), then these variables, each passed only when set; TRAIN_ARGS='--align.epochs 2 ...'
# reaches any setting. DRY_RUN=1 prints the resolved settings and exits.
# The paper's alignment variants (Table 3): TEACHER=none trains S1 (alignment tasks alone; activation needs a corpus,
# so STAGES=align,eval, or TEACHER=<name> ALIGN_CORPUS=0 to keep the corpus out of alignment only), a teacher corpus
# gives S2, GENERAL=<jsonl or Hub id> (GENERAL_N= samples, default 60000) adds general data: S3.
# NPROC>1 launches through accelerate (DeepSpeed ZeRO-2 by default; ACCELERATE_CONFIG=configs/accelerate/fsdp.yaml).
NPROC ?= 1
ACCELERATE_CONFIG ?= configs/accelerate/zero2.yaml
TRAIN_LAUNCH = $(if $(filter 1,$(NPROC)),$(BIN)/python -m,$(BIN)/accelerate launch --config_file $(ACCELERATE_CONFIG) --num_processes $(NPROC) -m)
TRAIN_FLAGS = $(strip --dataset $(DATASET) --teacher $(TEACHER) $(call opt,--config,$(CONFIG)) \
	$(call opt,--model,$(MODEL)) $(call given,--data-dir,DATA_DIR) $(call given,--corpora-dir,CORPORA_DIR) \
	$(call given,--runs-dir,RUNS_DIR) $(call given,--seed,SEED) $(call opt,--run,$(RUN)) $(call opt,--sids,$(SIDS)) \
	$(call opt,--prompts,$(PROMPTS)) $(call opt,--limit,$(LIMIT)) $(call flag,--force,$(FORCE)) $(call opt,--stages,$(STAGES)) \
	$(call opt,--modes,$(MODES)) $(call opt,--general,$(GENERAL)) $(call opt,--general-n,$(GENERAL_N)) \
	$(if $(ALIGN_CORPUS),$(if $(filter 0 false no,$(ALIGN_CORPUS)),--no-align-corpus,--align-corpus)) \
	$(call opt,--beams,$(BEAMS)) $(call opt,--best-of-n,$(BEST_OF_N)) $(call flag,--dry-run,$(DRY_RUN)) \
	$(call opt,--rl-dataset,$(RL_DATASET)) $(call opt,--report-to,$(REPORT_TO)) \
	$(if $(SAVE_STEPS),--align.save-steps $(SAVE_STEPS) --activate.save-steps $(SAVE_STEPS) --grpo.save-steps $(SAVE_STEPS)) \
	$(TRAIN_ARGS))
train: $(STAMP)
	$(TRAIN_LAUNCH) train run $(TRAIN_FLAGS)

EVAL_FLAGS = $(strip --dataset $(DATASET) $(call given,--data-dir,DATA_DIR) $(call opt,--config,$(CONFIG)) \
	$(call opt,--sids,$(SIDS)) $(call opt,--modes,$(MODES)) $(call opt,--beams,$(BEAMS)) \
	$(call opt,--eval.test-rows,$(LIMIT)) $(call opt,--best-of-n,$(BEST_OF_N)) $(call opt,--out,$(EVAL_OUT)))
eval: $(STAMP)
	$(BIN)/python -m train eval --ckpt $(if $(CKPT),$(CKPT),$(error make eval needs CKPT=<model folder>)) $(EVAL_FLAGS)

# The whole chain on data at hand: dataset, SIDs, corpus, training, evaluation, report.
# The main job: data -> SIDs -> corpus -> train (each stage evaluated) -> most-popular and SASRec -> report.
all: $(STAMP)
	$(MAKE) data sids synth train
	$(MAKE) baseline MODEL=popular
	$(MAKE) baseline MODEL=sasrec
	$(MAKE) report

bench: $(STAMP)
	$(BIN)/python -m bench $(call flag,--quick,$(QUICK)) $(call opt,--only,$(ONLY))

# ruff: pyflakes, pycodestyle errors, bugbear, isort (pyproject.toml); CI runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Skips the slow end-to-end tests (CI runs them).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
