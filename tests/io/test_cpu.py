"""What bench names beside its figures: the CPU's model and the ISA flags that decide its speed."""
from mrcnn_cli.io.cpu import CpuInfo, cpu_info, isa_flags


def test_isa_flags_are_the_speed_deciding_ones_in_a_fixed_order():
    info = CpuInfo('Some CPU', frozenset({'sse2', 'amx_tile', 'avx2', 'avx512_bf16', 'avx512f', 'fma'}))
    assert isa_flags(info) == 'avx2 fma avx512f avx512_bf16 amx_tile'
    assert isa_flags(CpuInfo('Arm', frozenset({'neon', 'asimd'}))) == 'none of avx2, fma, avx512f'
    assert isa_flags(CpuInfo('?', None)) == 'unknown'


def test_this_machines_flags_are_read_from_proc_cpuinfo():
    flags = cpu_info().flags
    if flags is not None:   # Linux: the flags line as the kernel writes it
        text = open('/proc/cpuinfo').read()
        line = next(li for li in text.splitlines() if li.split(':')[0].strip() in ('flags', 'Features'))
        assert set(line.split(':', 1)[1].split()) <= flags
