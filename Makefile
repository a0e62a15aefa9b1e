# tdlib: `make reproduce` (main job, offline cpu profile) and `make test` (pytest + nbval).
# Both create .venv from requirements.lock when it is missing or stale.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PROFILE ?= cpu
FORCE   ?= 0
SHARED  := $(abspath ../shared/data)

# Data: explicit env vars win; else ../shared/data when it exists; else tdlib falls back to the hub.
GLUE_DIR     ?= $(if $(wildcard $(SHARED)/glue),$(SHARED)/glue,)
TDLIB_CORPUS ?= $(if $(wildcard $(SHARED)/corpus/enwiki-2015-wikiextractor/train),$(SHARED)/corpus/enwiki-2015-wikiextractor/train,)
export GLUE_DIR TDLIB_CORPUS PROFILE FORCE
# every profile but paper is offline by design; the paper profile needs the hub
ifneq ($(PROFILE),paper)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
endif
export PYTHONHASHSEED := 0

.PHONY: setup test test-all reproduce lint lab clean clean-runs

# A fresh .venv (torch's CPU build and its peers) takes about 2.1 GB, and pip unpacks wheels beside it: with
# less than 3 GB free, pip would stop half-way with 'No space left on device' and leave a broken .venv.
MIN_FREE_KB := 3000000

$(VENV)/.installed: requirements.lock pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print $$4}'); if [ "$$free" -lt $(MIN_FREE_KB) ] && [ ! -e $(VENV)/.installed ]; then \
	  echo "error: setting up $(VENV) needs about 3 GB free, but $$((free / 1024)) MB are free on $$(df -P . | awk 'NR==2 {print $$6}')." >&2; \
	  echo "       Free some space (old clones in /tmp, runs/ you no longer need) and run make again." >&2; exit 1; fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --prefix $(abspath $(VENV)) --name tdlib --display-name "tdlib (.venv)" >/dev/null
	touch $@

setup: $(VENV)/.installed

SMOKE := $(abspath .smoke)
# make test spreads its three pytest runs over pytest-xdist workers, one thread each (OpenMP threads of two
# processes on two cores stall each other's barriers); nbval needs a notebook's cells on one worker, in order
WORKERS ?= 2
XDIST   := -n $(WORKERS)
NBXDIST := -n $(WORKERS) --dist loadscope

# 1. pytest over tests/;
# 2. nbval over the committed notebooks that hold outputs (tests/test_notebooks.py lists, strictly, the ones
#    whose records are pending): each re-executed from the committed results/ (TDLIB_CACHE_ONLY: a
#    missing record is an error, never an hour of training) must reproduce every stored output, except cells
#    tagged NBVAL_IGNORE_OUTPUT (which records were read, and from where); figures go to a scratch folder;
# 3. every notebook on the smoke profile (papermill), which exercises the training code path, checked by nbval.
test: setup
	$(BIN)/python -m pytest -q $(XDIST) tests
	rm -rf $(SMOKE) && mkdir -p $(SMOKE)
	cp README.md $(SMOKE)/README.md
	OMP_NUM_THREADS=1 TDLIB_CACHE_ONLY=1 TDLIB_FIGURES=$(SMOKE)/figures-committed TDLIB_README=$(SMOKE)/README.md \
	  $(BIN)/python -m pytest -q $(NBXDIST) --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider $$(grep -l '"output_type"' notebooks/*.ipynb)
	TDLIB_RESULTS=$(SMOKE)/results TDLIB_FIGURES=$(SMOKE)/figures TDLIB_RUNS=$(SMOKE)/runs FORCE=1 \
	  $(BIN)/python -m tdlib.paper.reproduce --profile smoke --out $(SMOKE)/notebooks
	OMP_NUM_THREADS=1 TDLIB_RESULTS=$(SMOKE)/results TDLIB_FIGURES=$(SMOKE)/figures TDLIB_RUNS=$(SMOKE)/runs \
	  $(BIN)/python -m pytest -q $(NBXDIST) --nbval-lax -p no:cacheprovider $(SMOKE)/notebooks

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow" tests

reproduce: setup
	$(BIN)/python -m tdlib.paper.reproduce --profile $(PROFILE) $(if $(filter 1,$(FORCE)),--force,)

lint: setup
	$(BIN)/ruff check tdlib tests notebooks
	$(BIN)/python -m pytest -q tests/test_notebooks.py

lab: setup
	$(BIN)/jupyter lab notebooks

# training runs (checkpoints, teacher caches): several GB after a cold cpu run; the records in results/ stay
clean-runs:
	@du -sh runs 2>/dev/null || true
	rm -rf runs

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .smoke notebooks/executed checkpoints runs
