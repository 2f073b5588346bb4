# detkit: two commands for a fresh machine.
#   make quickstart   the main job on the embedded default
#   make test         the test suite
# Both create .venv when missing, install requirements.txt, requirements-deploy.txt and detkit, and build the
# extension detkit._C.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.detkit-installed
EXT_SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cuda/*.cu)

.PHONY: install ext test test-fast quickstart cuda-check bench clean

install: $(STAMP) ext

# requirements-deploy.txt: the optional ONNX extras (export, onnxruntime), installed too: the tests cover them
$(STAMP): requirements.txt requirements-deploy.txt setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-deploy.txt
	DETKIT_NO_EXT=1 $(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $@

# in-place build of detkit/_C*.so, redone when a C++/CUDA source changes
ext: $(STAMP) detkit/.ext-built

detkit/.ext-built: $(EXT_SOURCES) setup.py compile.sh
	PYTHON=$(PY) bash compile.sh
	touch $@

# pytest-xdist: one worker per core, a test file per worker at a time (module fixtures built once, files in order)
test: install
	$(PY) -m pytest -x -q -n auto --dist loadfile tests

# the same without the tests marked slow (more than 15 s of CPU time each; pytest.ini)
test-fast: install
	$(PY) -m pytest -x -q -n auto --dist loadfile -m "not slow" tests

# generate the shapes dataset, train a small SSD on the CPU, evaluate (VOC table, COCO summary), demo, curves;
# everything lands in work_dirs/quickstart/<config>_<style>/ (CONFIG=..., STYLE=simple|hard)
quickstart: install
	PYTHON=$(PY) bash tools/quickstart.sh

# Compile and link the CUDA kernels without a GPU (nvcc + the CUDA build of torch) into build/cuda-check,
# then check in a fresh process that the library registers CUDA kernels for detkit::nms and batched_nms.
cuda-check: $(STAMP)
	PYTHON=$(PY) bash tools/cuda_check.sh

bench: install
	$(PY) benchmarks/bench_nms.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_inference.py --jit --compile

clean:
	rm -rf build detkit/_C*.so detkit/.ext-built *.egg-info
