# Everything the README and .ci/run call. `make run` / `make test` set up .venv first when needed.
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.setup-stamp
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup setup-browser run example test test-fast lint format typecheck bench check clean serve stop status peft-suite peft-suite-methods

setup: $(STAMP)

# Re-run the install when the project metadata or the pins change (a stale venv).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install -q -c constraints.txt -e ".[pipeline,dev,qlora]"
	@touch $(STAMP)

# Headless Chromium for the browser test (Debian's package; Playwright never downloads a browser).
setup-browser:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

run: setup
	$(PY) -m flows.cli run configs/quickstart.yaml --baseline

example: setup
	$(PY) examples/lora_minilm.py

# Two workers (pytest-xdist), each taking a test file, or all the tests on the shared local stack, at a
# time (tests/conftest.py).
TEST_WORKERS ?= 2
test: setup setup-browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

typecheck: setup
	$(PY) -m mypy

check: lint typecheck test

# Hugging Face PEFT's own tests against peftcore (tools/peft-suite/README.md): a measurement, not a test.
PEFT_SUITE_KIT ?= ../shared/peft-suite
PEFT_SUITE_SELECTIONS ?= $(PEFT_SUITE_KIT)/selections/lora_core_realpass.txt
peft-suite: setup
	PEFT_SUITE_KIT=$(PEFT_SUITE_KIT) tools/peft-suite/measure.sh $(PEFT_SUITE_SELECTIONS)

# The issue-10 methods (prompt tuning, P-tuning, prefix tuning, PiSSA/OLoRA, AdaLoRA, IA3, LoHa, LoKr):
# first their real-peft baseline (the denominator), then the run against peftcore (~40 min on 2 cores).
PEFT_SUITE_METHODS := prompt_tuning p_tuning prefix_tuning pissa_olora adalora ia3 loha lokr
peft-suite-methods: setup
	mkdir -p peft-suite-real
	for m in $(PEFT_SUITE_METHODS); do \
	  $(PEFT_SUITE_KIT)/run.sh real tools/peft-suite/selections/$$m.txt peft-suite-real/$$m; done
	cat $(PEFT_SUITE_METHODS:%=peft-suite-real/%.tsv) > peft-suite-real/methods.tsv
	PEFT_SUITE_KIT=$(PEFT_SUITE_KIT) PEFT_SUITE_PIECES=2 PEFT_SUITE_REAL=peft-suite-real/methods.tsv \
	  tools/peft-suite/measure.sh $(PEFT_SUITE_METHODS:%=tools/peft-suite/selections/%.txt)

bench: setup
	$(PY) bench/lora_step.py
	$(PY) bench/method_step.py
	$(PY) bench/method_table.py --write-readme
	HF_HUB_OFFLINE=1 $(PY) bench/pipeline.py
	$(PY) bench/packing.py

# The local stack on 127.0.0.1: Prefect server + UI (:4200), MLflow server + UI (:5000), the deployments.
# Options go through SERVE_ARGS, e.g. make serve SERVE_ARGS="--no-schedules"; PEFTFLOW_HOME,
# PEFTFLOW_PREFECT_PORT and PEFTFLOW_MLFLOW_PORT (e.g. make serve PEFTFLOW_PREFECT_PORT=4300) reach
# serve, stop and status alike.
serve: setup
	$(PY) -m flows.cli serve $(SERVE_ARGS)

stop: setup
	$(PY) -m flows.cli stop

status: setup
	$(PY) -m flows.cli status

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info
