# Everything a fresh machine needs: `make test` and `make demo` build the venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-all demo bench clean

# Set-up as measured in benchmarks/README.md ("Set-up"): the venv's own pip (upgraded only when
# older than 21.3, the first to install a pyproject-only project in editable mode: fetching the
# newest pip bought nothing); torch and the package in ONE resolution, torch pinned exactly so
# that pip takes the local CPU wheel instead of a multi-GB CUDA build; --no-compile, because
# byte-compiling all ~13,700 installed modules cost more than half the install and Python
# compiles the few hundred a run imports on first use. The filter drops setuptools' notice that
# an editable install maps the package folder (what an editable install is for).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet 'pip>=21.3'
	PYTHONWARNINGS='ignore:Editable installation' \
		$(BIN)/pip install --quiet --no-compile torch==2.13.0 -e '.[text,eval,test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

demo: $(STAMP)
	$(BIN)/python -m wsi_cosynth.demo

# Each benchmark prints a table and one JSON line; results are kept in benchmarks/README.md.
DATA ?= ../shared/data
bench: $(STAMP)
	$(BIN)/python benchmarks/convert_formats.py
	$(BIN)/python benchmarks/png_encoding.py
	$(BIN)/python benchmarks/slide_export.py
	$(BIN)/python benchmarks/tiling.py
	$(BIN)/python benchmarks/tiling.py --png
	$(BIN)/python benchmarks/instance_separation.py --data $(DATA)/consep/train --format consep
	$(BIN)/python benchmarks/layout_realism.py --consep $(DATA)/consep/train --table $(DATA)/histolytics/hgsc_nuclei_wsi.parquet
	$(BIN)/python benchmarks/model_cost.py
	$(BIN)/python benchmarks/sampling_speed.py
	$(BIN)/python benchmarks/synthetic_export.py
	$(BIN)/python benchmarks/cohort_scaling.py
	$(BIN)/python benchmarks/thread_determinism.py
	$(BIN)/python benchmarks/worker_allocator.py
	$(BIN)/python benchmarks/evaluation_speed.py
	$(BIN)/python benchmarks/default_model_quality.py

clean:
	rm -rf $(VENV) build *.egg-info
