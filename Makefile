# Two entry points for a fresh clone (each creates .venv when it is missing):
#   make demo DATASET=path/to/YOLO_format-or-zip   the whole pipeline (EPOCHS=1 MAX_IMAGES=25 for a quick run,
#                                                  VIDEO=clip for the video stage)
#   make test                                      the test suite (installs Chromium and web/node_modules for
#                                                  the browser tests)
#   make web                                       the live web page on http://127.0.0.1:8000 (after make demo)
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DATASET ?=
EPOCHS ?=
VIDEO ?=
MAX_IMAGES ?=

.PHONY: setup demo test bench web web-deps chromium clean-outputs

setup: $(VENV)/.installed

# Re-installs when requirements.txt changes. The pins are what makes tensorflowjs's converter run.
# mediapipe only carries the BlazeFace face detector model (src/faces.py reads its .tflite, never
# imports it): as a dependency it would need numpy<2, protobuf<5 and opencv-contrib-python.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps mediapipe==0.10.21
	$(PY) -c "import tensorflowjs.converters.converter" 2>/dev/null || { echo "tensorflowjs converter does not import; see requirements.txt"; exit 1; }
	touch $@

demo: setup
	$(PY) src/pipeline.py $(if $(DATASET),--dataset "$(DATASET)") $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(MAX_IMAGES),--max-images $(MAX_IMAGES)) $(if $(VIDEO),--video "$(VIDEO)")

test: setup web-deps chromium
	$(PY) -m pytest -q

# The page's npm packages (TF.js, BlazeFace, playwright-core), exactly as the lockfile says.
web-deps: web/node_modules/.installed

web/node_modules/.installed: web/package.json web/package-lock.json
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
