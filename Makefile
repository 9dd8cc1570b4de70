# The README's two commands: `make demo` and `make test`. Both create or update .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: setup demo test unit integration lint clean infra-tools infra build validate

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
.PHONY: check api-fuzz
check: lint
	$(PY) -m pytest tests/unit -m "not slow" -q

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
	PATH="$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin 2>/dev/null | tail -1):$$PATH" $(SAM) build
