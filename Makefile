# Everything a fresh machine needs: `make test` and `make demo` build the venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-all demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The exact pin makes pip take the local CPU wheel instead of a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[text,eval,test]'
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
	$(BIN)/python benchmarks/slide_export.py
	$(BIN)/python benchmarks/tiling.py
	$(BIN)/python benchmarks/tiling.py --png
	$(BIN)/python benchmarks/instance_separation.py --data $(DATA)/consep/train --format consep
	$(BIN)/python benchmarks/layout_realism.py --consep $(DATA)/consep/train --table $(DATA)/histolytics/hgsc_nuclei_wsi.parquet
	$(BIN)/python benchmarks/model_cost.py
	$(BIN)/python benchmarks/sampling_speed.py
	$(BIN)/python benchmarks/synthetic_export.py
	$(BIN)/python benchmarks/evaluation_speed.py
	$(BIN)/python benchmarks/default_model_quality.py

clean:
	rm -rf $(VENV) build *.egg-info
