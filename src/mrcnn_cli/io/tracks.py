"""The files tracking tools read: MOTS txt (KITTI MOTS / MOTSChallenge) and YouTube-VIS results JSON.

MOTS txt: one line per object per frame, `frame id class_id height width rle` (frame from 0,
`rle` the counts string of COCO's compressed RLE), masks non-overlapping as TrackEval requires:
where two masks claim a pixel the higher score keeps it.  class_id is KITTI MOTS's for its two
classes (car 1, pedestrian 2: COCO's person) and 100 + the COCO category id for every other class,
which TrackEval's MOTS datasets leave out.

MOT txt (MOTChallenge's results format, boxes): `frame,id,left,top,width,height,score,-1,-1,-1`
with frames from 1, for the person class only: MOTChallenge scores pedestrians and its results
files name no class.

YouTube-VIS results: one entry per track, `video_id`, `category_id`, `score` (the mean of its
detections'), `segmentations` (one RLE per frame of the video, null where the track is absent)."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.coco import decode_rle
from mrcnn_cli.io.coco_checks import segmentation_problem
from mrcnn_cli.io.files import atomic_path, write_text
from mrcnn_cli.io.images import MAX_PIXELS

KITTI_CLASS_IDS = {'car': 1, 'person': 2, 'pedestrian': 2}
MOT_CLASSES = ('person', 'pedestrian')   # MOTChallenge scores pedestrians; its results files carry no class
OTHER_CLASS_BASE = 100


def mots_class_id(name: str, category_id: int) -> int:
    return KITTI_CLASS_IDS.get(name, OTHER_CLASS_BASE + category_id)


@dataclass
class TrackedFrame:
    """One frame's tracked instances as a results log holds them."""
    frame_index: int
    height: int
    width: int
    instances: list[dict[str, Any]]   # track_id, category_id, score, segmentation (RLE or polygons)


def segmentation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a COCO segmentation: an RLE (io.coco's decoder), or polygons."""
    if isinstance(segmentation, dict):
        return decode_rle(segmentation)
    if not segmentation:
        return np.zeros((height, width), bool)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))).astype(bool)


def non_overlapping(frame: TrackedFrame) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(instance, its RLE with the pixels a higher-scoring instance claims removed), by decreasing
    score; instances left with no pixel are dropped."""
    order = sorted(frame.instances, key=lambda i: -i['score'])
    claimed = np.zeros((frame.height, frame.width), bool)
    out = []
    for instance in order:
        mask = segmentation_mask(instance['segmentation'], frame.height, frame.width) & ~claimed
        if not mask.any():
            continue
        claimed |= mask
        out.append((instance, mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))))
    return out


def mots_line(frame: TrackedFrame, instance: dict[str, Any], counts: str, class_names: dict[int, str]) -> str:
    """One MOTS txt line (see the module docstring), `counts` the instance's non-overlapping RLE."""
    category = instance['category_id']
    return (f'{frame.frame_index} {instance["track_id"]} {mots_class_id(class_names.get(category, ""), category)} '
            f'{frame.height} {frame.width} {counts}')


def mot_line(frame: TrackedFrame, instance: dict[str, Any]) -> str:
    """One MOTChallenge results line: frame from 1, id, box left, top, width, height, score, -1 x 3."""
    left, top, width, height = instance['bbox']
    return (f'{frame.frame_index + 1},{instance["track_id"]},{left:.2f},{top:.2f},{width:.2f},{height:.2f},'
            f'{instance["score"]:.4f},-1,-1,-1')


@dataclass
class _Track:
    category_id: int
    scores: list[float] = field(default_factory=list)
    segmentations: dict[int, dict[str, Any]] = field(default_factory=dict)


def write_track_files(records: Iterable[dict[str, Any]], folder: str | os.PathLike, stems: dict[int, str],
                      class_names: dict[int, str]) -> list[Path]:
    """FOLDER/mots/<stem>.txt and FOLDER/mot/<stem>.txt for each tracked video of a results log (its
    records, in order) and FOLDER/ytvis.json for them all (video_id 1, 2, ... in input order).  One
    frame's masks are in memory at a time for the MOTS files; the YouTube-VIS document holds every
    track's RLEs (it is one JSON document).  Each file is written atomically."""
    folder = Path(folder)
    paths, entries = [], []
    for video_id, (index, group) in enumerate(groupby(frames_of_log(records), key=lambda f: f[0]), 1):
        path, boxes_path = folder / 'mots' / f'{stems[index]}.txt', folder / 'mot' / f'{stems[index]}.txt'
        tracks: dict[int, _Track] = {}
        length = 0
        with atomic_path(path) as tmp, open(tmp, 'w') as f, atomic_path(boxes_path) as boxes_tmp, \
                open(boxes_tmp, 'w') as boxes:
            for _, frame in group:
                length = max(length, frame.frame_index + 1)
                boxes.writelines(mot_line(frame, inst) + '\n' for inst in frame.instances
                                 if class_names.get(inst['category_id']) in MOT_CLASSES)
                for inst, rle in non_overlapping(frame):
                    counts = rle['counts'].decode()
                    f.write(mots_line(frame, inst, counts, class_names) + '\n')
                    track = tracks.setdefault(inst['track_id'], _Track(inst['category_id']))
                    track.scores.append(float(inst['score']))
                    track.segmentations[frame.frame_index] = {'size': [frame.height, frame.width], 'counts': counts}
        paths += [path, boxes_path]
        entries += [{'video_id': video_id, 'category_id': t.category_id, 'score': float(np.mean(t.scores)),
                     'segmentations': [t.segmentations.get(i) for i in range(length)], 'track_id': track_id}
                    for track_id, t in sorted(tracks.items())]
    if paths:
        write_text(folder / 'ytvis.json', json.dumps(entries))
        paths.append(folder / 'ytvis.json')
    return paths


@dataclass(frozen=True)
class MotsObject:
    frame: int
    track_id: int
    class_id: int
    rle: dict[str, Any]


MAX_MOTS_FRAME = 100_000   # a frame number beyond this is taken as a broken file (an hour of video at 30 fps)


def read_mots(path: str | os.PathLike) -> list[MotsObject]:
    """A MOTS txt file's objects; a malformed line is one MrcnnError naming the file and line: not
    six fields, not integers, a frame number beyond MAX_MOTS_FRAME, an image size other than the
    file's first or larger than mrcnn reads, a mask that is not a compressed RLE covering exactly
    its image (what pycocotools' decoder needs to be safe)."""
    objects: list[MotsObject] = []
    for where, line in numbered_lines(path, 'MOTS txt'):
        objects.append(_mots_object(where, line, objects[0].rle['size'] if objects else None))
    return objects


def numbered_lines(path: str | os.PathLike, what: str) -> Iterator[tuple[str, str]]:
    """('FILE, line N', line) for each line of a text file that is not blank; a file that cannot be
    read, or is not text, is one MrcnnError."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise MrcnnError(f'{path} is not a {what} file (not text)') from None
    except OSError as e:
        raise MrcnnError(f'cannot read {path}: {e.strerror or e}') from None
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield f'{path}, line {number}', line


def mots_frame_problem(objects: Iterable[MotsObject]) -> str | None:
    """Why a MOTS file's frames break MOTS's rules (an id twice in a frame, masks that overlap), or None."""
    by_frame: dict[int, list[MotsObject]] = {}
    for o in objects:
        by_frame.setdefault(o.frame, []).append(o)
    for frame, found in sorted(by_frame.items()):
        ids = [o.track_id for o in found]
        if len(set(ids)) != len(ids):
            return f'frame {frame} has id {next(i for i in ids if ids.count(i) > 1)} twice'
        union = found[0].rle
        for o in found[1:]:
            if mask_utils.area(mask_utils.merge([union, o.rle], intersect=True)):
                return f'in frame {frame} the mask of id {o.track_id} overlaps another (MOTS masks do not overlap)'
            union = mask_utils.merge([union, o.rle], intersect=False)
    return None


def _mots_object(where: str, line: str, size: list[int] | None) -> MotsObject:
    fields = line.split()
    if len(fields) != 6:
        raise MrcnnError(f'{where}: not a MOTS line (frame id class_id height width rle: 6 fields, '
                         f'not {len(fields)})')
    try:
        frame, track_id, class_id, height, width = (int(v) for v in fields[:5])
    except ValueError:
        raise MrcnnError(f'{where}: frame, id, class_id, height and width must be integers') from None
    if not 0 <= frame <= MAX_MOTS_FRAME or height <= 0 or width <= 0:
        raise MrcnnError(f'{where}: frame must be 0 to {MAX_MOTS_FRAME} and the image size positive')
    if size is not None and [height, width] != size:
        raise MrcnnError(f'{where}: a {width}x{height} image; the file\'s first line says {size[1]}x{size[0]}')
    if height * width > MAX_PIXELS:
        raise MrcnnError(f'{where}: a {width}x{height} image is larger than {MAX_PIXELS} pixels')
    problem = segmentation_problem({'size': [height, width], 'counts': fields[5]})
    if problem:
        raise MrcnnError(f'{where}: {problem}')
    return MotsObject(frame, track_id, class_id, {'size': [height, width], 'counts': fields[5].encode()})


@dataclass(frozen=True)
class MotBox:
    """One line of a MOTChallenge box file (frames from 1; `class_id` -1 in results files)."""
    frame: int
    track_id: int
    box: tuple[float, float, float, float]   # left, top, width, height
    confidence: float
    class_id: int


def read_mot(path: str | os.PathLike) -> list[MotBox]:
    """A MOTChallenge box file's lines (`frame,id,left,top,width,height,conf[,class,visibility,...]`);
    a malformed line is one MrcnnError naming the file and line."""
    return [_mot_box(where, line) for where, line in numbered_lines(path, 'MOTChallenge txt')]


def _mot_box(where: str, line: str) -> MotBox:
    fields = [f.strip() for f in line.split(',')]
    if len(fields) < 7:
        raise MrcnnError(f'{where}: not a MOTChallenge line (frame,id,left,top,width,height,conf[,class,visibility]: '
                         f'7 fields or more, not {len(fields)})')
    try:
        values = [float(v) for v in fields[:9]]
    except ValueError:
        raise MrcnnError(f'{where}: the fields must be numbers') from None
    if not all(math.isfinite(v) for v in values):
        raise MrcnnError(f'{where}: the fields must be finite numbers')
    frame, track_id, left, top, width, height, confidence = values[:7]
    if frame != int(frame) or not 1 <= frame <= MAX_MOTS_FRAME + 1 or track_id != int(track_id):
        raise MrcnnError(f'{where}: frame must be a whole number from 1 to {MAX_MOTS_FRAME + 1}, id a whole number')
    if width < 0 or height < 0:
        raise MrcnnError(f'{where}: width and height must not be negative')
    class_id = int(values[7]) if len(values) > 7 else -1
    return MotBox(int(frame), int(track_id), (left, top, width, height), confidence, class_id)


def mot_frame_problem(boxes: Iterable[MotBox]) -> str | None:
    """Why a MOTChallenge file breaks its rules (an id twice in a frame), or None."""
    seen = set()
    for b in boxes:
        if (b.frame, b.track_id) in seen:
            return f'frame {b.frame} has id {b.track_id} twice'
        seen.add((b.frame, b.track_id))
    return None


def frames_of_log(records: Iterable[dict[str, Any]]) -> Iterator[tuple[int, TrackedFrame]]:
    """(source index, frame) for each video frame record of a results log, its tracked instances."""
    for record in records:
        if 'frame_index' not in record or 'annotations' not in record:
            continue
        instances = [a for a in record['annotations'] if 'track_id' in a]
        yield record['source_index'], TrackedFrame(record['frame_index'], record['height'], record['width'],
                                                   instances)
