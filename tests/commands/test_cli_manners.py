"""A CLI that never surprises (issue 21): inputs checked before any download, --quiet, no bars
off a terminal, options that do not apply named, one-line usage errors, zoo-name completion."""
import subprocess
import sys

import pytest

from conftest import COCO_IMAGES, SHARED
from helpers import FAST, mrcnn_here

IMG = COCO_IMAGES / '000000011813.jpg'
ANN = SHARED / 'data' / 'val2014_100' / 'instances_val2014_100.json'
RES = SHARED / 'data' / 'val2014_100' / 'instances_val2014_fakebbox100_results.json'


def test_missing_inputs_fail_before_any_model_is_downloaded(tmp_path, monkeypatch):
    from mrcnn_cli.io import zoo
    calls = []
    monkeypatch.setattr(zoo, 'download', lambda *a, **k: calls.append(a))
    empty = tmp_path / 'weights'
    empty.mkdir()
    proc = mrcnn_here('predict', tmp_path / 'missing.jpg', '--model', 'mask-rcnn_r50_fpn_1x_coco', '--weights-dir',
                      empty)
    assert proc.returncode == 1 and 'error: no input images or videos found' in proc.stderr, proc.stderr
    assert not calls and not any(empty.iterdir())


@pytest.mark.slow
def test_quiet_prints_nothing_on_success(checkpoint, tmp_path):
    args = ('predict', IMG, '--weights', checkpoint('r50'), '--style', 'pytorch', '--device', 'cpu', *FAST)
    proc = mrcnn_here(*args, '--out', tmp_path / 'a', '-q')            # after the command, as users type it
    assert proc.returncode == 0 and proc.stdout == '' and proc.stderr == '', (proc.stdout, proc.stderr)
    assert (tmp_path / 'a' / 'predictions.json').exists()
    proc = mrcnn_here('--quiet', *args, '--out', tmp_path / 'b', '--save-conf')   # warnings still show
    assert proc.stdout == '' and proc.stderr.startswith('warning: --save-conf does not apply without --save-txt')


@pytest.mark.slow
def test_no_progress_bars_when_stderr_is_not_a_terminal(checkpoint, tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'mrcnn_cli', 'predict', str(IMG), '--weights', str(checkpoint('r50')),
                           '--style', 'pytorch', '--device', 'cpu', *FAST, '--out', str(tmp_path / 'out')],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert 'predict:' not in proc.stderr and '\r' not in proc.stderr and 'img/s' not in proc.stderr
    assert proc.stderr.startswith('model: R-50 pytorch')   # the model line stays


def test_eval_results_names_the_options_it_cannot_use(tmp_path):
    proc = mrcnn_here('eval', 'coco', '--ann', ANN, '--results', RES, '--max-images', 3, '--scale', '640,384',
                      '--out', tmp_path)
    assert proc.returncode == 0
    warnings = [line for line in proc.stderr.splitlines() if line.startswith('warning:') and 'results name' not in line]
    assert warnings == ['warning: --max-images, --scale do not apply with --results (the files are evaluated as '
                        'they are); ignored']
    proc = mrcnn_here('eval', 'coco', '--ann', ANN, '--results', RES, '--out', tmp_path, '--covered-only')
    assert 'warning' not in proc.stderr


def test_usage_errors_are_one_line_with_exit_code_2():
    for args, message in ((['predict'], "error: Missing argument 'SOURCES...'. (see 'mrcnn predict --help')"),
                          (['predict', 'x.jpg', '--score-thr', '3'], "Invalid value for '--score-thr'"),
                          (['nosuch'], "error: No such command 'nosuch'.")):
        proc = mrcnn_here(*args)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr


@pytest.mark.slow
def test_shell_completion_completes_zoo_names():
    import os
    env = dict(os.environ, _MRCNN_COMPLETE='bash_complete', COMP_WORDS='mrcnn predict --model mask-rcnn_x101-64',
               COMP_CWORD='3')
    proc = subprocess.run([sys.executable, '-c', 'from mrcnn_cli.commands.cli import main; main()'],
                          capture_output=True, text=True, timeout=120, env=env)
    names = [line.split(',', 1)[1] for line in proc.stdout.splitlines() if line.startswith('plain,')]
    assert names == ['mask-rcnn_x101-64x4d_fpn_1x_coco', 'mask-rcnn_x101-64x4d_fpn_2x_coco',
                     'mask-rcnn_x101-64x4d_fpn_ms-poly_3x_coco'], proc.stdout + proc.stderr


def test_version_and_help_do_not_import_torch():
    """`mrcnn --version` and `--help` answer at once: the command line and its option groups load
    without torch (it comes with the first command that needs a model)."""
    probe = ('import sys; from mrcnn_cli.commands.cli import main\n'
             'try:\n    main(["--help"])\nexcept SystemExit:\n    pass\n'
             'print(sorted(m for m in ("torch", "cv2", "numpy") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, timeout=120).stdout
    assert out.strip().splitlines()[-1] == '[]', out
