# One venv, one pinned torch pair (both on local disk on the project's machines).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared

.PHONY: setup test-deps browser lint test test-quick test-loaded demo bench bench-int8 bench-large fuzz gpu-check clean

# What the main job needs, and no more: a user's first prediction does not wait for the test tools.
$(BIN)/mrcnn: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

setup: $(BIN)/mrcnn

# The test and lint tools, the serving stack, OpenVINO and Ray (the `test` extra), installed by the
# commands that need them.  SAHI is the tests' independent reference for tiling (its slicer and box NMS); it
# asks for the GUI build of OpenCV, which would clash with the headless one, and the parts the tests use
# need nothing else: no deps.  The same holds for roboflow's trackers and TrackEval (`mrcnn track`, `mrcnn
# eval track`), whose other requirements the `test` extra names.
TEST_DEPS := $(VENV)/.test-deps
$(TEST_DEPS): $(BIN)/mrcnn
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps sahi==0.12.8 trackers==2.6.1 trackeval==1.3.0
	touch $@

test-deps: $(TEST_DEPS)

# Debian's Chromium, which the test of `mrcnn serve`'s page drives through Playwright.  Installing it takes
# root and apt-get; elsewhere that test is skipped (a failure with MRCNN_REQUIRE_BROWSER=1, as CI sets).
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
browser:
	@test -x /usr/bin/chromium || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
	  || $(APT_CHROMIUM) >/dev/null || { apt-get update -q >/dev/null && $(APT_CHROMIUM) >/dev/null; }

# ruff, import-linter's contract that imports only go down the layers, and mypy over the whole package
# (all three configured in pyproject.toml)
lint: test-deps
	$(BIN)/ruff check src tests tools
	$(BIN)/lint-imports
	$(BIN)/mypy

test: test-deps browser
	$(BIN)/python -m pytest -q

# the quick loop while working: everything but the end-to-end runs and the long model runs (`slow`)
test-quick: test-deps
	$(BIN)/python -m pytest -q -m "not slow"

# The suite LOADED_RUNS times in a row beside one busy process per core (the tests must pass on a loaded
# machine); logs and a summary in runs/test-loaded/.  About three times `make test`'s time per run on 2 cores.
LOADED_RUNS ?= 3
test-loaded: test-deps browser
	$(BIN)/python tools/test_under_load.py --runs $(LOADED_RUNS)

# Mutation fuzzing of every input kind (images, videos, checkpoints, ONNX, COCO JSON) through the CLI's
# code paths; CI runs a short round in the tests.  FUZZ_CASES per kind; any case replays by its number.
FUZZ_CASES ?= 10000
fuzz: test-deps
	$(BIN)/python tests/fuzzing.py --cases $(FUZZ_CASES)

# Every CUDA path (the GPU tests, then bench rows for torch FP32/FP16/compile, onnxruntime CUDA/TensorRT and
# torchvision) with a report in runs/gpu-check/; on a machine without a GPU it says so and exits 0.
gpu-check: test-deps
	$(BIN)/python tools/gpu_check.py

# Set up if needed, download the default R-50 model on first use, predict on the bundled demo photo.
demo: setup
	$(BIN)/mrcnn predict src/mrcnn_cli/data/demo.jpg --model mask-rcnn_r50_fpn_1x_coco --out runs/demo

# CPU benchmark with a synthetic R-50 checkpoint (real key layout, made by ../shared's generator):
# torch FP32, torch BF16, onnxruntime, OpenVINO FP32 and BF16, and torchvision with the same weights, in one run.
BENCH_N ?= 20
BENCH_IMAGES ?= $(SHARED)/data/coco_mini_val2017/val2017
weights/synthetic_r50.pth: | setup
	$(BIN)/python $(SHARED)/tools/make_checkpoint.py $(SHARED)/data/state_dict_keys/mmdet_mask-rcnn_r50_fpn_1x_coco.txt $@

# re-exported when the weights or the model code change
runs/bench/r50.onnx: weights/synthetic_r50.pth $(wildcard src/mrcnn_cli/*.py src/mrcnn_cli/*/*.py)
	$(BIN)/mrcnn export --onnx $@ --weights weights/synthetic_r50.pth --style pytorch

# INT8 (`mrcnn export --int8`, calibrated on the bench images but the last 20, which the guard holds out), for
# OpenVINO (NNCF, .xml) and onnxruntime (QDQ, .onnx), timed beside every other row, then each backend and
# precision scored by the guard's check (tools/int8_agreement.py).  The synthetic weights fail the guard
# (docs/int8.md says why), so they are written with --force.  Each quantizes an FP32 export of its own (the
# same graph as r50.onnx), so that making one does not rewrite what the other was made from.
runs/bench/r50_int8.xml runs/bench/r50_int8.onnx: weights/synthetic_r50.pth | test-deps
	$(BIN)/mrcnn export --onnx $@.fp32.onnx --int8 $@ --weights weights/synthetic_r50.pth --style pytorch \
		--calib $(BENCH_IMAGES) --int8-check-n 20 --force
	rm -f $@.fp32.onnx

bench-int8: runs/bench/r50.onnx runs/bench/r50_int8.xml runs/bench/r50_int8.onnx
	$(BIN)/mrcnn bench --fps --weights weights/synthetic_r50.pth --style pytorch --backend all --onnx runs/bench/r50.onnx \
		--int8 runs/bench/r50_int8.xml --int8 runs/bench/r50_int8.onnx --images $(BENCH_IMAGES) --n $(BENCH_N) \
		--compare torchvision --json runs/bench/int8.json
	$(BIN)/python tools/int8_agreement.py --weights weights/synthetic_r50.pth --onnx runs/bench/r50.onnx \
		--int8 runs/bench/r50_int8.xml --int8 runs/bench/r50_int8.onnx --images $(BENCH_IMAGES) --n 20 \
		--json runs/bench/int8_agreement.json

# Sliced inference (`predict --tile 1024 --save-geojson`, with pictures) on generated GeoTIFFs of 2,000 to
# 20,000 pixels a side: time against area and each run's peak RSS, in runs/bench-large/ (about 12 minutes).
bench-large: weights/synthetic_r50.pth | test-deps
	$(BIN)/python tools/large_image_bench.py --weights weights/synthetic_r50.pth --bf16

bench: runs/bench/r50.onnx
	$(BIN)/mrcnn bench --fps --weights weights/synthetic_r50.pth --style pytorch --backend all --onnx runs/bench/r50.onnx \
		--images $(BENCH_IMAGES) --n $(BENCH_N) --compare torchvision --json runs/bench/fp32.json
	$(BIN)/mrcnn bench --fps --weights weights/synthetic_r50.pth --style pytorch --bf16 \
		--images $(BENCH_IMAGES) --n $(BENCH_N) --json runs/bench/bf16.json

clean:
	rm -rf $(VENV) runs .pytest_cache
