# Everything runs inside a local virtual environment created/updated from requirements.txt under the
# exact pins of requirements.lock, so a fresh machine needs only Python 3.11 and pip.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock

.PHONY: venv lock test test-fast demo report docs app bench seeds clean

$(STAMP): requirements.txt $(LOCK) pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -c $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

## Refresh the lock after changing requirements.txt: resolve it in a fresh venv and freeze every package.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q -r requirements.txt
	{ sed -n '/^#/p' $(LOCK); .venv-lock/bin/python -m pip freeze --exclude-editable; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK) && rm -rf .venv-lock
	@echo "$(LOCK) refreshed; commit it, and re-measure the README's numbers if a version changed"

venv: $(STAMP)

## The README's test command: the whole suite (slow tests included), offline, CPU.
test: $(STAMP)
	$(PY) -m pytest -q

## Quick loop while developing: skip tests marked slow.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

## The main job on the embedded default.
demo: $(STAMP)
	$(PY) analyses/rank_fmaps.py

## One self-contained HTML page of every run under figures/ (figures/report.html; docs/report.md).
report: $(STAMP)
	$(PY) -m forensics report figures

## The documentation site (mkdocs.yml): every page under docs/ plus the API reference from the docstrings, into
## site/; --strict, so a broken link, a missing anchor or a page left out of the navigation fails (as in the tests).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

## The explorer: every detector and explainer on your own images in the browser, http://127.0.0.1:7860
## (offline; ARGS="--port 8080 --dataset_dir DIR" passes options to `python -m forensics app`).
app: $(STAMP)
	$(PY) -m forensics app $(ARGS)

## The result tables over seeds (docs/findings.md) (benchmark seeds 0 1 x training seeds 0 1 2): ~2 h on 2 quiet CPU cores,
## resumable (figures/seed_study/runs/); PARTS="properties dropout" picks parts.
seeds: $(STAMP)
	$(PY) analyses/seed_study.py $(if $(PARTS),--parts $(PARTS),)

bench: $(STAMP)
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build site *.egg-info
