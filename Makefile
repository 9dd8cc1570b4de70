# The README's two commands: `make demo` and `make test`. Both create or update .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: setup demo test unit integration lint clean infra-tools infra build validate local-image local-invoke local-api

$(INSTALLED): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

setup: $(INSTALLED)

demo: setup
	$(PY) -m bigpickle.local.demo

test: setup lint infra-tools
	$(PY) -m pytest

unit: setup
	$(PY) -m pytest tests/unit

integration: setup
	$(PY) -m pytest tests/integration

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The edit-test loop (under a minute): lint, then the unit tests but the `slow` ones (`make test` runs all).
.PHONY: check api-fuzz docs
check: lint
	$(PY) -m pytest tests/unit -m "not slow" -q

# docs/settings.md from bigpickle.config.SETTINGS (tests/unit/test_settings.py fails when it is stale).
docs: setup
	$(PY) -m bigpickle.config > docs/settings.md

# schemathesis against `bigpickle serve` with the demo's model; accepted failures: docs/api-fuzz.md.
api-fuzz: setup
	$(PY) -m pytest tests/integration/test_api_fuzz.py -q

clean:
	rm -rf $(VENV) $(INFRA_VENV) .pytest_cache .ruff_cache .aws-sam

# --- infrastructure (template.yaml) ---------------------------------------------------------------
# The SAM CLI + cfn-lint and checkov pin conflicting dependencies: each gets its own venv under .venv-infra,
# never .venv. tests/infra (part of `make test`) runs them; `sam build` needs python3.13 on PATH (pyenv).
INFRA_VENV := .venv-infra
SAM := $(INFRA_VENV)/sam/bin/sam
CFN_LINT := $(INFRA_VENV)/sam/bin/cfn-lint
CHECKOV := $(INFRA_VENV)/checkov/bin/checkov
export SAM_CLI_TELEMETRY := 0
AWS_REGION_FOR_CHECKS := us-east-1
# `sam build` needs the runtime's python3.13 on PATH; pyenv keeps it under its versions.
LAMBDA_PYTHON_PATH = $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin 2>/dev/null | tail -1):$$PATH

$(INFRA_VENV)/%/.installed: tests/infra/requirements-%.txt
	rm -rf $(INFRA_VENV)/$*
	$(PYTHON) -m venv $(INFRA_VENV)/$*
	$(INFRA_VENV)/$*/bin/python -m pip install --quiet --upgrade pip
	$(INFRA_VENV)/$*/bin/python -m pip install --quiet -r $<
	touch $@

infra-tools: $(INFRA_VENV)/sam/.installed $(INFRA_VENV)/checkov/.installed

# Only the template checks: cfn-lint, sam validate --lint, checkov, sam build + sizes, security properties.
infra: setup infra-tools
	$(PY) -m pytest tests/infra

validate: infra-tools
	$(CFN_LINT) template.yaml
	AWS_DEFAULT_REGION=$(AWS_REGION_FOR_CHECKS) $(SAM) validate --lint
	$(CHECKOV) -f template.yaml --framework cloudformation --skip-download --compact --quiet

# Build for deployment into .aws-sam/ (then: $(SAM) deploy --guided). LAYER_ARCH=arm64 for arm64 layers.
build: infra-tools
	PATH="$(LAMBDA_PYTHON_PATH)" $(SAM) build

# --- the functions in a local Lambda runtime (docs/local.md) ---------------------------------------
# `sam local` runs each function in a Lambda-compatible container: /var/task read-only, the layers in /opt,
# MemorySize as the container's memory limit, AWS's runtime interface client calling the handler.
# LOCAL_IMAGE is built here offline (local-runtime/build-image.sh); LOCAL_IMAGE=public.ecr.aws/lambda/python:3.13
# pulls AWS's own image instead. MODELS_DIR stands in for EFS (read-only for the predict function).
BUILT_IMAGE := bigpickle-lambda-python3.13:local
LOCAL_IMAGE ?= $(BUILT_IMAGE)
MODELS_DIR ?= .local-models
PORT ?= 3000
# Its own build folder: the models link it gets must never reach a `sam deploy` of .aws-sam/build.
LOCAL_BUILD_DIR ?= .aws-sam/local
LOCAL_ENV_VARS = $(LOCAL_BUILD_DIR)/env-vars.json
RIE_ARCH := $(if $(filter aarch64 arm64,$(shell uname -m)),arm64,x86_64)
SAM_LOCAL = $(PY) local-runtime/sam_local.py --build-dir $(LOCAL_BUILD_DIR) --models-dir $(MODELS_DIR) \
	--env-vars $(LOCAL_ENV_VARS) --
# SAM_ARGS: more `sam local` options, e.g. SAM_ARGS=--debug (logs each event SAM builds).
SAM_LOCAL_FLAGS = --invoke-image $(LOCAL_IMAGE) --skip-pull-image --docker-network host $(SAM_ARGS)
STACK_SOURCES := template.yaml $(shell find functions layers -type f -not -path '*/__pycache__/*' -not -name '*.pyc')

local-image: setup infra-tools
ifeq ($(LOCAL_IMAGE),$(BUILT_IMAGE))
	PYTHON=$(PY) local-runtime/build-image.sh $(LOCAL_IMAGE) \
		"$$(ls $(INFRA_VENV)/sam/lib/python3*/site-packages/samcli/local/rapid/aws-lambda-rie-$(RIE_ARCH))"
else
	docker pull $(LOCAL_IMAGE)
endif

$(LOCAL_BUILD_DIR)/template.yaml: $(STACK_SOURCES) | infra-tools
	PATH="$(LAMBDA_PYTHON_PATH)" $(SAM) build --build-dir $(LOCAL_BUILD_DIR) --parallel
	touch $@

# The function's answer is the last line of standard output (SAM's own messages go to standard error).
local-invoke: local-image $(LOCAL_BUILD_DIR)/template.yaml
	@test -n "$(FUNCTION)" -a -n "$(EVENT)" || \
		{ echo "usage: make local-invoke FUNCTION=PredictFunction EVENT=events/health.json [MODELS_DIR=dir]" >&2; exit 2; }
	@$(SAM_LOCAL) $(SAM) local invoke $(FUNCTION) --event $(EVENT) --mount-symlinks $(SAM_LOCAL_FLAGS) && echo

# Serves until interrupted (Ctrl-C stops SAM and its containers). One warm container per function, as a
# Lambda instance keeps its loaded model between requests. start-api lacks --mount-symlinks: sam_cli.py.
local-api: local-image $(LOCAL_BUILD_DIR)/template.yaml
	$(SAM_LOCAL) $(INFRA_VENV)/sam/bin/python local-runtime/sam_cli.py local start-api --host 127.0.0.1 \
		--port $(PORT) --warm-containers LAZY $(SAM_LOCAL_FLAGS)
