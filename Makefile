# Sandlot's two commands: `make serve` and `make test`. Both install what they need
# (Debian packages, the venv, the base images) and are safe to run again.

SHELL := /bin/bash
PYTHON := /usr/bin/python3
VENV := .venv
DEB_PACKAGES := runc mmdebstrap nftables python3-nftables iproute2 iptables python3-venv python3-dev \
                uidmap curl zstd ca-certificates busybox-static e2fsprogs mount lxcfs gcc libc6-dev \
                skopeo umoci docker-registry golang-github-containers-common
SANDLOT := $(VENV)/bin/sandlot
PYTEST_ARGS ?=

.PHONY: serve test lint deps venv setup js-deps prime-venv criu

serve: setup
	$(SANDLOT) serve

test: lint setup js-deps prime-venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# ruff (bugs, not style) and mypy (strict on api, orchestrator, runtime, store, proxy); both
# read their settings from pyproject.toml and come from the venv's `lint` extra.
lint: venv
	$(VENV)/bin/ruff check sandlot tests bench
	$(VENV)/bin/mypy

# The JS SDK suite needs Node >= 20 (the e2b npm package's floor); without it the test is skipped.
js-deps:
	@if command -v node >/dev/null && node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)'; then \
		[ tests/js/node_modules/.package-lock.json -nt tests/js/package-lock.json ] || \
			(cd tests/js && npm ci --no-audit --no-fund --loglevel=error); \
	else echo "Node >= 20 not found: the JS SDK tests will be skipped"; fi

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,lint]'
	touch $@

venv: deps $(VENV)/.installed

setup: venv criu
	$(SANDLOT) setup

# CRIU 4.2.x for pause/resume, snapshots and fork (bookworm's 3.17 fails on this kernel):
# built once from Debian's source package into /usr/local/sbin/criu; a no-op afterwards.
criu: deps
	scripts/install-criu.sh

# The Prime Intellect clients (prime-sandboxes SDK + prime CLI) for the Prime façade tests. They get
# their own venv: prime-sandboxes needs connectrpc 0.11 + google protobuf, e2b needs connectrpc 0.12.
PRIME_VENV := .venv-prime
$(PRIME_VENV)/.installed: | deps
	$(PYTHON) -m venv $(PRIME_VENV)
	$(PRIME_VENV)/bin/pip install -q 'prime-sandboxes>=0.5,<0.6' 'prime>=0.18,<0.19'
	touch $@

prime-venv: $(PRIME_VENV)/.installed
