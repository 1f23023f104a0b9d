"""The CPU allocator setting: a freed feature-map-sized block is reused without new page faults
when the CLI (or the caller, explicitly) asks for it; the library alone never changes it."""
import os
import subprocess
import sys

import pytest

from conftest import DEMO

PROBE = '''
import resource, sys, torch
mode = sys.argv[1]
if mode == 'tuned':
    import mrcnn_cli
    mrcnn_cli.tune_cpu_allocator()
elif mode in ('library', 'cli'):   # load a model and predict, as a program importing mrcnn does
    import cv2, mrcnn_cli
    if mode == 'cli':
        from mrcnn_cli.commands.cli import load_model
        choice = mrcnn_cli.ModelChoice(weights=sys.argv[2], style='pytorch', device='cpu', scale=(64, 64))
        model = load_model(choice, announce=False)
    else:
        model = mrcnn_cli.load(weights=sys.argv[2], style='pytorch', device='cpu', scale=(64, 64))
    model(cv2.resize(cv2.imread(sys.argv[3]), (64, 48)))
def touch():   # a 64 MB block, every page written, then freed
    torch.ones(16 * 2 ** 20).sum()
for _ in range(10):   # the heap settles within a few (an aligned block needs a bit more than a freed one)
    touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(7):
    touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def minor_faults(mode, *args, env=None):
    out = subprocess.run([sys.executable, '-c', PROBE, mode, *map(str, args)], capture_output=True, text=True,
                         check=True, env={**os.environ, **(env or {})})
    return int(out.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc allocator setting')
def test_kept_memory_is_reused_without_page_faults(checkpoint):
    block = 64 * 2 ** 20 // 4096   # pages
    assert minor_faults('default') >= 6.5 * block   # glibc maps 7 fresh 64 MB blocks for 7 uses
    assert minor_faults('tuned') <= 3 * block       # mostly served again from the kept heap (measured 0-2)
    assert minor_faults('tuned', env={'MRCNN_KEEP_FREED_MEMORY': '0'}) >= 6.5 * block   # the opt-out
    # loading and predicting through the library leave glibc's behaviour; the CLI tunes it
    assert minor_faults('library', checkpoint('r50'), DEMO) >= 6.5 * block
    assert minor_faults('cli', checkpoint('r50'), DEMO) <= 3 * block
