# Two entry points for a fresh clone (each creates .venv when it is missing):
#   make demo DATASET=path/to/YOLO_format-or-zip   the whole pipeline (EPOCHS=1 MAX_IMAGES=25 for a quick run,
#                                                  VIDEO=clip for the video stage)
#   make test                                      the test suite
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DATASET ?=
EPOCHS ?=
VIDEO ?=
MAX_IMAGES ?=

.PHONY: setup demo test bench clean-outputs

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

test: setup
	$(PY) -m pytest -q

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done
