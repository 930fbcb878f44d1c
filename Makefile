# Thin wrappers; each target is safe to rerun. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY ?= python3
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help setup lint test test-unit test-molecule molecule-host local deploy app-setup app-test app-lint clean

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/ansible-playbook: requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	touch $@

setup: $(BIN)/ansible-playbook ## control-node toolchain in .venv (pinned, rerunnable)

lint: setup ## yamllint + ansible-lint (production profile) on the whole tree
	yamllint -s .
	ansible-lint --profile production

molecule-host: ## install podman/runc/debootstrap and build the local Debian 12 systemd image (cached)
	scripts/molecule-host-prepare.sh

test-molecule: setup molecule-host ## every Molecule scenario that runs without a GPU or cloud
	scripts/run-molecule.sh

test: lint test-molecule ## the whole suite CI runs

clean: ## remove virtual environments and generated test data
	rm -rf $(VENV) app/.venv .work
