#!/usr/bin/env bash
# Compile and link detkit's CUDA kernels (FORCE_CUDA=1) into build/cuda-check, without touching the in-place
# build, then load the library in a fresh process and check that CUDA kernels were registered.
# Runs without a GPU: only nvcc and a CUDA build of torch are needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [ -z "${CUDA_HOME:-}" ]; then
  for d in /usr/local/cuda /usr/local/cuda-*; do
    if [ -f "$d/include/cuda_runtime_api.h" ] && [ -x "$d/bin/nvcc" ]; then export CUDA_HOME=$d; break; fi
  done
fi
if [ -z "${CUDA_HOME:-}" ]; then
  echo "cuda-check: no CUDA toolkit found (set CUDA_HOME to the directory holding bin/nvcc)" >&2
  exit 1
fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0+PTX"}
export MAX_JOBS=${MAX_JOBS:-2}
echo "cuda-check: CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
FORCE_CUDA=1 "$PY" setup.py -q build_ext --build-lib build/cuda-check/lib --build-temp build/cuda-check/tmp
lib=$(ls build/cuda-check/lib/detkit/_C*.so)
"$PY" - "$lib" <<'PYEOF'
import sys
import torch
torch.ops.load_library(sys.argv[1])
for op in ('nms', 'batched_nms', 'soft_nms', 'batched_soft_nms'):
    for key in ('CPU', 'CUDA'):
        has = torch._C._dispatch_has_kernel_for_dispatch_key(f'detkit::{op}', key)
        print(f'  detkit::{op:16s} {key:4s} kernel: {has}')
assert torch._C._dispatch_has_kernel_for_dispatch_key('detkit::nms', 'CUDA'), 'no CUDA kernel for nms'
assert torch._C._dispatch_has_kernel_for_dispatch_key('detkit::batched_nms', 'CUDA'), 'no CUDA kernel for batched_nms'
# soft-NMS runs on the CPU for every device (the wrappers copy CUDA tensors there): CPU kernels only
for op in ('soft_nms', 'batched_soft_nms'):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f'detkit::{op}', 'CPU'), f'no CPU kernel for {op}'
print('cuda-check: CUDA kernels compiled, linked and registered:', sys.argv[1])
PYEOF
