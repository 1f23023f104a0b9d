"""What this machine's CPU is, from /proc/cpuinfo: its model name and its feature flags (what
bench reports beside its figures, and what says whether a precision runs natively)."""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str] | None      # None where they cannot be read (not Linux)


@functools.cache
def cpu_info() -> CpuInfo:
    """The first CPU's model name and flags (x86 'flags', Arm 'Features'), read once."""
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return CpuInfo(platform.processor() or platform.machine(), None)
    model, flags = '', set()
    for line in text.splitlines():
        key, _, value = line.partition(':')
        key = key.strip()
        if key == 'model name' and not model:
            model = value.strip()
        elif key in ('flags', 'Features'):
            flags.update(value.split())
    return CpuInfo(model or platform.processor() or platform.machine(), frozenset(flags))


# the flags that decide how fast a precision runs on x86 (what a figure needs named beside it)
ISA_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'avx512_fp16',
             'amx_tile', 'amx_bf16', 'amx_int8')


def isa_flags(info: CpuInfo | None = None) -> str:
    """The ISA_FLAGS the CPU has, in that order ('unknown' where the flags cannot be read)."""
    info = info or cpu_info()
    if info.flags is None:
        return 'unknown'
    return ' '.join(f for f in ISA_FLAGS if f in info.flags) or 'none of ' + ', '.join(ISA_FLAGS[:3])


INT8_DOT_FLAGS = frozenset({'avx512_vnni', 'avx_vnni', 'amx_int8', 'asimddp', 'i8mm'})   # x86 VNNI/AMX, Arm dot product


def cpu_has_int8_dot_product() -> bool | None:
    """Whether this CPU has INT8 dot-product units (VNNI, AMX-INT8, Arm's SDOT); None where its
    flags cannot be read (not Linux)."""
    flags = cpu_info().flags
    return None if flags is None else bool(flags & INT8_DOT_FLAGS)
