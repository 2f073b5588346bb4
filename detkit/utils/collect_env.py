"""Print the environment detkit runs in: versions, and whether the compiled ops loaded and which kernels they hold.

    python -m detkit.utils.collect_env
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
from collections import OrderedDict


def collect_env() -> 'OrderedDict[str, str]':
    """Versions and build facts as ``name -> value`` strings."""
    import numpy
    import torch
    import torchvision

    import detkit
    from detkit.ops._ext import ext_error, ext_module, has_kernel

    env: OrderedDict[str, str] = OrderedDict()
    env['sys.platform'] = sys.platform
    env['Python'] = sys.version.replace('\n', ' ')
    env['machine'] = platform.machine()
    env['CPU threads (torch)'] = str(torch.get_num_threads())
    env['CUDA available'] = str(torch.cuda.is_available())
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            env[f'GPU {i}'] = torch.cuda.get_device_name(i)
    env['CUDA_HOME'] = os.getenv('CUDA_HOME', '(unset)')
    env['nvcc'] = shutil.which('nvcc') or 'not found'
    env['TORCH_CUDA_ARCH_LIST'] = os.getenv('TORCH_CUDA_ARCH_LIST', '(unset)')
    env['PyTorch'] = torch.__version__
    env['PyTorch CUDA'] = str(torch.version.cuda)
    env['TorchVision'] = torchvision.__version__
    env['NumPy'] = numpy.__version__
    for name in ('mmengine', 'pycocotools', 'cv2'):
        try:
            mod = __import__(name)
            env[name] = getattr(mod, '__version__', 'installed')
        except ImportError:
            env[name] = 'not installed'
    env['detkit'] = f'{detkit.__version__} ({os.path.dirname(detkit.__file__)})'
    ext = ext_module()
    if ext is None:
        env['detkit._C'] = f'not loaded: {ext_error()} (the ops use the PyTorch fallback)'
    else:
        env['detkit._C'] = ext.__file__
        env['detkit._C compiled with CUDA'] = str(ext.compiled_with_cuda())
        if ext.compiled_with_cuda():
            v = ext.cuda_version()
            env['detkit._C CUDA runtime'] = f'{v // 1000}.{v % 1000 // 10}'
        for op in ('nms', 'batched_nms', 'soft_nms', 'batched_soft_nms'):
            kernels = [d.upper() for d in ('cpu', 'cuda') if has_kernel(op, d)]
            env[f'detkit::{op} kernels'] = ', '.join(kernels) or 'none'
    return env


def main() -> None:
    for name, value in collect_env().items():
        print(f'{name}: {value}')


if __name__ == '__main__':
    main()
