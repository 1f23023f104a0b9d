"""Synthetic tracking sequences with exact ground truth, made from real COCO instances.

Instances are cut out of COCO val2017 photos with their annotated masks and moved over another
real photo along known paths; the ground truth of each frame is what is visible of each object
after the ones in front of it are drawn (so it is non-overlapping, as MOTS requires), written as
KITTI MOTS txt (car 1, pedestrian 2).  `detections_from_truth` turns the ground truth into what a
decent detector would give: masks eroded or dilated by a pixel or two, scores jittered, some
detections dropped and a few false positives added."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, lru_cache

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.io.coco import COCO_CLASSES
from mrcnn_cli.ops.paste import MaskWindow

from conftest import SHARED

COCO = SHARED / 'data' / 'coco_mini_val2017'
# Paths are laid out on a 480 x 320 plan and drawn SCALE times larger: objects a few hundred pixels
# tall, whose masks a pixel or two of erosion still leave at IoU ~0.95 with their truth (HOTA averages
# over IoU thresholds up to 0.95, so smaller cut-outs could not show a tracker's own quality).
SCALE = 2.5
WIDTH, HEIGHT = int(480 * SCALE), int(320 * SCALE)
BACKGROUND = '000000155341.jpg'
# (annotation id, height on the plan): solid shapes, whose masks keep IoU >= 0.95 with their truth
# after two pixels of erosion or dilation at this size
PEOPLE = ((1294413, 120), (1747514, 120), (444656, 120), (2161544, 120))
CARS = ((345637, 80), (139801, 80))
MOTS_CLASS = {'person': 2, 'car': 1}


@dataclass(frozen=True)
class Cutout:
    """An instance cut out of its photo: BGR pixels and its mask, the same size."""
    name: str          # COCO class
    image: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class Mover:
    """One object of a sequence: `path(t)` its top-left corner at frame t (None: not in the scene)."""
    track_id: int
    cutout: Cutout
    path: object


@lru_cache(maxsize=1)
def _annotations():
    data = json.loads((COCO / 'annotations' / 'instances_val2017.json').read_text())
    images = {im['id']: im for im in data['images']}
    names = {c['id']: c['name'] for c in data['categories']}
    return {a['id']: (a, images[a['image_id']], names[a['category_id']]) for a in data['annotations']}


@cache
def cutout(annotation_id: int, height: int) -> Cutout:
    ann, image_info, name = _annotations()[annotation_id]
    image = cv2.imread(str(COCO / 'val2017' / image_info['file_name']))
    h, w = image.shape[:2]
    mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann['segmentation'], h, w))).astype(bool)
    x, y, bw, bh = (int(round(v)) for v in ann['bbox'])
    crop, crop_mask = image[y:y + bh, x:x + bw], mask[y:y + bh, x:x + bw]
    height = round(height * SCALE)
    size = (max(1, round(bw * height / bh)), height)
    return Cutout(name, cv2.resize(crop, size, interpolation=cv2.INTER_AREA),
                  cv2.resize(crop_mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool))


@lru_cache(maxsize=1)
def background() -> np.ndarray:
    return cv2.resize(cv2.imread(str(COCO / 'val2017' / BACKGROUND)), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def linear(x0, y0, vx, vy, start=0, stop=None):
    """A constant-velocity path (px per frame), in the scene from `start` to `stop` (exclusive)."""
    def at(t):
        if t < start or (stop is not None and t >= stop):
            return None
        return x0 + vx * (t - start), y0 + vy * (t - start)
    return at


def turning(x0, y0, v, turn_at):
    """Right at v px per frame, then down from frame `turn_at`."""
    def at(t):
        if t < turn_at:
            return x0 + v * t, y0
        return x0 + v * turn_at, y0 + v * (t - turn_at)
    return at


def person(k):
    return cutout(*PEOPLE[k])


def car(k):
    return cutout(*CARS[k])


# each sequence: (frames, movers back to front); the first four have no occlusion
SEQUENCES = {
    'constant': lambda: (40, [Mover(1, person(0), linear(20, 40, 4, 1)), Mover(2, car(0), linear(300, 200, -3, 0))]),
    'turn': lambda: (40, [Mover(1, person(1), turning(30, 20, 5, 20)), Mover(2, person(2), linear(380, 150, -2, 0))]),
    'border': lambda: (40, [Mover(1, car(1), linear(-150, 200, 8, 0)), Mover(2, person(3), linear(200, -130, 0, 4)),
                            Mover(3, person(0), linear(400, 20, 4, 0))]),
    'side_by_side': lambda: (40, [Mover(1, person(0), linear(40, 100, 4, 1)),
                                  Mover(2, person(0), linear(40 + person(0).mask.shape[1] / SCALE + 2, 100, 4, 1))]),
    'crossing': lambda: (40, [Mover(1, person(1), linear(20, 90, 8, 0)), Mover(2, person(2), linear(380, 100, -8, 0))]),
    'occlusion': lambda: (40, [Mover(1, cutout(PEOPLE[3][0], 70), linear(220, 130, 0, 0)),
                               Mover(2, car(0), linear(0, 120, 7, 0))]),
}
NO_OCCLUSION = ('constant', 'turn', 'border', 'side_by_side')


@dataclass
class Sequence:
    name: str
    frames: list[np.ndarray]
    truth: list[list[tuple[int, str, np.ndarray]]]   # per frame: (track id, class, visible full-frame mask)


@lru_cache(maxsize=1)   # the last one (a sequence's frames and masks take a few hundred MB)
def render(name: str) -> Sequence:
    """The frames and per-frame visible masks of sequence `name` (objects drawn back to front)."""
    length, movers = SEQUENCES[name]()
    frames, truth = [], []
    for t in range(length):
        frame, owner = background().copy(), np.zeros((HEIGHT, WIDTH), np.int32)
        for mover in movers:
            where = mover.path(t)
            if where is None:
                continue
            _paste(frame, owner, mover, int(round(where[0] * SCALE)), int(round(where[1] * SCALE)))
        frames.append(frame)
        truth.append([(m.track_id, m.cutout.name, owner == m.track_id) for m in movers
                      if (owner == m.track_id).sum() >= 100])
    return Sequence(name, frames, truth)


def _paste(frame, owner, mover, x, y):
    img, mask = mover.cutout.image, mover.cutout.mask
    h, w = mask.shape
    fx0, fy0, fx1, fy1 = max(x, 0), max(y, 0), min(x + w, WIDTH), min(y + h, HEIGHT)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    m = mask[fy0 - y:fy1 - y, fx0 - x:fx1 - x]
    frame[fy0:fy1, fx0:fx1][m] = img[fy0 - y:fy1 - y, fx0 - x:fx1 - x][m]
    owner[fy0:fy1, fx0:fx1][m] = mover.track_id


def mots_text(seq: Sequence) -> str:
    """The ground truth as KITTI MOTS txt (ids class * 1000 + object, as KITTI MOTS numbers them)."""
    lines = []
    for t, objects in enumerate(seq.truth):
        for track_id, name, mask in objects:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            lines.append(f'{t} {MOTS_CLASS[name] * 1000 + track_id} {MOTS_CLASS[name]} {HEIGHT} {WIDTH} '
                         f'{rle["counts"].decode()}')
    return ''.join(line + '\n' for line in lines)


def detections_from_truth(seq: Sequence, seed: int = 0, drop: float = 0.1, false_positives: int = 4,
                          max_steps: int = 2) -> list[Detections]:
    """Per frame, what a decent detector would give for the ground truth (see the module docstring)."""
    rng = np.random.default_rng(seed)
    fp_frames = set(rng.choice(len(seq.frames), size=false_positives, replace=False).tolist())
    out = []
    kernel = np.ones((3, 3), np.uint8)
    for t, objects in enumerate(seq.truth):
        masks, labels, scores = [], [], []
        for _, name, mask in objects:
            if rng.random() < drop:
                continue
            steps = int(rng.integers(1, max_steps + 1))
            m = mask.astype(np.uint8)
            change = cv2.erode if rng.random() < 0.5 else cv2.dilate
            m = change(m, kernel, iterations=steps)
            if m.sum() < 10:
                continue
            masks.append(m.astype(bool))
            labels.append(COCO_CLASSES.index(name))
            scores.append(float(rng.uniform(0.55, 0.98)))
        if t in fp_frames:   # a false positive: a small blob somewhere, a person
            m = np.zeros((HEIGHT, WIDTH), bool)
            x, y = int(rng.integers(0, WIDTH - 70)), int(rng.integers(0, HEIGHT - 120))
            m[y:y + 120, x:x + 70] = True
            masks.append(m)
            labels.append(COCO_CLASSES.index('person'))
            scores.append(float(rng.uniform(0.5, 0.8)))
        out.append(detections_of_masks(masks, labels, scores))
    return out


def detections_of_masks(masks, labels, scores) -> Detections:
    boxes, windows = [], []
    for m in masks:
        ys, xs = np.nonzero(m)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        boxes.append([x0, y0, x1, y1])
        windows.append(MaskWindow(m[y0:y1, x0:x1], int(x0), int(y0)))
    order = np.argsort(-np.asarray(scores, np.float32), kind='stable')
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4)[order], np.asarray(scores)[order],
                      np.asarray(labels)[order], [windows[i] for i in order], HEIGHT, WIDTH, COCO_CLASSES)
