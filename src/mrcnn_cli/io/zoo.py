"""mmdetection's Mask R-CNN model zoo: names, architectures, download with checksum."""
import csv
import difflib
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mrcnn_cli.errors import MrcnnError, speaking_to_command_line
from mrcnn_cli.io.files import file_sha256
from mrcnn_cli.model.spec import ModelSpec


@dataclass(frozen=True)
class ZooEntry:
    name: str
    table: str
    backbone: str
    style: str
    schedule: str
    box_ap: float
    mask_ap: float
    fps_v100: str
    sha256_prefix: str
    url: str

    @property
    def filename(self):
        return self.url.rsplit('/', 1)[-1]

    @property
    def spec(self):
        m = re.match(r'([RX])-(\d+)(?:-(\d+)x(\d+)d)?', self.backbone)
        depth = int(m.group(2))
        groups, width = (int(m.group(3)), int(m.group(4))) if m.group(1) == 'X' else (1, 64)
        return ModelSpec(depth=depth, groups=groups, width_per_group=width, style=self.style)


def entries():
    text = resources.files('mrcnn_cli').joinpath('data', 'zoo.tsv').read_text()
    rows = csv.DictReader((line for line in text.splitlines() if not line.startswith('#')), delimiter='\t')
    return [ZooEntry(r['name'], r['table'], r['backbone'], r['style'], r['lr_schedule'],
                     float(r['box_ap']), float(r['mask_ap']), r['inf_fps_v100'], r['sha256_prefix'], r['url'])
            for r in rows]


def get_entry(name):
    by_name = {e.name: e for e in entries()}
    if name in by_name:
        return by_name[name]
    close = difflib.get_close_matches(name, by_name, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else '; `mrcnn zoo list` shows the names'
    raise MrcnnError(f"unknown model '{name}'{hint}")


def default_weights_dir():
    """MRCNN_WEIGHTS_DIR, else `weights/` of the source checkout, else ~/.cache/mrcnn/weights."""
    if os.environ.get('MRCNN_WEIGHTS_DIR'):
        return Path(os.environ['MRCNN_WEIGHTS_DIR'])
    checkout = checkout_root(Path(__file__))
    if checkout is not None and (checkout / 'weights').is_dir():
        return checkout / 'weights'
    return Path.home() / '.cache' / 'mrcnn' / 'weights'


def checkout_root(module_file):
    """The source checkout a module file lies in (src/mrcnn_cli/... under a folder whose
    pyproject.toml is mrcnn's), or None for an installed package."""
    package = Path(module_file).resolve().parent
    while package.name != 'mrcnn_cli' and package != package.parent:
        package = package.parent
    root = package.parent.parent
    if package.parent.name != 'src' or not (root / 'pyproject.toml').is_file():
        return None
    try:
        return root if 'name = "mrcnn-cli"' in (root / 'pyproject.toml').read_text() else None
    except OSError:
        return None


def local_path(entry, weights_dir=None):
    return Path(weights_dir or default_weights_dir()) / entry.filename


def download(entry, weights_dir=None, progress=True, timeout=30):
    """Fetch the checkpoint to the weights dir, check its sha256 prefix, rename into place."""
    from tqdm import tqdm
    dest = local_path(entry, weights_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + '.part')
    try:
        with urllib.request.urlopen(entry.url, timeout=timeout) as resp, open(tmp, 'wb') as f:
            total = int(resp.headers.get('Content-Length') or 0) or None
            with tqdm(total=total, unit='B', unit_scale=True, unit_divisor=1024, desc=entry.name,
                      disable=None if progress else True) as bar:   # None: off when not a terminal
                for block in iter(lambda: resp.read(1 << 20), b''):
                    f.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, 'reason', None) or e
        local = (f'--model {entry.name} --weights PATH/{entry.filename}' if speaking_to_command_line()
                 else f"load('{entry.name}', weights='PATH/{entry.filename}')")
        raise MrcnnError(f'cannot download {entry.name} ({reason}); offline? pass a local file instead: '
                         f'{local}') from None
    digest = file_sha256(tmp)
    if not digest.startswith(entry.sha256_prefix):
        tmp.unlink(missing_ok=True)
        raise MrcnnError(f'{entry.name}: checksum mismatch (sha256 {digest[:8]}..., expected '
                         f'{entry.sha256_prefix}...); the download was discarded')
    os.replace(tmp, dest)
    _record_path(dest).unlink(missing_ok=True)
    return dest


def ensure_downloaded(entry, weights_dir=None):
    """The entry's checkpoint in the weights dir, downloaded if missing, checksum-verified either way."""
    path = local_path(entry, weights_dir)
    if not path.exists():
        return download(entry, weights_dir)
    verify_local(entry, path)
    return path


def download_state(entry, weights_dir=None):
    """'yes' for a file in the weights dir that matches its published checksum (hashed once, then
    remembered), 'bad checksum' for one that does not, '-' for none."""
    path = local_path(entry, weights_dir)
    if not path.exists():
        return '-'
    try:
        verify_local(entry, path)
    except MrcnnError:
        return 'bad checksum'
    return 'yes'


def _record_path(path):
    return path.with_name(f'.{path.name}.verified')


def verify_local(entry, path):
    """Check a file already in the weights dir against the sha256 prefix in its published name.

    Hashing a checkpoint takes a while, so the result is remembered beside the file (size, mtime and
    digest); it is checked again whenever the size or mtime change (a file copied over or
    replaced)."""
    stat = path.stat()
    record = _record_path(path)
    try:
        seen = json.loads(record.read_text())
        if seen == {'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns, 'sha256': seen.get('sha256')} \
                and str(seen['sha256']).startswith(entry.sha256_prefix):
            return
    except (OSError, ValueError, TypeError, KeyError):
        pass
    digest = file_sha256(path)
    if not digest.startswith(entry.sha256_prefix):
        raise MrcnnError(f'{path} does not match the published checksum of {entry.name} (sha256 {digest[:8]}..., '
                         f'expected {entry.sha256_prefix}...): a partial copy or another file; delete it and run '
                         f'`mrcnn zoo download {entry.name}`')
    try:
        tmp = record.with_name(record.name + f'.{os.getpid()}')
        tmp.write_text(json.dumps({'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns, 'sha256': digest}))
        os.replace(tmp, record)
    except OSError:
        pass   # a read-only weights dir: verified now, verified again next time
