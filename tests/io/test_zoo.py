import csv
import hashlib
from pathlib import Path

import pytest

from mrcnn_cli import MrcnnError
from mrcnn_cli.io import zoo

from conftest import SHARED


def published_rows():
    with open(SHARED / 'data' / 'mmdet_mask_rcnn_zoo.tsv') as f:
        return list(csv.DictReader(f, delimiter='\t'))


def test_all_published_rows_are_named_models():
    rows = published_rows()
    entries = {e.name: e for e in zoo.entries()}
    assert len(rows) == 21 and len(entries) == 21
    for r in rows:
        e = entries[r['name']]
        assert (e.url, e.sha256_prefix, e.box_ap, e.mask_ap, e.style) == (
            r['url'], r['sha256_prefix'], float(r['box_ap']), float(r['mask_ap']), r['style'])
        assert e.filename.endswith(f"-{r['sha256_prefix']}.pth")


def test_unknown_name_suggests_the_closest():
    with pytest.raises(MrcnnError, match="did you mean 'mask-rcnn_r50_fpn_1x_coco'"):
        zoo.get_entry('mask-rcnn_r50_fpn_1x')


def _entry_for(tmp_path, payload, prefix=None):
    src = tmp_path / 'remote.pth'
    src.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    base = zoo.get_entry('mask-rcnn_r50_fpn_1x_coco')
    return zoo.ZooEntry(**{**base.__dict__, 'url': src.as_uri(), 'sha256_prefix': prefix or digest[:8]})


def test_download_checks_sha256_and_writes_atomically(tmp_path):
    entry = _entry_for(tmp_path, b'checkpoint bytes')
    dest = zoo.download(entry, tmp_path / 'w', progress=False)
    assert dest.read_bytes() == b'checkpoint bytes' and dest.name == 'remote.pth'
    assert zoo.ensure_downloaded(entry, tmp_path / 'w') == dest
    bad = _entry_for(tmp_path, b'tampered', prefix='00000000')
    with pytest.raises(MrcnnError, match='checksum mismatch'):
        zoo.download(bad, tmp_path / 'v', progress=False)
    assert list((tmp_path / 'v').iterdir()) == []


def test_offline_download_says_how_to_use_a_local_file(tmp_path):
    from mrcnn_cli.errors import command_line_voice
    base = zoo.get_entry('mask-rcnn_r50_fpn_1x_coco')
    entry = zoo.ZooEntry(**{**base.__dict__, 'url': 'http://127.0.0.1:9/x.pth'})
    with pytest.raises(MrcnnError, match=r"load\('mask-rcnn_r50_fpn_1x_coco', weights='PATH/"):
        zoo.download(entry, tmp_path, progress=False, timeout=5)     # to a program: Python
    with command_line_voice(), pytest.raises(MrcnnError, match=r'--model mask-rcnn_r50_fpn_1x_coco --weights'):
        zoo.download(entry, tmp_path, progress=False, timeout=5)     # at the command line: flags
    assert list(tmp_path.iterdir()) == []


def test_the_default_weights_folder_is_the_checkouts_and_else_the_cache(monkeypatch, tmp_path):
    monkeypatch.delenv('MRCNN_WEIGHTS_DIR', raising=False)
    root = Path(__file__).resolve().parents[2]
    assert zoo.checkout_root(zoo.__file__) == root          # this checkout (an editable install)
    assert zoo.default_weights_dir() == root / 'weights'
    installed = tmp_path / 'lib' / 'site-packages' / 'mrcnn_cli' / 'io' / 'zoo.py'   # as pip installs it
    installed.parent.mkdir(parents=True)
    (tmp_path / 'lib' / 'pyproject.toml').write_text('[project]\nname = "mrcnn-cli"\n')
    assert zoo.checkout_root(installed) is None
    other = tmp_path / 'other' / 'src' / 'mrcnn_cli' / 'io' / 'zoo.py'                  # another project's src/
    other.parent.mkdir(parents=True)
    (tmp_path / 'other' / 'pyproject.toml').write_text('[project]\nname = "something-else"\n')
    assert zoo.checkout_root(other) is None
    monkeypatch.setattr(zoo, 'checkout_root', lambda _: None)
    assert zoo.default_weights_dir() == Path.home() / '.cache' / 'mrcnn' / 'weights'


def test_weights_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv('MRCNN_WEIGHTS_DIR', str(tmp_path))
    assert zoo.local_path(zoo.get_entry('mask-rcnn_r50_fpn_1x_coco')).parent == tmp_path


def test_a_file_already_in_the_weights_dir_is_verified_on_first_use_and_after_changes(tmp_path, monkeypatch):
    entry = _entry_for(tmp_path, b'published bytes')
    weights = tmp_path / 'w'
    weights.mkdir()
    dest = weights / entry.filename
    dest.write_bytes(b'published bytes')                 # copied in by hand: never checked so far
    assert zoo.ensure_downloaded(entry, weights) == dest
    record = weights / f'.{entry.filename}.verified'
    assert record.exists()
    calls, real = [], zoo.file_sha256
    monkeypatch.setattr(zoo, 'file_sha256', lambda p: calls.append(p) or real(p))
    zoo.ensure_downloaded(entry, weights)             # unchanged: the remembered digest is enough
    assert calls == []
    dest.write_bytes(b'half-copied byt')              # same size, new mtime: hashed again, refused
    with pytest.raises(MrcnnError, match=r'does not match the published checksum .*`mrcnn zoo download'):
        zoo.ensure_downloaded(entry, weights)
    assert len(calls) == 1
    other = _entry_for(tmp_path, b'x')
    (weights / other.filename).write_bytes(b'replaced')   # a different file under the zoo name
    with pytest.raises(MrcnnError, match='does not match the published checksum'):
        zoo.ensure_downloaded(other, weights)
