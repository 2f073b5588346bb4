import subprocess
import sys


def test_collect_env_reports_the_extension_and_its_kernels():
    out = subprocess.run([sys.executable, '-m', 'detkit.utils.collect_env'], capture_output=True, text=True,
                         check=True).stdout
    lines = dict(line.split(': ', 1) for line in out.splitlines() if ': ' in line)
    import torch
    assert lines['PyTorch'] == torch.__version__
    assert lines['detkit._C'].endswith('.so'), lines['detkit._C']
    assert lines['detkit::nms kernels'].startswith('CPU')
    assert lines['detkit::soft_nms kernels'] == 'CPU'
    assert lines['detkit::batched_soft_nms kernels'] == 'CPU'
