"""`Detections`: one image's instances, which index, filter, serialise and draw themselves."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io import masks as mask_forms
from mrcnn_cli.io.coco import category_ids, encode_rle
from mrcnn_cli.io.files import write_image, write_text
from mrcnn_cli.ops.paste import MaskWindow


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

    def __init__(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, windows: Sequence[MaskWindow],
                 height: int, width: int, classes: Sequence[str], palette: Sequence[tuple] | None = None):
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self._windows = list(windows)
        self.height, self.width = int(height), int(width)
        self.classes = tuple(classes)
        self.palette = palette
        if not len(self.boxes) == len(self.scores) == len(self.labels) == len(self._windows):
            raise ValueError('boxes, scores, labels and masks must have one row per detection')

    @classmethod
    def empty(cls, height: int, width: int, classes: Sequence[str]) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), [], height, width, classes)

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        return f'Detections({len(self)} instances in a {self.width}x{self.height} image)'

    def __getitem__(self, index) -> Detections:
        """det[0], det[:10], det[det.scores > 0.5], det[[2, 0]]: a Detections of those rows."""
        if isinstance(index, (int, np.integer)):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f'detection {index} of {n}')
            index = [index % n]
        rows = np.arange(len(self))[index]
        return Detections(self.boxes[rows], self.scores[rows], self.labels[rows],
                          [self._windows[i] for i in rows.tolist()], self.height, self.width, self.classes,
                          self.palette)

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

    def filter(self, *, score_thr: float = 0.0, classes: Iterable[str] | None = None) -> Detections:
        """The detections with score >= score_thr and, when given, a class among `classes`."""
        keep = self.scores >= score_thr
        if classes is not None:
            names = list(classes)
            unknown = [c for c in names if c not in self.classes]
            if unknown:
                raise MrcnnError(f"unknown class {unknown[0]!r} (known: {', '.join(self.classes[:5])}, ...)")
            keep &= np.isin(self.labels, [self.classes.index(c) for c in names])
        return self[keep]

    def to_coco(self, image_id: int = 1, *, mask_format: str = 'rle') -> list[dict]:
        """Official COCO results entries, one per detection: image_id, category_id (COCO's official
        ids for COCO's classes, else 1..N), bbox [x, y, w, h], score, segmentation and the mask's
        area.  `mask_format='rle'`: compressed RLE with counts a str, which
        `pycocotools.COCO.loadRes` takes as it is; 'polygon': COCO polygons (flat x, y lists, one
        per outer contour; polygons cannot express holes)."""
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
        return out

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

    def save_masks(self, folder, stem: str) -> list[Path]:
        """FOLDER/STEM.png (16-bit instance map), FOLDER/STEM_class.png (category ids) and
        FOLDER/STEM/<k>_<class>.png (one 0/255 mask per detection, k from 1)."""
        folder = Path(folder)
        inst = self.instance_map()
        cat_ids = [category_ids(self.classes)[i] for i in self.labels.tolist()]
        paths = [write_image(folder / f'{stem}.png', inst),
                 write_image(folder / f'{stem}_class.png', mask_forms.class_map(inst, cat_ids))]
        for k, name in enumerate(self.class_names, 1):
            mask = self.mask(k - 1).astype(np.uint8) * 255
            paths.append(write_image(folder / stem / f'{k}_{mask_forms.safe_name(name)}.png', mask))
        return paths

    def save_txt(self, path, *, conf: bool = False) -> Path:
        """The YOLO label lines (see `to_yolo`) as a text file."""
        lines = self.to_yolo(conf=conf)
        write_text(path, ''.join(line + '\n' for line in lines))
        return Path(path)

    def save_crops(self, image: np.ndarray, folder, stem: str) -> list[Path]:
        """FOLDER/<class>/STEM_<k>.png: each detection's box region as an RGBA PNG, its mask as alpha."""
        return [write_image(Path(folder) / mask_forms.safe_name(name) / f'{stem}_{k}.png', self.crop(image, k - 1))
                for k, name in enumerate(self.class_names, 1)]

    def _check_image(self, image):
        if image.shape[:2] != (self.height, self.width):
            raise MrcnnError(f'image is {image.shape[1]}x{image.shape[0]}, detections are for '
                             f'{self.width}x{self.height}')

    def plot(self, image: np.ndarray, **options) -> np.ndarray:
        """A BGR uint8 copy of `image` with masks, boxes and 'class score' labels drawn; keyword
        options as `mrcnn_cli.visualize.draw_detections`."""
        from mrcnn_cli.visualize import draw_detections
        self._check_image(image)
        return draw_detections(image, self, **options)
