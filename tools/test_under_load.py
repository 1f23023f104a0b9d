"""`make test-loaded`: the test suite several times in a row beside busy processes, as the tests
promise to pass on a loaded machine (they wait on events the code exposes, never on time).

Starts one busy process per core (`python -c "while True: pass"`), runs pytest `--runs` times in a
row, stops at the first failed run, and writes runs/test-loaded/run<i>.log and summary.txt: each
run's exit code, duration and pytest's last line, with the CPU, its ISA flags and its load.  Arguments after
`--` go to pytest.

    python tools/test_under_load.py --runs 3                 # what `make test-loaded` runs
    python tools/test_under_load.py --runs 1 -- -k stream    # a quick look at a few tests
"""
import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mrcnn_cli.io.cpu import cpu_info, isa_flags

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'runs' / 'test-loaded'


def restore_sigint():
    # A run started in the background of a non-interactive shell inherits SIGINT ignored; the tests
    # that press Ctrl-C need its default.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    pytest_args = argv[argv.index('--') + 1:] if '--' in argv else []
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--busy', type=int, default=os.cpu_count() or 2, help='busy processes (default: one per core)')
    args = parser.parse_args(argv[:argv.index('--')] if '--' in argv else argv)
    OUT.mkdir(parents=True, exist_ok=True)
    summary = OUT / 'summary.txt'
    summary.write_text(f'{cpu_info().model} ({isa_flags()}), {os.cpu_count()} cores, {args.busy} busy processes '
                       f'beside pytest {" ".join(pytest_args)}\n')
    busy = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(args.busy)]
    failed = 0
    try:
        for i in range(1, args.runs + 1):
            start = time.monotonic()
            log = OUT / f'run{i}.log'
            with log.open('w') as f:
                code = subprocess.call([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *pytest_args],
                                       cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, preexec_fn=restore_sigint)
            last = (log.read_text().strip().splitlines() or [''])[-1]
            line = (f'run {i}: exit {code} in {time.monotonic() - start:.0f} s, load average '
                    f'{os.getloadavg()[0]:.1f}: {last}')
            print(line, flush=True)
            with summary.open('a') as f:
                f.write(line + '\n')
            if code != 0:
                failed = 1
                break
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    return failed


if __name__ == '__main__':
    sys.exit(main())
