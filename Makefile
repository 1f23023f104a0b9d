# One venv, one pinned torch pair (both on local disk on the project's machines).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared

.PHONY: setup test demo clean

$(BIN)/mrcnn: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/mrcnn

test: setup
	$(BIN)/python -m pytest -q

# Set up if needed, download the default R-50 model on first use, predict on the bundled demo photo.
demo: setup
	$(BIN)/mrcnn predict src/mrcnn_cli/data/demo.jpg --model mask-rcnn_r50_fpn_1x_coco --out runs/demo

clean:
	rm -rf $(VENV) runs .pytest_cache
