"""Turning what a user names into inputs: image files, videos, directories, globs, cameras,
stream URLs and in-memory arrays, in the order given."""
import glob
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrcnn_cli.errors import MrcnnError

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.jp2', '.pbm', '.pgm', '.ppm'}
VIDEO_SUFFIXES = {'.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv', '.flv', '.ts'}
STREAM_PREFIXES = ('rtsp://', 'rtsps://', 'rtmp://', 'http://', 'https://', 'udp://', 'tcp://')
IMAGE, VIDEO, CAMERA, STREAM, ARRAY = 'image', 'video', 'camera', 'stream', 'array'


@dataclass(frozen=True, eq=False)
class Source:
    """One input: `kind` (image, video, camera, stream, array), `location` (a Path, a URL, a camera
    index or a BGR array) and `name` (how outputs and JSON refer to it)."""
    kind: str
    location: object
    name: str

    @property
    def is_video(self):
        return self.kind in (VIDEO, CAMERA, STREAM)


def is_video_file(path):
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_stream(src):
    """A camera index ('0') or a network stream URL."""
    s = str(src)
    return s.isdigit() or s.lower().startswith(STREAM_PREFIXES)


def redact_url(url):
    """A stream URL with its password replaced by *** (what outputs and messages may show)."""
    from urllib.parse import urlsplit, urlunsplit
    try:
        parts = urlsplit(str(url))
        if parts.password is None:
            return str(url)
        host = parts.hostname or ''
        netloc = f'{parts.username}:***@{host}' + (f':{parts.port}' if parts.port else '')
    except ValueError:   # an unparsable port: hide everything before the host
        head, _, rest = str(url).partition('://')
        return f'{head}://***@{rest.rsplit("@", 1)[-1]}' if '@' in rest else str(url)
    return urlunsplit(parts._replace(netloc=netloc))


def stream_name(src):
    """A file-system-safe name for a camera or stream's output video (never its password)."""
    s = redact_url(src)
    if s.isdigit():
        return f'camera{s}'
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', s.split('://', 1)[-1]).strip('_')[:60] or 'stream'


def list_images(folder, limit=None):
    """Image files under `folder` (recursively), sorted."""
    paths = sorted(p for p in Path(folder).rglob('*') if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return paths[:limit] if limit else paths


def _is_within(path, folder):
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def _media(paths):
    return sorted(p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)


def _file_source(path):
    return Source(VIDEO if is_video_file(path) else IMAGE, path, str(path))


def collect_sources(sources, exclude_dir=None, warn=None):
    """(sources, missing): one Source per input in the order given (directories recursively and
    sorted, globs expanded, each file once).  A source that does not exist is reported through
    `warn` and listed in `missing`; files under `exclude_dir` (the output folder) are never taken
    from folders or patterns.  Raises MrcnnError when nothing is left."""
    if isinstance(sources, (str, Path, np.ndarray, int)):
        sources = [sources]
    exclude = Path(exclude_dir).resolve() if exclude_dir else None
    found, missing = [], []

    def note(message, src):
        if warn is not None:
            warn(message)
        missing.append(str(src))

    for i, src in enumerate(sources):
        if isinstance(src, Source):   # already resolved
            found.append(src)
            continue
        if isinstance(src, np.ndarray):
            found.append(Source(ARRAY, src, f'array{i}'))
            continue
        if isinstance(src, int) and not isinstance(src, bool):
            src = str(src)
        path = Path(src)
        if path.is_dir():
            items = [p for p in _media(path.rglob('*')) if not (exclude and _is_within(p, exclude))]
            if not items:
                note(f'warning: no images or videos in directory {src}', src)
            found += [_file_source(p) for p in items]
        elif path.is_file():   # a file named on the command line is taken as given
            found.append(_file_source(path))
        elif is_stream(src):
            found.append(Source(CAMERA if str(src).isdigit() else STREAM, str(src), redact_url(src)))
        elif glob.has_magic(str(src)):
            items = [p for p in _media(Path(p) for p in glob.glob(str(src), recursive=True))
                     if not (exclude and _is_within(p, exclude))]
            if not items:
                note(f'warning: nothing matches {src}', src)
            found += [_file_source(p) for p in items]
        else:
            note(f'warning: no such file or directory: {src}', src)
    seen, unique = set(), []
    for s in found:
        key = s.location.resolve() if isinstance(s.location, Path) else id(s.location) if s.kind == ARRAY \
            else s.location
        if key not in seen:
            seen.add(key)
            unique.append(s)
    if not unique:
        raise MrcnnError('no input images or videos found in ' + ', '.join(
            '<array>' if isinstance(s, np.ndarray) else str(s) for s in sources))
    return unique, missing


def output_names(sources, suffix_of, used=None):
    """One output file name per Source: its stem (or the stream's name) with `suffix_of(source)`,
    made unique with _1, _2 ... on clashes (case-insensitively)."""
    names, used = [], set() if used is None else used
    for s in sources:
        stem = Path(s.location).stem if s.kind in (IMAGE, VIDEO) else stream_name(s.location) \
            if s.kind in (CAMERA, STREAM) else s.name
        suffix = suffix_of(s)
        name, k = stem + suffix, 0
        while name.lower() in used:
            k += 1
            name = f'{stem}_{k}{suffix}'
        used.add(name.lower())
        names.append(name)
    return names
