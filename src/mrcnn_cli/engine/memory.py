"""Process memory settings for CPU inference (Linux/glibc; elsewhere these do nothing)."""
import ctypes
import gc
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4   # glibc's mallopt parameters
_kept = False


def _libc():
    try:
        return ctypes.CDLL('libc.so.6')
    except OSError:
        return None


def tune_cpu_allocator():
    """Serve every allocation from malloc's heap and keep freed memory there.

    glibc maps each block over 32 MB afresh and unmaps it on free, so every feature map of a
    1333x800 image lands on new pages, and page faults take a noticeable share of CPU time
    (docs/performance.md has the numbers).  ONNX Runtime avoids this with its own arena.  The
    heap's peak is the same working set; it is just not handed back between images, which costs
    some fragmentation (a higher peak RSS).
    Process-wide, so the library never does it by itself: the CLI calls it, and a program that
    runs many CPU predictions may (`mrcnn_cli.tune_cpu_allocator()`).  Idempotent;
    MRCNN_KEEP_FREED_MEMORY=0 turns it off."""
    global _kept
    if _kept or os.environ.get('MRCNN_KEEP_FREED_MEMORY') == '0':
        return
    libc = _libc()
    if libc is None or not hasattr(libc, 'mallopt'):
        return
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1)
    _kept = True


def release_freed_memory():
    """Hand freed memory back to the system now (e.g. between benchmarked backends)."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, 'malloc_trim'):
        libc.malloc_trim(0)
