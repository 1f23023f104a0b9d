"""Output files that are complete or absent: written under a temporary name, renamed when done."""
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from mrcnn_cli.errors import MrcnnError


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    A crash or Ctrl-C never leaves a half-written output under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.stem}.', suffix=path.suffix or '.tmp', dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get ordinary permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj))


def read_json(path, what):
    """A JSON file's content, or one MrcnnError line saying what is wrong with it."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise MrcnnError(f'{what} not found: {path}') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MrcnnError(f'{path}: not valid JSON ({e})') from None
