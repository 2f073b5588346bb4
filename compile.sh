#!/usr/bin/env bash
# In-place development build of detkit._C (the .so lands next to detkit/__init__.py).
#   bash compile.sh            CPU kernels, plus CUDA kernels when a GPU is visible
#   FORCE_CUDA=1 bash compile.sh   also compile the CUDA kernels without a GPU (needs nvcc)
# Uses .venv/bin/python when present, else python3.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
  # the toolkit root is the parent of the real nvcc's bin/ (nvcc may be a wrapper script on PATH)
  nvcc_real=$(nvcc --help >/dev/null 2>&1 && command -v nvcc)
  root=$(dirname "$(dirname "$(readlink -f "$nvcc_real")")")
  if [ ! -d "$root/include" ] || [ ! -f "$root/include/cuda_runtime_api.h" ]; then
    root=$(ls -d /usr/local/cuda* 2>/dev/null | head -n 1 || true)
  fi
  [ -n "$root" ] && export CUDA_HOME="$root"
fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0+PTX"}
export MAX_JOBS=${MAX_JOBS:-2}
"$PY" setup.py build_ext --inplace
"$PY" -c "import torch, detkit._C; print('detkit._C built:', detkit._C.__file__, '| CUDA kernels:', detkit._C.compiled_with_cuda())"
