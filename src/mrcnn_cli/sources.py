"""Turning command-line sources into inputs: image files, videos, directories, globs, cameras, streams."""
import glob
import re
from pathlib import Path

from mrcnn_cli import MrcnnError

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.jp2', '.pbm', '.pgm', '.ppm'}
VIDEO_SUFFIXES = {'.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv', '.flv', '.ts'}
STREAM_PREFIXES = ('rtsp://', 'rtsps://', 'rtmp://', 'http://', 'https://', 'udp://', 'tcp://')


def is_video_file(path):
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_stream(src):
    """A camera index ('0') or a network stream URL."""
    s = str(src)
    return s.isdigit() or s.lower().startswith(STREAM_PREFIXES)


def stream_name(src):
    """A file-system-safe name for a camera or stream's output video."""
    s = str(src)
    if s.isdigit():
        return f'camera{s}'
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', s.split('://', 1)[-1]).strip('_')[:60] or 'stream'


def _is_within(path, folder):
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def _media(paths):
    return sorted(p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)


def collect_sources(sources, exclude_dir=None, warn=print):
    """(images, videos, missing): images and video files in order (directories recursively,
    sorted; globs expanded), cameras and stream URLs among the videos.  A source that does not
    exist is reported through `warn` and listed in `missing`; files under `exclude_dir` (the
    output folder) are never taken from folders or patterns."""
    exclude = Path(exclude_dir).resolve() if exclude_dir else None
    found, missing = [], []
    for src in sources:
        path = Path(src)
        if path.is_dir():
            items = _media(path.rglob('*'))
            if not items:
                warn(f'warning: no images or videos in directory {src}')
                missing.append(str(src))
        elif path.is_file():
            items = [path]
        elif is_stream(src):
            items = [str(src)]
        elif glob.has_magic(str(src)):
            items = _media(Path(p) for p in glob.glob(str(src), recursive=True))
            if not items:
                warn(f'warning: nothing matches {src}')
                missing.append(str(src))
        else:
            warn(f'warning: no such file or directory: {src}')
            missing.append(str(src))
            continue
        # files found by scanning a folder or a pattern are never taken from the output folder;
        # a file named on the command line is taken as given
        found += [p for p in items if isinstance(p, str) or path.is_file() or not (exclude and _is_within(p, exclude))]
    seen, images, videos = set(), [], []
    for p in found:
        key = p if isinstance(p, str) else p.resolve()
        if key in seen:
            continue
        seen.add(key)
        (videos if isinstance(p, str) or is_video_file(p) else images).append(p)
    if not images and not videos:
        raise MrcnnError('no input images or videos found in ' + ', '.join(map(str, sources)))
    return images, videos, missing


def output_names(paths, suffix='.jpg', used=None):
    """One output file name per input: its stem, made unique with _1, _2 ... on clashes."""
    names, used = [], set() if used is None else used
    for p in paths:
        stem = stream_name(p) if isinstance(p, str) else Path(p).stem
        name, k = stem + suffix, 0
        while name.lower() in used:
            k += 1
            name = f'{stem}_{k}{suffix}'
        used.add(name.lower())
        names.append(name)
    return names
