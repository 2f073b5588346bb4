"""Build and install detkit with its compiled operators (detkit._C).

The CUDA kernels are compiled when torch is a CUDA build, a CUDA toolkit is found (CUDA_HOME or nvcc on PATH),
and either a GPU is visible or FORCE_CUDA=1. Otherwise only the CPU kernels are built. Set TORCH_CUDA_ARCH_LIST
(e.g. "8.0;9.0") to choose the GPU architectures; DETKIT_NO_EXT=1 installs the pure-Python package only (the ops
then use their PyTorch fallback).
"""
import glob
import os
import re
import sys

from setuptools import find_packages, setup


def read_version() -> str:
    with open(os.path.join('detkit', '__init__.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def make_extensions():
    if os.getenv('DETKIT_NO_EXT', '0') == '1':
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = sorted(glob.glob('csrc/*.cpp') + glob.glob('csrc/cpu/*.cpp'))
    # torch adds the C++ standard it needs (C++20 for torch 2.14). No fused multiply-adds: the kernels round every
    # operation as PyTorch's elementwise ops do (soft-NMS's exp must match the fallback's bit for bit). No FP
    # traps (as torch's own build): lets GCC vectorise loops with selects (`iou > thr ? iou : 0`); values are
    # unchanged, only floating-point exception flags could differ.
    cxx_flags = ['-O3', '-ffp-contract=off', '-fno-trapping-math']
    link_flags = []
    if torch._C.has_openmp and sys.platform.startswith('linux'):
        # at::parallel_for (batched NMS and soft-NMS run their classes on it) is a header template that is only
        # parallel when _OPENMP is defined: without -fopenmp it silently runs serially. The extension then links
        # libgomp.so.1, the soname torch has already loaded, so both share one thread pool (torch.set_num_threads).
        cxx_flags.append('-fopenmp')
        link_flags.append('-fopenmp')
    define_macros = []
    want_cuda = torch.cuda.is_available() or os.getenv('FORCE_CUDA', '0') == '1'
    if want_cuda and torch.version.cuda is not None and CUDA_HOME is not None:
        sources += sorted(glob.glob('csrc/cuda/*.cu'))
        define_macros.append(('WITH_CUDA', None))
        ext = CUDAExtension(
            'detkit._C', sources, define_macros=define_macros,
            extra_compile_args={'cxx': cxx_flags, 'nvcc': ['-O3', '--expt-relaxed-constexpr']},
            extra_link_args=link_flags)
    else:
        if want_cuda:
            print('detkit: FORCE_CUDA=1 but no CUDA build of torch or no CUDA toolkit (CUDA_HOME) was found; '
                  'building the CPU kernels only')
        ext = CppExtension('detkit._C', sources, extra_compile_args={'cxx': cxx_flags}, extra_link_args=link_flags)
    return [ext], {'build_ext': BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = make_extensions()

setup(
    name='detkit',
    version=read_version(),
    description='A registry-driven, modular one-stage object detection toolbox (SSD, RetinaNet, M2Det)',
    packages=find_packages(include=['detkit', 'detkit.*']),
    python_requires='>=3.9',
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
