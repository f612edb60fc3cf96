# Everything runs inside a local virtual environment created/updated from requirements.txt,
# so a fresh machine needs only Python 3.11 and pip.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test test-fast demo bench clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

## The README's test command: the whole suite (slow tests included), offline, CPU.
test: $(STAMP)
	$(PY) -m pytest -q

## Quick loop while developing: skip tests marked slow.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

## The main job on the embedded default (falls back to listing weights until it exists).
demo: $(STAMP)
	@if [ -f analyses/rank_fmaps.py ]; then $(PY) analyses/rank_fmaps.py; \
	else $(PY) -m forensics weights list; fi

bench: $(STAMP)
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
