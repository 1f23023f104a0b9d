"""A short round of the mutation fuzzing `make fuzz` runs at length (tests/fuzzing.py): every
input kind through the CLI's code paths, with no traceback, hang, crash or file left behind."""
import os
import random
import subprocess
import sys

import pytest

import fuzzing

CASES = 1000   # per kind here; `make fuzz` runs 10,000


@pytest.mark.parametrize('kind', fuzzing.KINDS)
def test_mutated_inputs_end_in_documented_outcomes_only(kind):
    report = fuzzing.fuzz(kind, CASES, seed=1)
    assert report.cases == CASES
    assert not report.failures, report.failures[0][1]
    assert not report.hangs and not report.crashes, (report.hangs, report.crashes)
    assert report.documented > CASES // 2     # the mutations do break files: the checks were reached
    assert report.peak_rss_mb < 4096          # bounded whatever a header claims


def test_the_mutator_is_seeded_and_changes_its_input():
    data = bytes(range(256)) * 8
    first = [fuzzing.mutate_bytes(data, random.Random(f'0:image:{i}')) for i in range(50)]
    assert first == [fuzzing.mutate_bytes(data, random.Random(f'0:image:{i}')) for i in range(50)]
    assert all(m != data for m in first) and len(set(first)) == 50
    doc = fuzzing.ground_truth()
    assert fuzzing.mutate_json(doc, random.Random(3)) != doc and doc == fuzzing.ground_truth()


def test_the_harness_reports_a_hang_and_a_traceback_and_goes_on(tmp_path, monkeypatch):
    """With both cores kept busy by other processes: a case's time limit starts once its worker has
    started and imported what the cases use, so load slows the start, not the verdicts.  The killed
    workers leave no folder behind."""
    monkeypatch.setattr(fuzzing.tempfile, 'tempdir', str(tmp_path))
    monkeypatch.setenv('TMPDIR', str(tmp_path))   # the workers' too
    busy = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(os.cpu_count() or 2)]
    try:
        report = fuzzing.fuzz(fuzzing.SELFTEST, 8, timeout_s=3)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    assert report.hangs == [3] and [case for case, _ in report.failures] == [5]
    assert 'KeyError' in report.failures[0][1] and report.cases == 8 and report.ok == 6
    assert list(tmp_path.iterdir()) == []
