"""Output files that are complete or absent: written under a temporary name, renamed when done."""
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from mrcnn_cli.errors import MrcnnError, first_line


def cannot_write(path, exc):
    return MrcnnError(f'cannot write {path}: {getattr(exc, "strerror", None) or exc}')


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    A crash, Ctrl-C or a full disk never leaves a half-written output under the final name; a
    failure to write is one MrcnnError naming the file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.stem}.', suffix=path.suffix or '.tmp', dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise cannot_write(path, e) from None
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get ordinary permissions
        os.replace(tmp, path)
    except OSError as e:
        raise cannot_write(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj))


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_image(path, img):
    """An image file in the format its suffix names (PNG keeps 16-bit and alpha), atomically."""
    import cv2
    ok, data = cv2.imencode(Path(path).suffix or '.png', img)
    if not ok:
        raise cannot_write(path, 'OpenCV could not encode the image')
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())
    return Path(path)


def read_json(path, what):
    """A JSON file's content, or one MrcnnError line saying what is wrong with it."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise MrcnnError(f'{what} not found: {path}') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MrcnnError(f'{path}: not valid JSON ({e})') from None
    except RecursionError:
        raise MrcnnError(f'{path}: not valid JSON (nested too deeply)') from None
    except ValueError as e:   # e.g. an integer of more digits than Python converts
        raise MrcnnError(f'{path}: not valid JSON ({first_line(e)})') from None
    except OSError as e:
        raise MrcnnError(f'cannot read {path}: {e.strerror or e}') from None


def file_sha256(path, chunk=1 << 20):
    """The SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


# The first field of an ONNX ModelProto as exporters write it: ir_version (field 1, a varint),
# then another of ModelProto's fields (opset_import, producer_name, graph, ...).
_ONNX_NEXT_TAGS = {0x12, 0x1a, 0x22, 0x28, 0x32, 0x3a, 0x42, 0x72, 0xa2, 0xaa}


def model_file_kind(path):
    """'onnx' for an ONNX model, 'checkpoint' for a PyTorch checkpoint (torch.save's zip or legacy
    pickle), 'openvino' for an OpenVINO IR (.xml, as `mrcnn export --int8` writes), told by the
    file's first bytes; None for anything else or an unreadable file."""
    try:
        with open(path, 'rb') as f:
            head = f.read(512)
    except OSError:
        return None
    if head.startswith(b'PK\x03\x04') or head[:1] == b'\x80':
        return 'checkpoint'
    if head.lstrip().startswith(b'<?xml') and b'<net ' in head:
        return 'openvino'
    if len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] < 0x80 and head[2] in _ONNX_NEXT_TAGS:
        return 'onnx'
    return None
