# Thin wrappers around ansible-playbook, pytest and molecule; each target is safe to rerun.
# `make help` lists them. Extra ansible-playbook arguments: make deploy ARGS='-e gcp_spot=true'
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY ?= python3
BIN := $(CURDIR)/$(VENV)/bin
APP_VENV ?= app/.venv
APP_BIN := $(CURDIR)/$(APP_VENV)/bin
ARGS ?=
TAGS ?=
INVENTORY ?= inventory/hosts.yml
# Written once by `make init`; every playbook reads it (group_vars/all). Env vars override it.
SETTINGS ?= inventory/group_vars/all/settings.local.yml
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PLAYBOOK := $(BIN)/ansible-playbook $(if $(TAGS),--tags $(TAGS)) $(ARGS)

.PHONY: help setup lint test test-unit test-app test-molecule molecule-host \
        init plan deploy configure url ssh logs local local-destroy start stop teardown clean image fleet

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# --- toolchains -------------------------------------------------------------------------
# scripts/setup-venv.sh: a failed first `make setup` (no network, no python3-venv) leaves no
# half-built .venv behind; on Debian it installs python3-venv when missing (as root).
$(BIN)/ansible-playbook: requirements.txt
	scripts/setup-venv.sh $(PY) $(VENV) -r requirements.txt
	touch $@

setup: $(BIN)/ansible-playbook ## control-node toolchain in .venv (pinned, rerunnable)

# The app's venv: torch (CUDA build from PyPI, also runs on CPU), moshi, the server.
$(APP_BIN)/personaplex-server: app/pyproject.toml
	scripts/setup-venv.sh $(PY) $(APP_VENV) -e 'app[test]'
	touch $@

# --- quality ----------------------------------------------------------------------------
lint: setup $(APP_BIN)/personaplex-server ## yamllint + ansible-lint (production) + ruff/mypy on app/
	yamllint -s .
	ansible-lint --profile production
	cd app && $(APP_BIN)/ruff check . && $(APP_BIN)/ruff format --check . && $(APP_BIN)/mypy src

# Twice as many pytest workers as CPUs: most tests wait on ansible-playbook subprocesses and
# the stand-ins' HTTP (2 CPUs: 545 s with 4 workers against 623 s with 2).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))
test-unit: setup ## pytest (in parallel): modules, module utils, role units, docs, playbooks against the stand-ins
	$(BIN)/pytest -q -n $(TEST_WORKERS) tests

test-app: $(APP_BIN)/personaplex-server ## the voice server's tests (CPU, tiny generated model)
	scripts/app-test-prepare.sh
	cd app && NO_TORCH_COMPILE=1 NO_CUDA_GRAPH=1 $(APP_BIN)/pytest -q

molecule-host: ## podman/runc/debootstrap and the local Debian 12 systemd image (cached)
	scripts/molecule-host-prepare.sh

test-molecule: setup molecule-host $(APP_BIN)/personaplex-server ## every Molecule scenario that needs neither a GPU nor a cloud
	scripts/run-molecule.sh

test: ## everything CI runs: lint, unit tests, app tests, Molecule scenarios (each stage timed)
	scripts/timed.sh setup $(MAKE) --no-print-directory setup $(APP_BIN)/personaplex-server
	scripts/timed.sh lint $(MAKE) --no-print-directory lint
	scripts/timed.sh test-unit $(MAKE) --no-print-directory test-unit
	scripts/timed.sh test-app $(MAKE) --no-print-directory test-app
	scripts/timed.sh test-molecule $(MAKE) --no-print-directory test-molecule

# --- the product ------------------------------------------------------------------------
# The Google Cloud targets need the settings of `make init` (or GCP_PROJECT etc. set).
NEED_SETTINGS = @test -e $(SETTINGS) || test -n "$${GCP_PROJECT:-}" || \
	{ echo "No settings yet: run 'make init' once (it writes $(SETTINGS)), or set GCP_PROJECT, GCP_ADMIN_CIDRS and GCP_CLIENT_CIDRS." >&2; exit 2; }

init: ## ask for the project, the CIDRs and the HF token source once; writes SETTINGS (git-ignored)
	$(PY) scripts/init_settings.py --output $(SETTINGS) $(ARGS)

plan: setup ## print the Google Cloud resources and their cost; no API write
	$(NEED_SETTINGS)
	$(PLAYBOOK) playbooks/plan.yml

image: setup ## fleet mode: bake an image (builder VM + configure.yml's roles, generalised); no-op when current
	$(PLAYBOOK) playbooks/image.yml

fleet: setup ## fleet mode: managed instance group + autoscaler + HTTPS load balancer from the image (docs/fleet.md)
	$(PLAYBOOK) playbooks/fleet.yml

deploy: setup ## preflight -> provision -> configure -> smoke test (playbooks/site.yml)
	$(NEED_SETTINGS)
	$(PLAYBOOK) playbooks/site.yml

configure: setup ## configure.yml on the deployment's VM (or INVENTORY=your.yml); repairs drift
	$(PLAYBOOK) -i $(INVENTORY) playbooks/configure.yml

url: setup ## print the URL, the access token and whether the server is ready
	$(PLAYBOOK) -i $(INVENTORY) playbooks/url.yml

ssh: setup ## SSH to the VM as your OS Login user, host key pinned (writes .work/ssh_config)
	$(NEED_SETTINGS)
	$(PLAYBOOK) playbooks/ssh_config.yml
	ssh -F .work/ssh_config personaplex

logs: setup ## the voice server's journal on the VM (last LINES=200; FOLLOW=1 to follow)
	$(NEED_SETTINGS)
	$(PLAYBOOK) playbooks/ssh_config.yml
	ssh -F .work/ssh_config personaplex sudo journalctl -u personaplex-server -n $(or $(LINES),200) --no-pager $(if $(FOLLOW),-f)

local: setup ## no cloud: a local systemd container serving the tiny model at https://localhost:8998
	scripts/local-target.sh $(if $(strip $(TAGS)$(ARGS)),-- $(if $(TAGS),--tags $(TAGS)) $(ARGS))

local-destroy: ## remove the local target's container
	scripts/local-target.sh --destroy

start: setup ## start the VM again (after idle stop, make stop or a Spot preemption); waits for /readyz, prints URL, token, time taken
	$(NEED_SETTINGS)
	$(PLAYBOOK) playbooks/power.yml -e gcp_power_state=running

stop: setup ## stop the VM: no GPU or CPU charges while stopped (disk and IP still billed)
	$(NEED_SETTINGS)
	$(PLAYBOOK) playbooks/power.yml -e gcp_power_state=stopped

teardown: setup ## delete everything created, found by label; keeps the bucket (CONFIRM=<deployment name>)
	$(NEED_SETTINGS)
	$(PLAYBOOK) playbooks/teardown.yml $(if $(CONFIRM),-e gcp_teardown_confirm=$(CONFIRM))

clean: ## remove virtual environments and generated test data
	rm -rf $(VENV) $(APP_VENV) .work
