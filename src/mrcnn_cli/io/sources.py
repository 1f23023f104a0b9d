"""Turning what a user names into inputs: image files, videos, directories, globs, cameras,
stream URLs and in-memory arrays, in the order given."""
import glob
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import numpy as np

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.fetch import fetch_url, is_http_url
from mrcnn_cli.io.images import MAX_PIXELS, as_bgr, decode_image, read_image, too_large

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.jp2', '.pbm', '.pgm', '.ppm'}
VIDEO_SUFFIXES = {'.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv', '.flv', '.ts'}
STREAM_PREFIXES = ('rtsp://', 'rtsps://', 'rtmp://', 'http://', 'https://', 'udp://', 'tcp://')


class SourceKind(str, Enum):
    """What a Source is; equal to its name as a str ('video'), as StreamItem.kind shows it."""
    IMAGE = 'image'        # an image file
    VIDEO = 'video'        # a video file
    CAMERA = 'camera'      # a camera index
    STREAM = 'stream'      # a network stream (rtsp, rtmp, http)
    ARRAY = 'array'        # an image in memory (numpy; tensors and PIL images converted)
    ENCODED = 'bytes'      # an encoded image in memory
    URL = 'url'            # an image to fetch over http(s)
    FRAMES = 'frames'      # the image files of a folder or pattern as the frames of one video (tracking)

    def __str__(self):
        return self.value


IMAGE, VIDEO, CAMERA, STREAM, ARRAY, ENCODED, URL, FRAMES = SourceKind
SEQUENCE_FPS = 30.0   # the frame rate of a frame sequence's annotated video and of its tracker
CHANNELS = ('bgr', 'rgb')
ACCEPTED = ('inputs are paths (str or pathlib.Path: files, folders, glob patterns, videos), http(s) URLs, camera '
            'indexes, encoded image bytes, binary file objects, numpy arrays (BGR uint8), PIL images, torch tensors '
            '(CHW RGB) or lists of these')


@dataclass(frozen=True, eq=False)
class Source:
    """One input: `kind` (image, video, camera, stream, array, bytes, url), `location` (a Path, a
    URL, a camera index, an array or encoded bytes), `name` (how outputs and JSON refer to it)
    and, for arrays, the order of their colour `channels`."""
    kind: SourceKind
    location: object = field(repr=False)
    name: str = ''
    channels: str = 'bgr'

    @property
    def is_video(self):
        return self.kind in (VIDEO, CAMERA, STREAM, FRAMES)


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


def collect_sources(sources, exclude_dir=None, warn=None, *, images_only=False, unique=True, channels='bgr',
                    sequences=False):
    """(sources, missing): one Source per input in the order given (directories recursively and
    sorted, globs expanded, each file once unless `unique` is False).  An input is a path (str or
    os.PathLike), a folder, a glob pattern, a video, a camera index, a stream or image URL, encoded
    image bytes or a binary file object, a numpy array (BGR, or RGB with channels='rgb'), a
    PIL.Image, a torch tensor (CHW RGB, uint8 or float in [0, 1]; NCHW for several), or a list of
    these.  A source that does not exist is reported through `warn` and listed in `missing`; files
    under `exclude_dir` (the output folder) are never taken from folders or patterns.
    `images_only`: every input must give images (what `predict` returns one Detections each for);
    an http(s) URL is then an image to fetch whatever its name.  `sequences`: the image files a
    folder or pattern names are the frames of one video, in sorted order (a FRAMES source, what
    tracking reads); its videos stay their own.  Raises MrcnnError when nothing is left, or for an
    input of a type not listed."""
    if channels not in CHANNELS:
        raise MrcnnError(f"channels must be 'bgr' or 'rgb', not {channels!r}")
    if not isinstance(sources, (list, tuple)):
        sources = [sources]
    exclude = Path(exclude_dir).resolve() if exclude_dir else None
    found, missing = [], []

    def note(message, src):
        if warn is not None:
            warn(message)
        missing.append(str(src))

    for i, src in enumerate(sources):
        in_memory = in_memory_sources(src, i, channels)
        if in_memory is not None:
            found += in_memory
            continue
        if isinstance(src, int) and not isinstance(src, bool):
            src = str(src)
        if not isinstance(src, (str, os.PathLike)):
            raise MrcnnError(f'cannot read a {type_name(src)} as an image: {ACCEPTED}')
        named = _named_sources(src, exclude, note, images_only)
        found += as_sequence(named, os.fspath(src)) if sequences else named
    if images_only:
        _check_images_only(found)
    if unique:
        found = _unique(found)
    if not found:
        raise MrcnnError('no input images or videos found in ' + ', '.join(
            str(s) if isinstance(s, (str, os.PathLike, int)) else f'<{type(s).__name__}>' for s in sources))
    return found, missing


def _named_sources(src, exclude, note, images_only):
    """The Sources a name stands for: a folder's or a pattern's media files, a file, a URL, a camera."""
    text = os.fspath(src)
    if is_http_url(text) and (images_only or _looks_like_image(text)):
        return [Source(URL, text, redact_url(text))]
    path = Path(text)
    if path.is_dir():
        items = [p for p in _media(path.rglob('*')) if not (exclude and _is_within(p, exclude))]
        if not items:
            note(f'warning: no images or videos in directory {src}', src)
        return [_file_source(p) for p in items]
    if path.is_file():   # a file named on the command line is taken as given
        return [_file_source(path)]
    if is_stream(text):
        return [Source(CAMERA if text.isdigit() else STREAM, text, redact_url(text))]
    if glob.has_magic(text):
        items = [p for p in _media(Path(p) for p in glob.glob(text, recursive=True))
                 if not (exclude and _is_within(p, exclude))]
        if not items:
            note(f'warning: nothing matches {src}', src)
        return [_file_source(p) for p in items]
    note(f'warning: no such file or directory: {src}', src)
    return []


def as_sequence(sources, name):
    """`sources` (what one name stands for) with its image files joined into one FRAMES source."""
    images = [s.location for s in sources if s.kind == IMAGE]
    if len(images) < 2:
        return sources
    return [Source(FRAMES, tuple(images), name)] + [s for s in sources if s.kind != IMAGE]


def type_name(obj):
    """'float', 'pandas.DataFrame': a type as a user would write it."""
    module = type(obj).__module__
    return type(obj).__qualname__ if module == 'builtins' else f'{module.split(".")[0]}.{type(obj).__qualname__}'


def _check_images_only(found):
    videos = [s for s in found if s.is_video]
    if videos:
        raise MrcnnError(f'{videos[0].name} is a {"video" if videos[0].kind == VIDEO else videos[0].kind}: predict '
                         'gives one Detections per image; use stream() for videos, cameras and streams')


def _unique(found):
    seen, unique = set(), []
    for s in found:
        key = s.location.resolve() if isinstance(s.location, Path) else id(s.location) \
            if s.kind in (ARRAY, ENCODED) else s.location
        if key not in seen:
            seen.add(key)
            unique.append(s)
    return unique


def _looks_like_image(url):
    return Path(urlsplit(url).path).suffix.lower() in IMAGE_SUFFIXES


def in_memory_sources(src, index=0, channels='bgr'):
    """Sources for an input held in memory (arrays, tensors, PIL images, bytes, file objects), named
    by their kind and position in the input list (`array3`, `tensor0[1]`), or None for anything
    else.  Tensors and PIL images are converted here, in the caller's thread."""
    if isinstance(src, np.ndarray):
        if src.ndim == 4:   # N x H x W x C: one image each
            return [Source(ARRAY, img, f'array{index}[{j}]', channels) for j, img in enumerate(src)]
        return [Source(ARRAY, src, f'array{index}', channels)]
    if isinstance(src, (bytes, bytearray, memoryview)):
        return [Source(ENCODED, bytes(src), f'bytes{index}')]
    if _is_torch_tensor(src):
        images = tensor_images(src, f'tensor{index}')
        return [Source(ARRAY, img, f'tensor{index}[{j}]' if src.dim() == 4 else f'tensor{index}')
                for j, img in enumerate(images)]
    if _is_pil_image(src):
        return [Source(ARRAY, pil_image_bgr(src), f'pil{index}')]
    if callable(getattr(src, 'read', None)):   # a binary file object: read now, in the caller's thread
        data = src.read()
        if not isinstance(data, (bytes, bytearray)):
            raise MrcnnError(f'file{index}: a file object opened in text mode; open it with "rb"')
        label = getattr(src, 'name', None)
        return [Source(ENCODED, bytes(data), label if isinstance(label, str) else f'file{index}')]
    return None


def _is_torch_tensor(obj):
    return type(obj).__module__.split('.')[0] == 'torch' and hasattr(obj, 'dim') and hasattr(obj, 'dtype')


def _is_pil_image(obj):
    return type(obj).__module__.split('.')[0] == 'PIL' and hasattr(obj, 'convert') and hasattr(obj, 'mode')


def tensor_images(tensor, name):
    """BGR uint8 HxWx3 arrays from a torch tensor as torchvision reads images: CHW (or NCHW) RGB,
    uint8, or float in [0, 1] (scaled as torchvision's `to_dtype(..., scale=True)`); 1 channel is grey."""
    import torch
    t = tensor.detach()
    if t.dim() not in (3, 4) or t.shape[-3] not in (1, 3) or 0 in t.shape:
        raise MrcnnError(f'{name}: need a CHW tensor (or NCHW), 1 or 3 channels, RGB as torchvision reads '
                         f'images, not shape {tuple(t.shape)}')
    if t.dtype == torch.uint8:
        pass
    elif t.is_floating_point():
        lo, hi = (float(v) for v in t.float().aminmax())   # not empty: refused above
        if lo != lo or hi != hi or lo < 0.0 or hi > 1.0:
            raise MrcnnError(f'{name}: a float image tensor must hold values in [0, 1], not [{lo:g}, {hi:g}]')
        # torchvision's float -> uint8: 256 equal bins over [0, 1], so that uint8 / 255 comes back exactly
        t = (t.float() * (256 - 1e-3)).floor_().to(torch.uint8)
    else:
        raise MrcnnError(f'{name}: need a uint8 or float image tensor, not {t.dtype}')
    t = t.cpu()
    if t.dim() == 3:
        t = t[None]
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    return [np.ascontiguousarray(img.flip(0).permute(1, 2, 0).numpy()) for img in t]


def pil_image_bgr(img):
    """A PIL image of any mode as BGR uint8 (converted through PIL's own RGB conversion, pixels as
    they are: PIL does not apply the EXIF orientation)."""
    rgb = img if img.mode == 'RGB' else img.convert('RGB')
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


def output_names(sources, suffix_of, used=None):
    """One output file name per Source: its stem (an image URL's file name; a stream's name) with
    `suffix_of(source)`, made unique with _1, _2 ... on clashes (case-insensitively).  A file whose
    output name is its own name keeps it whatever its place in the list (x.bmp never takes x.png's
    name)."""
    used = set() if used is None else used
    wanted = [(_output_stem(s), suffix_of(s)) for s in sources]
    names = [''] * len(sources)
    own = [i for i, (s, (stem, suffix)) in enumerate(zip(sources, wanted))
           if s.kind == IMAGE and stem + suffix == Path(s.location).name]
    mine = set(own)
    for i in own + [i for i in range(len(sources)) if i not in mine]:
        stem, suffix = wanted[i]
        name, k = stem + suffix, 0
        while name.lower() in used:
            k += 1
            name = f'{stem}_{k}{suffix}'
        used.add(name.lower())
        names[i] = name
    return names


def _output_stem(s):
    if s.kind in (IMAGE, VIDEO):
        return Path(s.location).stem
    if s.kind in (CAMERA, STREAM):
        return stream_name(s.location)
    if s.kind == FRAMES:   # a folder's name, or the pattern made a file name
        return Path(s.name).name if Path(s.name).is_dir() else stream_name(s.name)
    if s.kind == URL:   # http://host/a.jpg?x=1 -> a
        return file_path(s).stem or 'url'
    return s.name


def file_path(src: Source) -> Path:
    """The file a Source names: its path, or for an image URL the URL's path (no host, no query)."""
    return Path(urlsplit(str(src.location)).path if src.kind == URL else str(src.location))


def read_source_image(src: Source, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The BGR uint8 image of a still-image Source: a file read, bytes decoded, a URL fetched and
    decoded, an array taken as it is (or converted from grey, BGRA or RGB)."""
    if src.kind == IMAGE:
        return read_image(src.location, max_pixels)
    if src.kind == ARRAY:
        img = as_bgr(cast(np.ndarray, src.location), src.name, src.channels)
        if img.shape[0] * img.shape[1] > max_pixels:
            raise too_large(src.name, img.shape[1], img.shape[0], max_pixels)
        return img
    data = fetch_url(str(src.location), src.name) if src.kind == URL else src.location
    return decode_image(data, src.name, max_pixels)
