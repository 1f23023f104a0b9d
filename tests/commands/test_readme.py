"""Every code block of the README's "Python API" section runs as written (issue 16)."""
import re
import shutil

import cv2
import pytest

from conftest import COCO_IMAGES, ROOT, SHARED


def api_blocks():
    text = (ROOT / 'README.md').read_text()
    section = text.split('## Python API', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```python\n(.*?)```', section, flags=re.S)


@pytest.mark.slow
def test_python_api_section_runs(tmp_path, monkeypatch, checkpoint, zoo_weights_dir, exported):
    blocks = api_blocks()
    assert blocks and 'mrcnn_cli.load(' in blocks[0]
    shutil.copy(COCO_IMAGES / '000000397133.jpg', tmp_path / 'street.jpg')
    shutil.copy(COCO_IMAGES / '000000516916.jpg', tmp_path / 'a.jpg')
    cv2.imwrite(str(tmp_path / 'b.png'), cv2.imread(str(COCO_IMAGES / '000000011813.jpg')))
    (tmp_path / 'ft.pth').symlink_to(checkpoint('r50_caffe'))
    (tmp_path / 'ckpt.pth').symlink_to(checkpoint('r50'))
    (tmp_path / 'r50.onnx').symlink_to(exported('r50'))
    cap = cv2.VideoCapture(str(SHARED / 'data' / 'video' / 'mmaction2_demo.mp4'))   # a 4-frame road.mp4
    writer = cv2.VideoWriter(str(tmp_path / 'road.mp4'), cv2.VideoWriter_fourcc(*'mp4v'), 25, (340, 256))
    for _ in range(4):
        writer.write(cap.read()[1])
    writer.release()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('MRCNN_WEIGHTS_DIR', str(zoo_weights_dir))
    namespace = {}
    for block in blocks:
        exec(compile(block, 'README.md', 'exec'), namespace)   # noqa: S102 - our own documentation
    assert len(namespace['dets']) == 2 and namespace['onnx_model'].classes == namespace['model'].classes
    assert (tmp_path / 'street_masks.jpg').exists()
    det = namespace['det']
    assert len(namespace['polygons']) == len(det) and isinstance(namespace['polygons'][0]['segmentation'], list)
    out = tmp_path / 'out'
    assert (out / 'masks' / 'street.png').exists() and (out / 'labels' / 'street.txt').exists()
    assert len(list((tmp_path / 'out' / 'crops').rglob('street_*.png'))) == len(det)


def readme_option_tables():
    """{table name: options} for the README's option tables ('| mrcnn predict option | ...')."""
    tables, name = {}, None
    for line in (ROOT / 'README.md').read_text().splitlines():
        head = re.match(r'^\| (.+?) option \|', line)
        if head:
            name = head.group(1)
            tables[name] = set()
        elif name and line.startswith('|') and not line.startswith('|---'):
            first = line.split(' | ')[0]
            for code in re.findall(r'`([^`]*)`', first):
                tables[name] |= set(re.findall(r'(?<![\w-])(--?[a-z][a-z0-9-]*)', code))
        elif not line.startswith('|'):
            name = None
    return tables


def click_options(command):
    return {o for p in command.params if hasattr(p, 'opts') and p.param_type_name == 'option'
            for o in p.opts + p.secondary_opts}


def test_readme_option_tables_are_clicks_options():
    """Every option of every command is in its own README table or the model-options one (its own
    table wins where the meaning differs, e.g. export's --onnx), and every option there exists."""
    from mrcnn_cli.commands.cli import cli
    tables = readme_option_tables()
    commands = {'predict': cli.commands['predict'], 'eval coco': cli.commands['eval'].commands['coco'],
                'bench': cli.commands['bench'], 'export': cli.commands['export'], 'serve': cli.commands['serve'],
                'track': cli.commands['track'], 'eval track': cli.commands['eval'].commands['track']}
    assert set(tables) == {'mrcnn', 'model', *(f'mrcnn {c}' for c in commands)}
    common = tables['model']
    assert tables['mrcnn'] == click_options(cli) | {'--help', '-h'}
    # track's table names its own options and says it takes every predict option but --tile
    tables['mrcnn track'] |= tables['mrcnn predict'] - {'--tile', '--tile-overlap', '--tile-full', '--tile-merge',
                                                        '--tile-match', '--tile-match-thr'}
    for name, command in commands.items():
        own, options = tables[f'mrcnn {name}'], click_options(command)
        assert own | (common & options) == options, f'{name}: {options - own - common} missing, {own - options} unknown'
    used = set().union(*(click_options(c) for c in commands.values()))
    assert common <= used, f'not an option of any command: {common - used}'
    for sub in ('list', 'download'):
        assert click_options(cli.commands['zoo'].commands[sub]) <= common
    assert not click_options(cli.commands['merge'])


def test_the_set_up_command_installs_what_the_main_job_needs_and_the_test_command_the_rest():
    """`make demo` (setup) installs the package alone; the test extra (Ray, Playwright, OpenVINO,
    mypy, ...) comes with `make test`, `make lint` and the quick loop."""
    import re
    makefile = (ROOT / 'Makefile').read_text()
    recipes = dict(re.findall(r'^(\S+):[^\n]*\n((?:\t[^\n]*\n)+)', makefile, flags=re.M))
    assert "-e '.[test]'" not in recipes['$(BIN)/mrcnn'] and '-e .' in recipes['$(BIN)/mrcnn']
    assert "-e '.[test]'" in recipes['$(TEST_DEPS)']
    targets = dict(re.findall(r'^([\w-]+):([^\n]*)$', makefile, flags=re.M))
    assert 'test-deps' in targets['test'] and 'test-deps' in targets['lint'] and 'test-deps' in targets['test-quick']
    assert 'test-deps' not in targets['setup'] and 'setup' in targets['demo']


def test_the_readme_stays_what_a_newcomer_reads_in_two_minutes():
    assert len((ROOT / 'README.md').read_text().splitlines()) <= 300   # detail goes to docs/
