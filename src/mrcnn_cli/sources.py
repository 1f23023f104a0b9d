"""Turning command-line sources (files, directories, glob patterns) into a list of images."""
import glob
from pathlib import Path

from mrcnn_cli import MrcnnError

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.jp2', '.pbm', '.pgm', '.ppm'}


def _is_within(path, folder):
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def collect_images(sources, exclude_dir=None, warn=print):
    """Image paths in order: files as given, directories recursively (sorted), globs expanded.

    A source that does not exist is reported through `warn` and counted in the returned
    list of missing sources; files under `exclude_dir` (the output folder) are never inputs.
    """
    exclude = Path(exclude_dir).resolve() if exclude_dir else None
    images, missing = [], []
    for src in sources:
        path = Path(src)
        if path.is_dir():
            found = sorted(p for p in path.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            found = [path]
        elif glob.has_magic(str(src)):
            found = sorted(Path(p) for p in glob.glob(str(src), recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                warn(f'warning: no images match {src}')
                missing.append(src)
        else:
            warn(f'warning: no such file or directory: {src}')
            missing.append(src)
            continue
        if path.is_dir() and not found:
            warn(f'warning: no images in directory {src}')
            missing.append(src)
        images += [p for p in found if not (exclude and _is_within(p, exclude))]
    seen = set()
    unique = [p for p in images if not (p.resolve() in seen or seen.add(p.resolve()))]
    if not unique:
        raise MrcnnError('no input images found in ' + ', '.join(map(str, sources)))
    return unique, missing


def output_names(paths, suffix='.jpg'):
    """One output file name per input: its stem, made unique with _1, _2 ... on clashes."""
    names, used = [], set()
    for p in paths:
        name, k = p.stem + suffix, 0
        while name.lower() in used:
            k += 1
            name = f'{p.stem}_{k}{suffix}'
        used.add(name.lower())
        names.append(name)
    return names
