"""Drawing instance masks, boxes and labels on a BGR image with OpenCV."""
from __future__ import annotations

import functools
import numbers
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.ops.grid import RectGrid
from mrcnn_cli.ops.paste import MaskWindow

# Pictures of larger scenes (sliced images) are drawn on a copy at most this many pixels a side: the
# scene's preview when it was read by regions, the image shrunk when it was held whole.
PICTURE_MAX_SIDE = 4096


class Drawable(Protocol):
    """What drawing reads of a Detections (which lives a layer above)."""
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    palette: Sequence[tuple[int, int, int]] | None
    track_ids: np.ndarray | None

    def __len__(self) -> int: ...

    def mask_windows(self) -> list[MaskWindow]: ...

SEED_RGB = (255, 56, 56)   # the first class's colour; the others are chosen to differ from all before them


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB values in [0, 1]: the space where distance is seen difference."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]])
    xyz /= (0.95047, 1.0, 1.08883)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


@functools.lru_cache(maxsize=1)
def distinct_colors(count: int = 256) -> tuple[tuple[int, int, int], ...]:
    """`count` RGB colours, each as far (in L*a*b*) from every colour before it as the sRGB cube
    allows (greedy farthest-point choice), among colours that tint a mask visibly and carry black
    or white label text: mid lightness, clearly chromatic.  The first k are the same for any count,
    so a class keeps its colour."""
    levels = np.linspace(0, 255, 18)
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing='ij'), -1).reshape(-1, 3)
    lab = _srgb_to_lab(rgb / 255)
    usable = (lab[:, 0] >= 40) & (lab[:, 0] <= 88) & (np.hypot(lab[:, 1], lab[:, 2]) >= 25)
    rgb, lab = rgb[usable], lab[usable]
    first = int(np.argmin(np.abs(rgb - SEED_RGB).sum(axis=1)))
    chosen, nearest = [first], np.linalg.norm(lab - lab[first], axis=1)
    for _ in range(count - 1):
        i = int(np.argmax(nearest))
        chosen.append(i)
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[i], axis=1))
    return tuple((int(rgb[i, 0]), int(rgb[i, 1]), int(rgb[i, 2])) for i in chosen)


def class_color(label: int, palette: Sequence[Sequence[int]] | None = None) -> tuple[int, int, int]:
    """BGR colour of a class: the checkpoint's palette (RGB, as mmdetection stores it) when it has
    one, else `distinct_colors`.  A class keeps its colour across images, frames and runs."""
    if palette is not None and label < len(palette):
        r, g, b = palette[label]
    else:
        colors = distinct_colors()
        r, g, b = colors[label % len(colors)]
    return int(b), int(g), int(r)


def color_instance_map(instance_map: np.ndarray) -> np.ndarray:
    """A BGR picture of a uint16 instance map: instance k in the k-th distinct colour, background black."""
    colors = distinct_colors()
    lut = np.zeros((int(instance_map.max(initial=0)) + 1, 3), np.uint8)
    for k in range(1, len(lut)):
        lut[k] = colors[(k - 1) % len(colors)][::-1]
    return lut[instance_map]


@dataclass(frozen=True)
class DrawOptions:
    """How detections are drawn: `line_width` of boxes and outlines (default: about 1 px per 400 px
    of the image's shorter side), `mask_alpha` (0 invisible .. 1 opaque), and which parts are
    drawn (`labels=False` hides the whole label, `conf=False` only its score).  `label_size` is
    a label's height in pixels (default: 4 % of the shorter side, 16 to 32 px: what a viewer sees
    of a picture shown whole, never a banner across a large one); `max_labels` draws
    at most that many (the surest).  A label that would cover another is left out.  A value
    that cannot be drawn is one MrcnnError."""
    line_width: int | None = None
    mask_alpha: float = 0.5
    labels: bool = True
    conf: bool = True
    boxes: bool = True
    masks: bool = True
    label_size: int | None = None
    max_labels: int | None = None

    def __post_init__(self) -> None:
        for name in ('label_size', 'max_labels'):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
                raise MrcnnError(f'{name} must be a whole number >= 1 (or None), not {value!r}')
        width, alpha = self.line_width, self.mask_alpha
        if width is not None and (isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1):
            raise MrcnnError(f'line_width must be a whole number of pixels >= 1 (or None), not {width!r}')
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= float(alpha) <= 1:
            raise MrcnnError(f'mask_alpha must be between 0 (masks invisible) and 1 (opaque), not {alpha!r}')


def draw_detections(img: np.ndarray, det: Drawable, options: DrawOptions = DrawOptions()) -> np.ndarray:
    """A copy of `img` with each instance of `det` (a Detections) drawn in its class's colour as
    `options` say: the mask blended in and outlined, the box, and a 'class score' label.  Labels
    go where they cover no other label (see `place_labels`), on top of everything else."""
    line_width, mask_alpha = options.line_width, options.mask_alpha
    labels, boxes, masks = options.labels, options.boxes, options.masks
    out = img.copy()
    h, w = out.shape[:2]
    thickness = line_thickness(h, w, line_width)
    font_scale = label_font_scale(h, w, options.label_size)
    order = range(len(det) - 1, -1, -1)   # highest score drawn last, on top
    colors = instance_colors(det)
    windows = det.mask_windows()
    if masks:
        for i in order:
            win = windows[i]
            color = np.array(colors[i], dtype=np.float32)
            m = win.mask
            region = out[win.y0:win.y0 + m.shape[0], win.x0:win.x0 + m.shape[1]]
            region[m] = (region[m] * (1 - mask_alpha) + color * mask_alpha).astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(region, contours, -1, colors[i], thickness)
    corners = [tuple(int(round(v)) for v in det.boxes[i]) for i in range(len(det))]
    if boxes:
        for i in order:
            x1, y1, x2, y2 = corners[i]
            cv2.rectangle(out, (x1, y1), (x2, y2), colors[i], thickness)
    if labels and len(det):   # hide_labels hides the whole label; hide_conf only its score (as Ultralytics)
        texts, sizes, spots = label_layout(det, w, h, options)
        for i in range(len(spots) - 1, -1, -1):
            spot = spots[i]
            if spot is not None:
                _label(out, texts[i], spot, sizes[i], colors[i], font_scale)
    return out


class TrackTrails:
    """Each track's recent path, drawn behind it: the centres of its boxes over the last `length`
    frames, a line in the track's colour.  Fed every drawn frame of one video in order; a track
    unseen for `length` frames is forgotten, so memory stays bounded on a long stream."""

    def __init__(self, length: int) -> None:
        if isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < 1:
            raise MrcnnError(f'trail must be a whole number of frames >= 1, not {length!r}')
        self.length: int = int(length)
        self._frame: int = 0
        self._paths: dict[int, deque[tuple[int, int, int]]] = {}   # id -> (frame, x, y), oldest first

    def add(self, det: Drawable) -> None:
        """Record this frame's tracked boxes (untracked detections have no path)."""
        self._frame += 1
        if det.track_ids is not None:
            centres = np.rint((det.boxes[:, :2] + det.boxes[:, 2:]) / 2).astype(int).tolist()
            for track, (x, y) in zip(det.track_ids.tolist(), centres):
                self._paths.setdefault(track, deque()).append((self._frame, x, y))
        oldest = self._frame - self.length
        for track in list(self._paths):
            path = self._paths[track]
            while path and path[0][0] <= oldest:
                path.popleft()
            if not path:
                del self._paths[track]

    def draw(self, img: np.ndarray, line_width: int | None = None) -> np.ndarray:
        """`img` with every path drawn on it (in place; returned)."""
        thickness = line_thickness(img.shape[0], img.shape[1], line_width)
        for track, path in self._paths.items():
            if len(path) > 1:
                points = np.array([(x, y) for _, x, y in path], np.int32).reshape(-1, 1, 2)
                cv2.polylines(img, [points], False, class_color(track), thickness)
        return img


def line_thickness(height: int, width: int, line_width: int | None = None) -> int:
    """`line_width`, or about 1 px per 400 px of the shorter side."""
    return int(line_width) if line_width else max(1, round(min(height, width) / 400))


def instance_colors(det: Drawable) -> list[tuple[int, int, int]]:
    """BGR colour of each detection: its track's when tracked (stable for the track's life), else its class's."""
    if det.track_ids is not None:
        return [class_color(int(t)) for t in det.track_ids]
    return [class_color(int(label), det.palette) for label in det.labels]


def label_font_scale(height: int, width: int, label_size: int | None = None) -> float:
    """OpenCV's font scale for labels `label_size` px tall (by default 4 % of the shorter side,
    16 to 32 px)."""
    pixels = label_size or min(32, max(16, round(min(height, width) * 0.04)))
    return max(pixels - 3, 4) / 33   # FONT_HERSHEY_SIMPLEX: text and baseline 33 px at scale 1, and 2 px of box


def label_layout(det: Drawable, width: int, height: int, options: DrawOptions = DrawOptions(),
                 ) -> tuple[list[str], list[tuple[int, int, int]], list[tuple[int, int] | None]]:
    """Each detection's label text, its box size (width, height, baseline) and its top-left
    corner in the picture, None where it is not drawn (beyond `max_labels`, beyond what fits, or
    covering a label placed before it)."""
    font_scale = label_font_scale(height, width, options.label_size)
    ids = [''] * len(det) if det.track_ids is None else [f'id:{t} ' for t in det.track_ids.tolist()]
    texts = [ids[i] + det.classes[det.labels[i]] + (f' {det.scores[i]:.2f}' if options.conf else '')
             for i in range(len(det))]
    sizes = [_label_size(text, font_scale) for text in texts]
    shown = _labels_that_fit(sizes, width, height)
    if options.max_labels is not None:
        shown = min(shown, options.max_labels)
    spots: list[tuple[int, int] | None] = list(place_labels(det.boxes[:shown], [s[:2] for s in sizes[:shown]],
                                                            width, height))
    return texts, sizes, spots + [None] * (len(det) - shown)


MIN_LABELS = 1000   # a picture always gets this many labels (the surest detections first)


def _labels_that_fit(sizes: Sequence[tuple[int, int, int]], width: int, height: int) -> int:
    """How many labels to draw: all, unless (thousands of detections on a large image's preview)
    they would need more than a quarter of the picture; then the surest that fit, MIN_LABELS at
    least.  Beyond that labels only cover each other, and placing them costs time for nothing."""
    areas = np.cumsum([lw * lh for lw, lh, _ in sizes])
    return max(min(MIN_LABELS, len(sizes)), int(np.searchsorted(areas, width * height / 4, side='right')))


def _label_size(text: str, font_scale: float) -> tuple[int, int, int]:
    """(width, height, baseline) of a label's filled box."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    return tw + 2, th + base + 2, base


def _label_places() -> np.ndarray:
    """Where a label may go, as rows (ax, bx, ay, by): x = x1 + ax * box width + bx * label width,
    y = y1 + ay * box height + by * label height, in order of preference."""
    corners = [(ax, bx, ay, by) for ax, bx in ((0, 0), (1, -1)) for ay, by in ((0, -1), (0, 0), (1, 0), (1, -1))]
    stacked = [(0, dx, ay, by) for step in range(1, 7) for dx in (0, -0.5, 0.5)
               for ay, by in ((0, -1 - step), (1, step))]
    return np.array(corners + stacked, np.float64)


_PLACES = _label_places()


def place_labels(boxes: np.ndarray, sizes: Sequence[tuple[int, int]], width: int, height: int,
                 ) -> list[tuple[int, int] | None]:
    """The top-left corner of each label (width, height in `sizes`) of each box, in box order
    (highest score first, so the best places go to the surest detections).  Each label takes the
    first of these places that stays in the image and covers no label placed before it: above the
    box's top-left corner (where readers look first), inside it, below the box, at the right-hand
    corners, then further up or down in label-height steps (also half a label to either side);
    when every place is taken, None: the label is left out (a label covering another helps no
    reader).  As in detectron2's Visualizer, labels never leave the picture."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    lw, lh = (np.asarray([size[i] for size in sizes], np.float64).reshape(-1, 1) for i in (0, 1))
    xs = np.clip(np.round(boxes[:, :1] + _PLACES[:, 0] * (boxes[:, 2:3] - boxes[:, :1]) + _PLACES[:, 1] * lw),
                 0, np.maximum(width - lw, 0))   # (labels, places), every label's places at once
    ys = np.clip(np.round(boxes[:, 1:2] + _PLACES[:, 2] * (boxes[:, 3:4] - boxes[:, 1:2]) + _PLACES[:, 3] * lh),
                 0, np.maximum(height - lh, 0))
    placed = np.zeros((len(boxes), 4), np.float64)
    spots: list[tuple[int, int] | None] = []
    grid = RectGrid(128)   # placed labels by the cells they cover: thousands of labels stay linear
    for k in range(len(boxes)):
        best = 0
        near = grid.near(xs[k].min(), ys[k].min(), xs[k].max() + lw[k, 0], ys[k].max() + lh[k, 0])
        if near:   # only labels that can touch one of its places (the others add no overlap)
            before = placed[near]
            ix = np.minimum(xs[k, :, None] + lw[k], before[:, 2]) - np.maximum(xs[k, :, None], before[:, 0])
            iy = np.minimum(ys[k, :, None] + lh[k], before[:, 3]) - np.maximum(ys[k, :, None], before[:, 1])
            covered = (np.clip(ix, 0, None) * np.clip(iy, 0, None)).sum(axis=1)
            best = int(np.argmin(covered))   # the first free place
            if covered[best] > 0:
                spots.append(None)
                continue
        x, y = xs[k, best], ys[k, best]
        placed[k] = x, y, x + lw[k, 0], y + lh[k, 0]
        grid.add(k, *placed[k])
        spots.append((int(x), int(y)))
    return spots


def _label(out: np.ndarray, text: str, spot: tuple[int, int], size: tuple[int, int, int], color: tuple[int, int, int],
           font_scale: float) -> None:
    (x, y), (lw, lh, base) = spot, size
    cv2.rectangle(out, (x, y), (x + lw - 1, y + lh - 1), color, -1)
    luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(out, text, (x + 1, y + lh - base - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, 1, cv2.LINE_AA)
