# Sandlot's two commands: `make serve` and `make test`. Both install what they need
# (Debian packages, the venv, the base images) and are safe to run again.

SHELL := /bin/bash
PYTHON := /usr/bin/python3
VENV := .venv
DEB_PACKAGES := runc mmdebstrap nftables python3-nftables iproute2 iptables python3-venv python3-dev \
                uidmap curl zstd ca-certificates busybox-static e2fsprogs mount lxcfs gcc libc6-dev \
                skopeo umoci docker-registry golang-github-containers-common \
                chromium postgresql-15 ccache
SANDLOT := $(VENV)/bin/sandlot
PYTEST_ARGS ?=

.PHONY: serve test lint deps venv setup js-deps prime-venv criu dashboard-assets

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

setup: venv criu dashboard-assets
	$(SANDLOT) setup

# The dashboard's front-end pieces (htmx, xterm.js + fit addon, Chart.js) from npm at the versions
# in sandlot/dashboard/assets/package-lock.json, copied into sandlot/dashboard/static/vendor: served
# by the server itself (no CDN at run time). Needs Node >= 20 like js-deps; without it the
# dashboard answers a page saying the step is missing.
DASH := sandlot/dashboard
DASH_VENDOR := $(DASH)/static/vendor
dashboard-assets: $(DASH_VENDOR)/.installed
$(DASH_VENDOR)/.installed: $(DASH)/assets/package-lock.json
	@if command -v node >/dev/null && node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)'; then \
		(cd $(DASH)/assets && npm ci --no-audit --no-fund --loglevel=error) && \
		mkdir -p $(DASH_VENDOR) && \
		cp $(DASH)/assets/node_modules/htmx.org/dist/htmx.min.js \
		   $(DASH)/assets/node_modules/@xterm/xterm/lib/xterm.js \
		   $(DASH)/assets/node_modules/@xterm/xterm/css/xterm.css \
		   $(DASH)/assets/node_modules/@xterm/addon-fit/lib/addon-fit.js \
		   $(DASH)/assets/node_modules/chart.js/dist/chart.umd.min.js $(DASH_VENDOR)/ && \
		touch $@; \
	else echo "Node >= 20 not found: the dashboard's front-end assets are not vendored (it will say so)"; fi

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
