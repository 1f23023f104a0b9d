"""`Detections`: one image's instances, which index, filter, serialise and draw themselves."""
from __future__ import annotations

import difflib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Union

import cv2
import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io import masks as mask_forms
from mrcnn_cli.io.coco import category_ids, decode_rle, encode_rle
from mrcnn_cli.io.coco_checks import segmentation_problem
from mrcnn_cli.io.files import write_image, write_text
from mrcnn_cli.io.geojson import collection_header, features, write_feature_collection
from mrcnn_cli.model.spec import DEFAULT_SCORE_THR
from mrcnn_cli.ops.paste import MaskWindow

if TYPE_CHECKING:
    import pandas as pd
    from typing_extensions import Unpack

    from mrcnn_cli.io.scene import GeoReference

# Classes to keep: a name or a 0-based index, or several of them (names and indexes may mix).
ClassSelection = Union[str, int, Iterable[Union[str, int]], None]  # noqa: UP007 - evaluated on 3.10 too
DEFAULT_PLOT_SCORE_THR = DEFAULT_SCORE_THR
MaskFormat = Literal['rle', 'polygon']   # how a COCO entry's segmentation is written


class DrawKeywords(TypedDict, total=False):
    """`Detections.plot`'s drawing options (visualize.DrawOptions' fields)."""
    line_width: int | None
    mask_alpha: float
    labels: bool
    conf: bool
    boxes: bool
    masks: bool
    label_size: int | None
    max_labels: int | None


@dataclass(frozen=True)
class Selection:
    """Which detections a call keeps: those scoring at least `score_thr`, of `classes` (names or
    0-based indexes); None keeps all."""
    score_thr: float | None = None
    classes: ClassSelection = None


def check_score_thr(score_thr: float) -> float:
    try:
        value = float(score_thr)
    except (TypeError, ValueError):
        raise MrcnnError(f'score_thr must be a number between 0 and 1, not {score_thr!r}') from None
    if not 0.0 <= value <= 1.0:
        raise MrcnnError(f'score_thr must be between 0 and 1, not {score_thr!r}')
    return value


def select_classes(selection: ClassSelection, classes: Sequence[str]) -> list[int] | None:
    """The 0-based indexes of `selection` among `classes` (None: every class).  A string is one
    class name (never its letters); an int a 0-based index.  An unknown name is one MrcnnError with
    the closest known name."""
    if selection is None:
        return None
    items = [selection] if isinstance(selection, (str, int, np.integer)) else list(selection)
    indexes = []
    for item in items:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < len(classes):
                raise MrcnnError(f'class index {item} is out of range: the model has {len(classes)} classes '
                                 f'(0 to {len(classes) - 1})')
            indexes.append(int(item))
        elif isinstance(item, str) and item in classes:
            indexes.append(classes.index(item))
        else:
            raise MrcnnError(unknown_class(item, classes))
    return list(dict.fromkeys(indexes))


def unknown_class(name: object, classes: Sequence[str]) -> str:
    """'unknown class 'preson'; did you mean 'person'?' (or the first few names when nothing is close)."""
    if not isinstance(name, str):
        return f'classes are names or 0-based indexes, not {type(name).__name__} {name!r}'
    by_lower = {c.lower(): c for c in classes}
    close = [by_lower[name.lower()]] if name.lower() in by_lower else \
        difflib.get_close_matches(name, list(classes), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(classes[:5])}, ..."
    return f"unknown class '{name}'; {hint}"


class Detections:
    """Instances of one image in original-image pixels, by decreasing score.

    >>> det = model('street.jpg')                                # doctest: +SKIP
    >>> det.boxes, det.scores, det.labels, det.class_names       # doctest: +SKIP
    >>> big = det.filter(score_thr=0.5, classes=['person'])[:10]  # doctest: +SKIP

    `boxes` (N, 4) float32 x1, y1, x2, y2; `scores` (N,) float32; `labels` (N,) int64, 0-based
    indexes into `classes`.  Masks are kept as the windows of the image they can touch (so a huge
    image costs no N full-size masks); `masks` builds the (N, H, W) bool array on access,
    `mask(i)` one (H, W) mask.
    """

    def __init__(self, boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike, windows: Sequence[MaskWindow],
                 height: int, width: int, classes: Sequence[str], palette: Sequence[tuple] | None = None):
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self._windows = list(windows)
        self.height, self.width = int(height), int(width)
        self.classes = tuple(classes)
        self.palette = palette
        # (N,) int64 identities from 1 where a tracker ran (`Predictor.track`, `with_track_ids`), else None
        self.track_ids: np.ndarray | None = None
        if not len(self.boxes) == len(self.scores) == len(self.labels) == len(self._windows):
            raise ValueError('boxes, scores, labels and masks must have one row per detection')

    @classmethod
    def empty(cls, height: int, width: int, classes: Sequence[str]) -> Detections:
        """No instances, for an image of height x width."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), [], height, width, classes)

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        counts = f': {self.summary()}' if len(self) else ''
        return f'Detections({len(self)} instances in a {self.width}x{self.height} image{counts})'

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Detections:
        """det[0], det[:10], det[det.scores > 0.5], det[[2, 0]]: a Detections of those rows."""
        if isinstance(index, (int, np.integer)):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f'detection {index} of {n}')
            index = [index % n]
        rows = np.arange(len(self))[index]
        out = Detections(self.boxes[rows], self.scores[rows], self.labels[rows],
                         [self._windows[i] for i in rows.tolist()], self.height, self.width, self.classes, self.palette)
        return out if self.track_ids is None else out.with_track_ids(self.track_ids[rows])

    def with_track_ids(self, track_ids: ArrayLike | None) -> Detections:
        """These detections with identities, one per row (what a tracker gives); this object is unchanged."""
        out = Detections(self.boxes, self.scores, self.labels, self._windows, self.height, self.width, self.classes,
                         self.palette)
        if track_ids is not None:
            out.track_ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
            if len(out.track_ids) != len(out):
                raise ValueError('track_ids must have one row per detection')
        return out

    @property
    def class_names(self) -> list[str]:
        return [self.classes[i] for i in self.labels.tolist()]

    @property
    def masks(self) -> np.ndarray:
        """(N, H, W) bool, the full-image masks (built on each access)."""
        out = np.zeros((len(self), self.height, self.width), bool)
        for i, win in enumerate(self._windows):
            win.paste_into(out[i])
        return out

    def mask(self, i: int) -> np.ndarray:
        """(H, W) bool: instance i's full-image mask."""
        return self._windows[i].paste_into(np.zeros((self.height, self.width), bool))

    def mask_windows(self) -> list[MaskWindow]:
        """Each mask as (bool window, x0, y0): the compact form writers use."""
        return list(self._windows)

    def filter(self, *, score_thr: float = 0.0, classes: ClassSelection = None) -> Detections:
        """The detections with score >= score_thr and, when given, a class among `classes`: names or
        0-based indexes, one or several (`'cat'`, `15`, `['person', 2]`)."""
        keep = self.scores >= check_score_thr(score_thr)
        indexes = select_classes(classes, self.classes)
        if indexes is not None:
            keep &= np.isin(self.labels, indexes)
        return self[keep]

    @property
    def xywh(self) -> np.ndarray:
        """(N, 4) float32 boxes as x, y (top-left), width, height: COCO's bbox."""
        out = self.boxes.copy()
        out[:, 2:] -= out[:, :2]
        return out

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        """`np.asarray(det)`: (N, 6) float32 rows of x1, y1, x2, y2, score, label (as Ultralytics'
        `boxes.data`); masks are not part of it."""
        rows = np.column_stack([self.boxes, self.scores, self.labels.astype(np.float32)]).astype(np.float32)
        return rows if dtype is None else rows.astype(dtype)

    def summary(self) -> str:
        """The class counts, most frequent first: '3 person, 1 car' ('no instances' when empty)."""
        counts = Counter(self.labels.tolist())
        order = sorted(counts, key=lambda label: (-counts[label], label))
        return ', '.join(f'{counts[label]} {self.classes[label]}' for label in order) or 'no instances'

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON types: image size, class names, and per instance its label,
        class name, score, box (x1, y1, x2, y2), mask (COCO compressed RLE of the whole image), the
        mask's area in pixels and, for tracked detections, `track_id`.  `Detections.from_dict` reads it back."""
        rles = encode_rle(self._windows, self.height, self.width)
        instances = [{'label': int(label), 'class_name': self.classes[label], 'score': float(score),
                      'box': [float(v) for v in box], 'mask': rle, 'area': area}
                     for label, score, box, (rle, area) in zip(self.labels.tolist(), self.scores, self.boxes, rles)]
        for instance, track_id in zip(instances, self._track_id_list()):
            instance['track_id'] = track_id
        return {'width': self.width, 'height': self.height, 'classes': list(self.classes), 'instances': instances}

    def _track_id_list(self) -> list[int]:
        """The identities as ints (empty when no tracker ran: zip then adds none)."""
        return [] if self.track_ids is None else self.track_ids.tolist()

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int | None = None) -> str:
        """`to_dict()` as a JSON text, also written to `path` when given (atomically)."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Detections:
        """Detections from `to_dict()`'s output (or its JSON, parsed)."""
        try:
            height, width, classes = int(data['height']), int(data['width']), tuple(data['classes'])
            instances = data['instances']
            boxes = np.array([i['box'] for i in instances], np.float32).reshape(-1, 4)
            problem = next(filter(None, (segmentation_problem(i['mask'], (height, width)) for i in instances)), None)
            if problem:   # checked before pycocotools' decoder sees it
                raise ValueError(problem)
            windows = [_window_of(decode_rle(i['mask'])) for i in instances]
            tracked = bool(instances) and all('track_id' in i for i in instances)
            det = cls(boxes, [i['score'] for i in instances], [i['label'] for i in instances], windows,
                      height, width, classes)
            return det.with_track_ids([i['track_id'] for i in instances]) if tracked else det
        except (KeyError, TypeError, ValueError) as e:
            raise MrcnnError(f'not a Detections dict ({type(e).__name__}: {e})') from None

    @classmethod
    def from_json(cls, text: str) -> Detections:
        return cls.from_dict(json.loads(text))

    def to_pandas(self) -> pd.DataFrame:
        """A pandas DataFrame, one row per instance: class_name, label, score, x1, y1, x2, y2 and the
        mask's area (pandas is optional: `pip install pandas`)."""
        try:
            import pandas as pd
        except ImportError:
            raise MrcnnError('to_pandas needs pandas: pip install pandas') from None
        areas = [int(w.mask.sum()) for w in self._windows]
        return pd.DataFrame({'class_name': self.class_names, 'label': self.labels, 'score': self.scores,
                             'x1': self.boxes[:, 0], 'y1': self.boxes[:, 1], 'x2': self.boxes[:, 2],
                             'y2': self.boxes[:, 3], 'area': np.asarray(areas, np.int64)})

    def to_coco(self, image_id: int = 1, *, mask_format: MaskFormat = 'rle') -> list[dict]:
        """Official COCO results entries, one per detection: image_id, category_id (COCO's official
        ids for COCO's classes, else 1..N), bbox [x, y, w, h], score, segmentation and the mask's
        area.  `mask_format='rle'`: compressed RLE with counts a str, which
        `pycocotools.COCO.loadRes` takes as it is; 'polygon': COCO polygons (flat x, y lists, one
        per outer contour; polygons cannot express holes).  Tracked detections add `track_id`."""
        if mask_format not in ('rle', 'polygon'):
            raise MrcnnError(f"mask_format must be 'rle' or 'polygon', not {mask_format!r}")
        cat_ids = category_ids(self.classes)
        if mask_format == 'rle':
            segms = encode_rle(self._windows, self.height, self.width)
        else:
            segms = [(mask_forms.mask_polygons(w), int(w.mask.sum())) for w in self._windows]
        out = []
        for i, (segm, area) in enumerate(segms):
            x1, y1, x2, y2 = (float(v) for v in self.boxes[i])
            out.append({'image_id': int(image_id), 'category_id': int(cat_ids[self.labels[i]]),
                        'bbox': [x1, y1, x2 - x1, y2 - y1], 'score': float(self.scores[i]),
                        'segmentation': segm, 'area': area})
        for entry, track_id in zip(out, self._track_id_list()):
            entry['track_id'] = track_id
        return out

    def to_geojson(self, *, georef: GeoReference | None = None, name: str = '') -> dict[str, Any]:
        """A GeoJSON FeatureCollection: one (Multi)Polygon with holes per detection, tracing its
        mask's pixel edges (so its area is the mask's pixel count), with id, class and score; in
        pixel coordinates, or through a GeoTIFF's `georef` (StreamItem.scene.georef) in its map
        coordinates, the CRS named."""
        return {**collection_header(name, self.width, self.height, georef),
                'features': list(self._features(georef))}

    def save_geojson(self, path: str | os.PathLike, *, georef: GeoReference | None = None) -> Path:
        """`to_geojson()` written to `path`, feature by feature (atomically)."""
        write_feature_collection(path, collection_header(Path(path).stem, self.width, self.height, georef),
                                 self._features(georef))
        return Path(path)

    def _features(self, georef: GeoReference | None) -> Iterator[dict[str, Any]]:
        return features(self._windows, self.labels.tolist(), self.scores.tolist(), self.classes, georef)

    def resize(self, width: int, height: int) -> Detections:
        """These detections on the image resized to width x height (boxes scaled, masks resized
        nearest-neighbour): how a picture of a large image is drawn on a shrunk copy."""
        fx, fy = width / self.width, height / self.height
        windows = []
        for win in self._windows:
            h, w = win.mask.shape
            x0, y0 = int(win.x0 * fx), int(win.y0 * fy)
            x1 = min(max(x0 + 1, int(np.ceil((win.x0 + w) * fx))), width)
            y1 = min(max(y0 + 1, int(np.ceil((win.y0 + h) * fy))), height)
            if h == 0 or w == 0 or x1 <= x0 or y1 <= y0:
                windows.append(MaskWindow(np.zeros((0, 0), bool), min(x0, width), min(y0, height)))
                continue
            small = cv2.resize(win.mask.view(np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
            windows.append(MaskWindow(small.astype(bool), x0, y0))
        boxes = self.boxes * np.array([fx, fy, fx, fy], np.float32)
        return Detections(boxes, self.scores, self.labels, windows, height, width, self.classes,
                          self.palette).with_track_ids(self.track_ids)

    def instance_map(self) -> np.ndarray:
        """(H, W) uint16: 0 background, k for detection k - 1 (where masks overlap, the higher score)."""
        return mask_forms.instance_map(self._windows, self.height, self.width)

    def class_map(self) -> np.ndarray:
        """(H, W) of each pixel's category id (as in `to_coco`), 0 background; uint8 when the ids fit."""
        return mask_forms.class_map(self.instance_map(), [category_ids(self.classes)[i] for i in self.labels.tolist()])

    def to_yolo(self, *, conf: bool = False) -> list[str]:
        """Ultralytics segmentation label lines (`class x1 y1 x2 y2 ...`, 0-based class, the outer
        contour normalised to [0, 1]); with `conf` the score is appended."""
        return mask_forms.yolo_lines(self._windows, self.labels, self.scores, self.height, self.width, conf)

    def crop(self, image: np.ndarray, i: int) -> np.ndarray:
        """Detection i's box region of `image` as BGRA, alpha 255 inside its mask."""
        self._check_image(image)
        return mask_forms.rgba_crop(image, self.boxes[i], self._windows[i])

    def save_masks(self, folder: str | os.PathLike, stem: str) -> list[Path]:
        """FOLDER/STEM.png (16-bit instance map), FOLDER/STEM_color.png (the same map in colour, for
        viewers: a 16-bit map of small numbers looks black), FOLDER/STEM_class.png (category ids)
        and FOLDER/STEM/<k>_<class>.png (one 0/255 mask per detection, k from 1, zero-padded to
        three digits or more so that the files sort)."""
        from mrcnn_cli.visualize import color_instance_map
        folder = Path(folder)
        inst = self.instance_map()
        cat_ids = [category_ids(self.classes)[i] for i in self.labels.tolist()]
        paths = [write_image(folder / f'{stem}.png', inst),
                 write_image(folder / f'{stem}_color.png', color_instance_map(inst)),
                 write_image(folder / f'{stem}_class.png', mask_forms.class_map(inst, cat_ids))]
        for k, name in enumerate(self.class_names, 1):
            mask = self.mask(k - 1).astype(np.uint8) * 255
            paths.append(write_image(folder / stem / f'{self._number(k)}_{mask_forms.safe_name(name)}.png', mask))
        return paths

    def _number(self, k: int) -> str:
        """k zero-padded to the width of the largest number here (three digits at least)."""
        return f'{k:0{max(3, len(str(len(self))))}d}'

    def save_txt(self, path: str | os.PathLike, *, conf: bool = False) -> Path:
        """The YOLO label lines (see `to_yolo`) as a text file."""
        lines = self.to_yolo(conf=conf)
        write_text(path, ''.join(line + '\n' for line in lines))
        return Path(path)

    def save_crops(self, image: np.ndarray, folder: str | os.PathLike, stem: str) -> list[Path]:
        """FOLDER/<class>/STEM_<k>.png: each detection's box region as an RGBA PNG, its mask as alpha
        (k from 1, zero-padded as in `save_masks`)."""
        return [write_image(Path(folder) / mask_forms.safe_name(name) / f'{stem}_{self._number(k)}.png',
                            self.crop(image, k - 1))
                for k, name in enumerate(self.class_names, 1)]

    def _check_image(self, image: np.ndarray) -> None:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            what = f'{image.dtype} {image.shape}' if isinstance(image, np.ndarray) else type(image).__name__
            raise MrcnnError(f'need the image as a BGR uint8 HxWx3 array (as cv2.imread gives), not {what}')
        if image.shape[:2] != (self.height, self.width):
            raise MrcnnError(f'image is {image.shape[1]}x{image.shape[0]}, detections are for '
                             f'{self.width}x{self.height}')

    def plot(self, image: np.ndarray, *, score_thr: float = DEFAULT_PLOT_SCORE_THR,
             **draw: Unpack[DrawKeywords]) -> np.ndarray:
        """A BGR uint8 copy of `image` (BGR, as cv2.imread gives) with the detections scoring at
        least `score_thr` drawn (0.3, what `mrcnn predict` draws; 0 draws all): masks blended in
        with `mask_alpha`, boxes, and 'class score' labels placed so that they do not cover each
        other (one that would is left out).  `labels=False` hides the labels, `conf=False` only
        their scores; `line_width` defaults to about 1 px per 400 px of the image's shorter side,
        `label_size` (a label's height, px) to 4 % of it, 16 to 32 px; `max_labels` labels only the
        surest that many (the fields of visualize.DrawOptions, by name)."""
        from mrcnn_cli.visualize import DrawOptions, draw_detections
        unknown = sorted(set(draw) - set(DrawKeywords.__annotations__))
        if unknown:
            raise TypeError(f'plot() got an unexpected keyword argument {unknown[0]!r}')
        options = DrawOptions(**draw)
        self._check_image(image)
        shown = self.filter(score_thr=score_thr) if score_thr else self
        return draw_detections(image, shown, options)


def _window_of(mask: np.ndarray) -> MaskWindow:
    """The smallest window holding every pixel of a full-image mask (an empty one at 0, 0)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return MaskWindow(np.zeros((0, 0), bool), 0, 0)
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return MaskWindow(mask[y0:y1, x0:x1].astype(bool), int(x0), int(y0))
