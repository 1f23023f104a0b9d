"""keep_freed_memory: a freed feature-map-sized block is reused without new page faults."""
import os
import subprocess
import sys

import pytest

PROBE = '''
import resource, sys, torch
from mrcnn_cli.memory import keep_freed_memory
if sys.argv[1] == 'keep':
    keep_freed_memory()
def touch():   # a 64 MB block, every page written, then freed
    torch.ones(16 * 2 ** 20).sum()
for _ in range(5):   # the heap settles within a few (an aligned block needs a bit more than a freed one)
    touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(7):
    touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def minor_faults(mode, env=None):
    out = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc allocator setting')
def test_kept_memory_is_reused_without_page_faults():
    block = 64 * 2 ** 20 // 4096   # pages
    assert minor_faults('default') >= 6.5 * block   # glibc maps 7 fresh 64 MB blocks for 7 uses
    assert minor_faults('keep') <= 3 * block        # mostly served again from the kept heap (measured 0-2)
    assert minor_faults('keep', {'MRCNN_KEEP_FREED_MEMORY': '0'}) >= 6.5 * block   # the opt-out
