"""`mrcnn predict` at dataset scale: predictions.jsonl written as the run goes, --resume after a
SIGKILL, --shard K/N + `mrcnn merge`, torchrun, and refusals to mix runs."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import COCO_IMAGES, SHARED
from helpers import FAST, assert_one_error_line, mrcnn, mrcnn_here

CLIP = SHARED / 'data' / 'video' / 'mmaction2_demo.mp4'
IMAGES = ['000000011813.jpg', '000000022892.jpg', '000000034417.jpg', '000000073326.jpg', '000000092660.jpg',
          '000000099053.jpg', '000000101787.jpg', '000000000139.jpg']


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp('folder') / 'photos'
    d.mkdir()
    for name in IMAGES:
        shutil.copy(COCO_IMAGES / name, d / name)
    return d


def predict_args(checkpoint, out, *more):
    return ('predict', '--weights', checkpoint('r50'), '--style', 'pytorch', '--device', 'cpu', '--out', out,
            *FAST, '--no-vis', *more)


@pytest.fixture(scope='module')
def single(folder, checkpoint, tmp_path_factory):
    """The uninterrupted one-process run everything else must reproduce."""
    out = tmp_path_factory.mktemp('single')
    proc = mrcnn_here(*predict_args(checkpoint, out), folder)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / 'predictions.json').read_text())


def log_lines(path):
    """Every line of a finished log (a line cut short fails the test)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def complete_lines(path):
    """The complete lines of a log being written (or killed mid-write): a line whose end has not
    reached the file yet is not one."""
    text = path.read_text()
    return [json.loads(line) for line in text[:text.rfind('\n') + 1].splitlines()]


def test_jsonl_grows_during_the_run_and_sigkill_then_resume_equals_one_run(folder, checkpoint, single, tmp_path):
    out = tmp_path / 'out'
    log = out / 'predictions.jsonl'
    proc = subprocess.Popen([sys.executable, '-m', 'mrcnn_cli', *map(str, predict_args(checkpoint, out)), str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (log.exists() and len(complete_lines(log)) >= 3):
        time.sleep(0.05)
    assert proc.poll() is None, 'the run ended before it could be killed: ' + proc.stderr.read()
    written = complete_lines(log)       # results are on disk while the run is still going
    assert written[0]['format'].startswith('mrcnn predictions log') and len(written) >= 3
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (out / 'predictions.json').exists()   # SIGKILL: nothing could assemble it
    done_before = len(complete_lines(log)) - 1
    with open(log, 'a') as f:   # the line a kill can cut in half
        f.write('{"source_index": 7, "file_na')
    proc = mrcnn_here(*predict_args(checkpoint, out), folder, '--resume')
    assert proc.returncode == 0, proc.stderr
    assert f'({done_before} inputs done by the earlier run)' in proc.stdout
    resumed = json.loads((out / 'predictions.json').read_text())
    assert resumed == single
    names = [im['file_name'] for im in resumed['images']]
    assert sorted(names) == sorted(str(folder / n) for n in IMAGES) and len(set(names)) == len(IMAGES)
    assert [r['source_index'] for r in log_lines(log)[1:]] == list(range(len(IMAGES)))   # each image once


def test_shards_and_merge_equal_one_run(folder, checkpoint, single, tmp_path):
    out = tmp_path / 'out'
    proc = mrcnn_here(*predict_args(checkpoint, out), folder, '--shard', '2/3')
    assert proc.returncode == 0, proc.stderr
    assert 'mrcnn merge' in proc.stdout and not (out / 'predictions.json').exists()
    assert_one_error_line(mrcnn_here('merge', out), '2 of 3 parts are missing')
    for k in (0, 1):
        assert mrcnn_here(*predict_args(checkpoint, out), folder, '--shard', f'{k}/3').returncode == 0
    assert [r['source_index'] for r in log_lines(out / 'predictions.shard-1-of-3.jsonl')[1:]] == [1, 4, 7]
    proc = mrcnn_here('merge', out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / 'predictions.json').read_text()) == single
    # a part cut short is not merged as if it were complete
    lines = (out / 'predictions.shard-1-of-3.jsonl').read_text().splitlines(keepends=True)
    (out / 'predictions.shard-1-of-3.jsonl').write_text(''.join(lines[:-1]))
    assert_one_error_line(mrcnn_here('merge', out), 'predictions.shard-1-of-3.jsonl is not finished (2 of 3')
    assert_one_error_line(mrcnn_here(*predict_args(checkpoint, out), folder, '--shard', '3/3'), 'need 0 <= K < N')


def test_resume_of_another_run_is_refused(folder, checkpoint, tmp_path):
    out = tmp_path / 'out'
    assert mrcnn_here(*predict_args(checkpoint, out), folder / IMAGES[0]).returncode == 0
    before = (out / 'predictions.jsonl').read_text()
    proc = mrcnn_here(*predict_args(checkpoint, out), folder / IMAGES[0], '--resume', '--score-thr', '0.5')
    assert_one_error_line(proc, 'was written by another run (score_thr 0.3, now 0.5)')
    proc = mrcnn_here(*predict_args(checkpoint, out), folder / IMAGES[0], folder / IMAGES[1], '--resume')
    assert_one_error_line(proc, 'was written by another run (inputs')
    assert (out / 'predictions.jsonl').read_text() == before   # left as it was
    (out / 'predictions.jsonl').write_text('[1, 2]\n')
    proc = mrcnn_here(*predict_args(checkpoint, out), folder / IMAGES[0], '--resume')
    assert_one_error_line(proc, 'is not an mrcnn predictions log; cannot --resume from it')


def test_unfinished_video_restarts_on_resume(folder, checkpoint, tmp_path):
    args = (*predict_args(checkpoint, tmp_path / 'full'), folder / IMAGES[0], CLIP, '--max-frames', 2)
    assert mrcnn_here(*args).returncode == 0
    full = json.loads((tmp_path / 'full' / 'predictions.json').read_text())
    out = tmp_path / 'cut'
    shutil.copytree(tmp_path / 'full', out)
    lines = (out / 'predictions.jsonl').read_text().splitlines(keepends=True)
    assert json.loads(lines[-1]) == {'source_index': 1, 'end': True} and 'frame_index' in json.loads(lines[-2])
    (out / 'predictions.jsonl').write_text(''.join(lines[:-2]))   # killed after the video's first frame
    (out / 'predictions.json').unlink()
    proc = mrcnn_here(*predict_args(checkpoint, out), folder / IMAGES[0], CLIP, '--max-frames', 2, '--resume')
    assert proc.returncode == 0, proc.stderr
    assert f'warning: {CLIP} was not finished by the last run; it starts again' in proc.stderr
    assert '(1 inputs done by the earlier run)' in proc.stdout
    assert json.loads((out / 'predictions.json').read_text()) == full


ONE_THREAD = dict(os.environ, OMP_NUM_THREADS='1')  # what torchrun gives each rank: the same float reductions


@pytest.fixture(scope='module')
def few(folder):
    return [folder / n for n in IMAGES[:4]]


@pytest.fixture(scope='module')
def single_one_thread(few, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp('single1')
    proc = mrcnn(*predict_args(checkpoint, out), *few, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / 'predictions.json').read_text())


def torchrun(*args, port, wait=True):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node', '2', '--master-port', str(port),
           '-m', 'mrcnn_cli', *map(str, args)]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)


def test_torchrun_two_processes_equal_one(few, checkpoint, single_one_thread, tmp_path):
    multi = tmp_path / 'multi'
    proc = torchrun(*predict_args(checkpoint, multi), *few, port=29518)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r['source_index'] for r in log_lines(multi / 'predictions.rank1.jsonl')[1:]] == [1, 3]
    assert json.loads((multi / 'predictions.json').read_text()) == single_one_thread


def worker_pid(rank, launcher):
    """The pid of the torchrun worker with this RANK (read from /proc/PID/environ)."""
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            env = open(f'/proc/{pid}/environ', 'rb').read().split(b'\0')
        except OSError:
            continue
        if int(pid) != launcher and b'TORCHELASTIC_RUN_ID' in b' '.join(env) and f'RANK={rank}'.encode() in env:
            return int(pid)
    return None


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='finds the worker through /proc')
def test_a_rank_killed_under_torchrun_fails_the_job_naming_it_and_resume_finishes(few, checkpoint,
                                                                                 single_one_thread, tmp_path):
    out = tmp_path / 'out'
    log = out / 'predictions.rank1.jsonl'
    proc = torchrun(*predict_args(checkpoint, out), *few, port=29519, wait=False)
    while proc.poll() is None and not (log.exists() and len(complete_lines(log)) >= 2):
        time.sleep(0.05)
    pid = worker_pid(1, proc.pid)
    assert proc.poll() is None and pid, 'the job ended before rank 1 could be killed: ' + proc.stderr.read()
    os.kill(pid, signal.SIGKILL)
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode != 0
    ours = [line for line in stderr.splitlines() if line.startswith('error: ')]
    # rank 0 says it in one line: stopped by the launcher, or (done first) it names rank 1 from the logs
    assert len(ours) == 1 and ours[0].startswith('error: rank 0: ') and '--resume' in ours[0], stderr[-3000:]
    assert 'rank      : 1 (local_rank: 1)' in stderr and 'SIGKILL' in stderr   # torchrun's own report
    assert not (out / 'predictions.json').exists()
    for part in ('rank0', 'rank1'):    # every line of both logs is whole
        text = (out / f'predictions.{part}.jsonl').read_text()
        assert text.endswith('\n') and all(json.loads(line) for line in text.splitlines())
    proc = torchrun(*predict_args(checkpoint, out, '--resume'), *few, port=29519)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / 'predictions.json').read_text()) == single_one_thread
    indexes = [r['source_index'] for p in ('rank0', 'rank1') for r in log_lines(out / f'predictions.{p}.jsonl')[1:]]
    assert sorted(indexes) == [0, 1, 2, 3]   # each image exactly once


def test_inputs_that_failed_are_tried_again_in_their_place(folder, checkpoint, tmp_path):
    inputs = tmp_path / 'in'
    inputs.mkdir()
    for k, name in enumerate(IMAGES[:3]):
        shutil.copy(folder / name, inputs / f'{k}.jpg')
    fresh = tmp_path / 'fresh'
    assert mrcnn_here(*predict_args(checkpoint, fresh), inputs).returncode == 0
    (inputs / '1.jpg').rename(tmp_path / 'kept.jpg')
    (inputs / '1.jpg').write_bytes(b'not yet copied')
    out = tmp_path / 'out'
    proc = mrcnn_here(*predict_args(checkpoint, out), inputs)
    assert proc.returncode == 1 and '1.jpg' in proc.stderr
    (tmp_path / 'kept.jpg').replace(inputs / '1.jpg')
    proc = mrcnn_here(*predict_args(checkpoint, out), inputs, '--resume')
    assert proc.returncode == 0, proc.stderr
    assert '(2 inputs done by the earlier run)' in proc.stdout
    assert [r['source_index'] for r in log_lines(out / 'predictions.jsonl')[1:]] == [0, 2, 1]
    assert json.loads((out / 'predictions.json').read_text()) == json.loads((fresh / 'predictions.json').read_text())


def test_full_disk_while_logging_is_one_error_line_and_the_log_stays_resumable(folder, checkpoint, tmp_path):
    import resource
    out = tmp_path / 'out'
    limit = 40_000   # the header and a few images' results fit, not all eight

    def cap_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, '-m', 'mrcnn_cli', *map(str, predict_args(checkpoint, out)), str(folder)],
                          capture_output=True, text=True, preexec_fn=cap_file_size, timeout=600)
    assert_one_error_line(proc, 'cannot write')
    assert 'predictions.json' in [line for line in proc.stderr.splitlines() if line.startswith('error:')][0]
    assert not [p for p in out.iterdir() if p.name.startswith('.')]   # no temporary file left
    proc = mrcnn_here(*predict_args(checkpoint, out), folder, '--resume')   # room again: it goes on
    assert proc.returncode == 0, proc.stderr
    assert [r['source_index'] for r in log_lines(out / 'predictions.jsonl')[1:]] == list(range(len(IMAGES)))
