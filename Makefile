# Thin wrappers around ansible-playbook, pytest and molecule; each target is safe to rerun.
# `make help` lists them. Extra ansible-playbook arguments: make deploy ARGS='-e gcp_spot=true'
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY ?= python3
BIN := $(CURDIR)/$(VENV)/bin
APP_VENV ?= app/.venv
APP_BIN := $(CURDIR)/$(APP_VENV)/bin
DEPLOY_TEST_VENV ?= .work/venv-deploy-tests
ARGS ?=
TAGS ?=
INVENTORY ?= inventory/gcp.gcp_compute.yml
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PLAYBOOK := $(BIN)/ansible-playbook $(if $(TAGS),--tags $(TAGS)) $(ARGS)

.PHONY: help setup lint test test-unit test-app test-molecule molecule-host \
        plan deploy configure local local-destroy start stop teardown clean

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# --- toolchains -------------------------------------------------------------------------
$(BIN)/ansible-playbook: requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	touch $@

setup: $(BIN)/ansible-playbook ## control-node toolchain in .venv (pinned, rerunnable)

# The app's venv: torch (CUDA build from PyPI, also runs on CPU), moshi, the server.
$(APP_BIN)/personaplex-server: app/pyproject.toml
	test -x $(APP_BIN)/python || $(PY) -m venv $(APP_VENV)
	$(APP_BIN)/pip install -q -e 'app[test]'
	touch $@

$(DEPLOY_TEST_VENV)/bin/pytest: tests/roles_deploy/requirements.txt
	test -x $(DEPLOY_TEST_VENV)/bin/python || $(PY) -m venv $(DEPLOY_TEST_VENV)
	$(DEPLOY_TEST_VENV)/bin/pip install -q -r tests/roles_deploy/requirements.txt
	touch $@

# --- quality ----------------------------------------------------------------------------
lint: setup $(APP_BIN)/personaplex-server ## yamllint + ansible-lint (production) + ruff/mypy on app/
	yamllint -s .
	ansible-lint --profile production
	cd app && $(APP_BIN)/ruff check . && $(APP_BIN)/ruff format --check . && $(APP_BIN)/mypy src

test-unit: setup $(DEPLOY_TEST_VENV)/bin/pytest ## pytest: gcp modules/playbooks, role inputs, weights fetching
	$(BIN)/pytest -q tests/gcp tests/roles
	$(DEPLOY_TEST_VENV)/bin/pytest -q tests/roles_deploy

test-app: $(APP_BIN)/personaplex-server ## the voice server's tests (CPU, tiny generated model)
	cd app && NO_TORCH_COMPILE=1 NO_CUDA_GRAPH=1 $(APP_BIN)/pytest -q

molecule-host: ## podman/runc/debootstrap and the local Debian 12 systemd image (cached)
	scripts/molecule-host-prepare.sh

test-molecule: setup molecule-host $(APP_BIN)/personaplex-server ## every Molecule scenario that needs neither a GPU nor a cloud
	scripts/run-molecule.sh

test: ## everything CI runs: lint, unit tests, app tests, Molecule scenarios (each stage timed)
	scripts/timed.sh setup $(MAKE) --no-print-directory setup $(APP_BIN)/personaplex-server $(DEPLOY_TEST_VENV)/bin/pytest
	scripts/timed.sh lint $(MAKE) --no-print-directory lint
	scripts/timed.sh test-unit $(MAKE) --no-print-directory test-unit
	scripts/timed.sh test-app $(MAKE) --no-print-directory test-app
	scripts/timed.sh test-molecule $(MAKE) --no-print-directory test-molecule

# --- the product ------------------------------------------------------------------------
plan: setup ## print the Google Cloud resources and their cost; no API write
	$(PLAYBOOK) playbooks/plan.yml

deploy: setup ## preflight -> provision -> configure -> smoke test (playbooks/site.yml)
	$(PLAYBOOK) playbooks/site.yml

configure: setup ## configure.yml alone on INVENTORY (default: the GCP dynamic inventory); repairs drift
	$(PLAYBOOK) -i $(INVENTORY) playbooks/configure.yml

local: setup ## no cloud: a local systemd container serving the tiny model at https://localhost:8998
	scripts/local-target.sh $(if $(strip $(TAGS)$(ARGS)),-- $(if $(TAGS),--tags $(TAGS)) $(ARGS))

local-destroy: ## remove the local target's container
	scripts/local-target.sh --destroy

start: setup ## start the VM again (after idle stop, make stop or a Spot preemption); waits for /readyz, prints URL, token, time taken
	$(PLAYBOOK) playbooks/power.yml -e gcp_power_state=running

stop: setup ## stop the VM: no GPU or CPU charges while stopped (disk and IP still billed)
	$(PLAYBOOK) playbooks/power.yml -e gcp_power_state=stopped

teardown: setup ## delete everything created, found by label; keeps the bucket (CONFIRM=<deployment name>)
	$(PLAYBOOK) playbooks/teardown.yml $(if $(CONFIRM),-e gcp_teardown_confirm=$(CONFIRM))

clean: ## remove virtual environments and generated test data
	rm -rf $(VENV) $(APP_VENV) .work
