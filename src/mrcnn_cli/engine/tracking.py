"""Identities over time: one tracker per video or frame sequence gives each detection a track id.

ByteTrack as roboflow's `trackers` implements it (its Kalman tracklets, id allocation and track
lifecycle), with mrcnn's own association step: the library scores a track against a detection
by box IoU only, and boxes of objects that overlap heavily (a crowd, parked cars) are where
identities get swapped.  With `association='mask'` a track is scored by the IoU of its last
mask, moved to where the Kalman filter predicts its box, with the detection's mask; both are
compared on their crop-local windows only, never on full frames.  Tracks are class-aware: a
track only takes detections of its own class.

The tracker runs on the frames the model ran on (`vid_stride`); frame times tell its Kalman
filter how far to predict across skipped frames."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.errors import MrcnnError, warn
from mrcnn_cli.io.coco import category_ids
from mrcnn_cli.ops.paste import MaskWindow, window_intersection

if TYPE_CHECKING:
    from mrcnn_cli.engine.pipeline import StreamItem

TRACKERS = ('bytetrack', 'botsort')
ASSOCIATIONS = ('mask', 'box')
DEFAULT_FPS = 30.0          # cameras and streams that declare no frame rate
TRACKERS_VERSION = '2.6.1'   # mrcnn's association step uses this version's tracklets and lifecycle
INSTALL_HINT = (f"pip install 'mrcnn-cli[track]' && pip install --no-deps trackers=={TRACKERS_VERSION} (--no-deps: "
                'trackers would add opencv-python beside the headless OpenCV mrcnn uses)')


@dataclass(frozen=True)
class TrackOptions:
    """How detections become tracks.

    `track_thr`: detections scoring at least this are matched first and may start a track; lower
    ones (down to the stream's score_thr) only continue tracks (ByteTrack's second stage).
    `match_thr`: the least IoU (mask or box, `association`) that matches a detection to a track.
    `tracker='botsort'` is the library's BoT-SORT as it is: box IoU after camera-motion
    compensation (sparse optical flow on the frames), class-agnostic, no filling in.
    `buffer`: how long a lost track waits to be found again, in frames at 30 fps (as ByteTrack
    counts; scaled to the video's frame rate).  `min_hits`: consecutive frames before a new
    object gets an id (on a sequence's first frame every detection above track_thr gets one).
    `fill`: a track the detector misses is still reported for up to this many frames, its last
    mask moved to where the Kalman filter predicts it (with its last score); 0 reports detected
    objects only."""
    tracker: str = 'bytetrack'
    association: str | None = None   # bytetrack: mask; botsort: box (its own, camera-motion compensated)
    track_thr: float = 0.5
    match_thr: float = 0.1
    buffer: int = 30
    min_hits: int = 2
    fill: int = 2

    def checked(self) -> TrackOptions:
        if self.tracker not in TRACKERS:
            raise MrcnnError(f"unknown tracker {self.tracker!r}; choose from {', '.join(TRACKERS)}")
        if self.association not in (*ASSOCIATIONS, None):
            raise MrcnnError(f"association must be one of {', '.join(ASSOCIATIONS)}, not {self.association!r}")
        if self.tracker == 'botsort' and self.association == 'mask':
            raise MrcnnError('BoT-SORT matches by box IoU (after camera-motion compensation): use association box, '
                             'or the bytetrack tracker for mask association')
        for name, value in (('track_thr', self.track_thr), ('match_thr', self.match_thr)):
            if not 0.0 <= value <= 1.0:
                raise MrcnnError(f'{name} must be between 0 and 1, not {value}')
        if self.buffer < 0 or self.min_hits < 1 or self.fill < 0:
            raise MrcnnError(f'buffer and fill must be >= 0 and min_hits >= 1, not {self.buffer}, {self.fill} and '
                             f'{self.min_hits}')
        return self


def require_trackers() -> Any:
    """roboflow's ByteTrack class, or one MrcnnError saying how to install it; another version than
    the one mrcnn's association step was written against is one warning."""
    try:
        from trackers.core.bytetrack.tracker import ByteTrackTracker
    except ImportError:
        raise MrcnnError(f"tracking needs roboflow's trackers: {INSTALL_HINT}") from None
    from importlib.metadata import PackageNotFoundError, version
    try:
        found = version('trackers')
    except PackageNotFoundError:
        found = 'unknown'
    if found != TRACKERS_VERSION:
        warn(f'mrcnn tracks with the tracklets of trackers {TRACKERS_VERSION}; trackers {found} is installed '
             f'(pip install --no-deps trackers=={TRACKERS_VERSION} if tracking fails)')
    return ByteTrackTracker


def window_iou(a: MaskWindow, a_area: int, dx: int, dy: int, b: MaskWindow, b_area: int) -> float:
    """IoU of mask `a` moved by (dx, dy) pixels with mask `b`, on their windows' overlap only."""
    inter = window_intersection(MaskWindow(a.mask, a.x0 + dx, a.y0 + dy), b)
    union = a_area + b_area - inter
    return inter / union if union else 0.0


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of x1, y1, x2, y2 boxes."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class MaskTracker:
    """ByteTrack with mask-aware, class-aware association (see the module docstring).

    >>> tracker = MaskTracker(TrackOptions(), fps=25.0)       # doctest: +SKIP
    >>> tracked = tracker.update(det, timestamp=frame_index / 25.0)   # doctest: +SKIP
    >>> tracked.track_ids                                     # doctest: +SKIP

    `update` returns the detections that belong to a confirmed track, each with its id (from 1)."""

    def __init__(self, options: TrackOptions = TrackOptions(), *, fps: float = DEFAULT_FPS) -> None:
        self.options = options.checked()
        if self.options.tracker != 'bytetrack':
            raise MrcnnError(f'MaskTracker is ByteTrack; make_tracker builds {self.options.tracker}')
        byte_track = require_trackers()
        from trackers.core.bytetrack.tracklet import ByteTrackTracklet

        class _Tracklet(ByteTrackTracklet):
            """A library tracklet that also keeps its class and its last box and mask."""
            label: int = -1
            score: float = 0.0
            hits: int = 0
            box: np.ndarray
            window: MaskWindow
            area: int = 0

        self._tracklet_class = _Tracklet
        self._library = byte_track(lost_track_buffer=options.buffer, frame_rate=fps,
                                   track_activation_threshold=options.track_thr,
                                   minimum_consecutive_frames=options.min_hits,
                                   minimum_iou_threshold=options.match_thr, high_conf_det_threshold=options.track_thr)
        self._first = True

    def update(self, det: Detections, *, timestamp: float | None = None,
               image: np.ndarray | None = None) -> Detections:
        """The detections of this frame that belong to a confirmed track, with `track_ids` set
        (`image`, the frame, is for trackers that compensate camera motion; ByteTrack does not)."""
        from trackers.core.bytetrack.utils import _get_alive_tracklets
        lib = self._library
        timing = lib._predict_timing(timestamp)
        if timing.skip_update:   # a time earlier than the last: nothing can be matched
            return det[np.zeros(len(det), bool)].with_track_ids(np.zeros(0, np.int64))
        lib._predict_tracklets(lib.tracks, timing)
        budget = lib._lost_track_time_budget(timing, lib.maximum_time_without_update)
        lib._prune_lost_tracks(timing)

        windows = det.mask_windows()
        areas = [int(np.count_nonzero(w.mask)) for w in windows]
        ids = np.full(len(det), -1, np.int64)
        high = np.flatnonzero(det.scores >= self.options.track_thr)
        low = np.flatnonzero(det.scores < self.options.track_thr)

        tracks = list(lib.tracks)
        matched, unmatched_tracks, unmatched_high = self._associate(tracks, det, windows, areas, high)
        for t, d in matched:
            self._take(tracks[t], det, windows, areas, int(high[d]), ids)
        remaining = [tracks[t] for t in unmatched_tracks]
        matched, _, _ = self._associate(remaining, det, windows, areas, low)
        for t, d in matched:
            self._take(remaining[t], det, windows, areas, int(low[d]), ids)

        filled = self._filled(tracks, det.height, det.width)
        for d in unmatched_high.tolist():
            i = int(high[d])
            tracklet = self._tracklet_class(initial_bbox=det.boxes[i].astype(np.float64),
                                            state_estimator_class=lib.state_estimator_class)
            self._remember(tracklet, det, windows, areas, i)
            if self._first or lib.minimum_consecutive_frames <= 1:   # ByteTrack: the first frame's are tracks at once
                tracklet.tracker_id = lib._allocate_tracker_id()
                ids[i] = tracklet.tracker_id
            lib.tracks.append(tracklet)
        self._first = False
        lib.tracks = _get_alive_tracklets(tracklets=lib.tracks,
                                          minimum_consecutive_frames=lib.minimum_consecutive_frames,
                                          maximum_frames_without_update=lib.maximum_frames_without_update,
                                          maximum_time_without_update=budget)
        keep = ids >= 0
        return with_filled(det[keep].with_track_ids(ids[keep] + 1), filled)   # ids from 1, as users count

    def _filled(self, tracks: Sequence[Any], height: int, width: int) -> list[tuple[Any, np.ndarray, MaskWindow]]:
        """(track, box, mask) for each confirmed track the detector missed in this frame, for up to
        `fill` frames: its last mask and box moved to where the Kalman filter predicts it (cut to the
        frame; a track predicted out of the frame is not reported)."""
        out = []
        for track in tracks:
            if track.tracker_id < 0 or track.hits < 2 or not 0 < track.time_since_update <= self.options.fill \
                    or not track.area:   # a track seen once may be a false positive: not carried on
                continue
            dx, dy = _move(track.box, track.get_state_bbox())
            box = np.clip(track.box + (dx, dy, dx, dy), 0, (width, height, width, height))
            window = moved_window(track.window, dx, dy, height, width)
            if window is not None and box[2] > box[0] and box[3] > box[1]:
                out.append((track, box, window))
        return out

    def _associate(self, tracks: Sequence[Any], det: Detections, windows: Sequence[MaskWindow],
                   areas: Sequence[int], columns: np.ndarray) -> tuple[list[tuple[int, int]], list[int], np.ndarray]:
        """(matched (track, column) pairs, unmatched track rows, unmatched columns) by the library's
        optimal assignment on mrcnn's similarity."""
        similarity = self._similarity(tracks, det, windows, areas, columns)
        matched, unmatched_tracks, unmatched = self._library._get_associated_indices(similarity,
                                                                                     self.options.match_thr)
        return matched, unmatched_tracks, np.asarray(unmatched, np.int64)

    def _similarity(self, tracks: Sequence[Any], det: Detections, windows: Sequence[MaskWindow],
                    areas: Sequence[int], columns: np.ndarray) -> np.ndarray:
        predicted = np.array([t.get_state_bbox() for t in tracks]).reshape(-1, 4)
        boxes = det.boxes[columns].astype(np.float64)
        similarity = box_iou_matrix(predicted, boxes)
        labels = det.labels[columns]
        for r, track in enumerate(tracks):
            similarity[r, labels != track.label] = 0.0
        if self.options.association == 'box':   # None: ByteTrack's default, mask
            return similarity
        moves = [_move(track.box, box) for track, box in zip(tracks, predicted)]
        for r, c in zip(*np.nonzero(similarity)):
            track, i = tracks[r], int(columns[c])
            if not track.area or not areas[i]:
                continue   # an empty mask: the boxes say it
            dx, dy = moves[r]
            similarity[r, c] = window_iou(track.window, track.area, dx, dy, windows[i], areas[i])
        return similarity

    def _take(self, tracklet: Any, det: Detections, windows: Sequence[MaskWindow], areas: Sequence[int], i: int,
              ids: np.ndarray) -> None:
        """Detection i continues `tracklet` (which gets its id once it has min_hits in a row)."""
        lib = self._library
        tracklet.update(det.boxes[i].astype(np.float64))
        self._remember(tracklet, det, windows, areas, i)
        hits = tracklet.number_of_successful_consecutive_updates
        if tracklet.tracker_id == -1 and hits >= lib.minimum_consecutive_frames:
            tracklet.tracker_id = lib._allocate_tracker_id()
        ids[i] = tracklet.tracker_id

    @staticmethod
    def _remember(tracklet: Any, det: Detections, windows: Sequence[MaskWindow], areas: Sequence[int],
                  i: int) -> None:
        tracklet.label, tracklet.score = int(det.labels[i]), float(det.scores[i])
        tracklet.hits += 1
        tracklet.box = det.boxes[i].astype(np.float64)
        tracklet.window, tracklet.area = windows[i], areas[i]


class BotSortTracker:
    """roboflow's BoT-SORT as it is (see TrackOptions), behind MaskTracker's `update`."""

    def __init__(self, options: TrackOptions = TrackOptions(tracker='botsort'), *, fps: float = DEFAULT_FPS) -> None:
        self.options = options.checked()
        require_trackers()
        from trackers.core.botsort.tracker import BoTSORTTracker
        self._library = BoTSORTTracker(lost_track_buffer=options.buffer, frame_rate=fps,
                                       track_activation_threshold=options.track_thr,
                                       minimum_consecutive_frames=options.min_hits,
                                       minimum_iou_threshold_first_assoc=options.match_thr,
                                       high_conf_det_threshold=options.track_thr)

    def update(self, det: Detections, *, timestamp: float | None = None,
               image: np.ndarray | None = None) -> Detections:
        import supervision as sv
        index = np.arange(len(det))
        given = sv.Detections(xyxy=det.boxes.astype(np.float64).reshape(-1, 4), confidence=det.scores,
                              class_id=det.labels, data={'index': index})
        tracked = self._library.update(given, frame=image, timestamp=timestamp)
        rows = np.asarray(tracked.data.get('index', np.zeros(0, int)), np.int64)
        ids = np.asarray(tracked.tracker_id if tracked.tracker_id is not None else np.zeros(0), np.int64)
        by_row = dict(zip(rows[ids >= 0].tolist(), (ids[ids >= 0] + 1).tolist()))
        keep = sorted(by_row)   # detections keep their order (by decreasing score)
        return det[keep].with_track_ids([by_row[i] for i in keep])


Tracker = Union[MaskTracker, BotSortTracker]  # noqa: UP007 - evaluated on 3.10 too


def make_tracker(options: TrackOptions, fps: float = DEFAULT_FPS) -> Tracker:
    """The tracker `options` name, for one video or sequence at `fps`."""
    options = options.checked()
    return BotSortTracker(options, fps=fps) if options.tracker == 'botsort' else MaskTracker(options, fps=fps)


def _move(last: np.ndarray, predicted: np.ndarray) -> tuple[int, int]:
    """Whole pixels from a track's last box to its predicted one (their centres)."""
    dx, dy = np.rint((predicted[:2] + predicted[2:] - last[:2] - last[2:]) / 2)
    return int(dx), int(dy)


def moved_window(window: MaskWindow, dx: int, dy: int, height: int, width: int) -> MaskWindow | None:
    """`window` moved by (dx, dy) and cut to a height x width frame; None when nothing is left."""
    h, w = window.mask.shape
    x0, y0 = window.x0 + dx, window.y0 + dy
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, width), min(y0 + h, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    mask = window.mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return MaskWindow(mask, cx0, cy0) if mask.any() else None


def with_filled(det: Detections, filled: Sequence[tuple[Any, np.ndarray, MaskWindow]]) -> Detections:
    """`det` with the filled-in tracks added, all by decreasing score (as Detections keep them)."""
    if not filled:
        return det
    assert det.track_ids is not None
    boxes = np.concatenate([det.boxes, np.array([box for _, box, _ in filled], np.float32)])
    scores = np.concatenate([det.scores, np.array([t.score for t, _, _ in filled], np.float32)])
    labels = np.concatenate([det.labels, np.array([t.label for t, _, _ in filled], np.int64)])
    ids = np.concatenate([det.track_ids, np.array([t.tracker_id + 1 for t, _, _ in filled], np.int64)])
    windows = det.mask_windows() + [window for _, _, window in filled]
    order = np.argsort(-scores, kind='stable')
    return Detections(boxes[order], scores[order], labels[order], [windows[i] for i in order.tolist()], det.height,
                      det.width, det.classes, det.palette).with_track_ids(ids[order])


def tracked_items(items: Iterable[StreamItem], options: TrackOptions) -> Iterator[StreamItem]:
    """`items` (a stream, in order) with each video's or frame sequence's detections tracked: one
    tracker per source, started again for the next; in-memory images given together are one
    sequence.  Frames the model did not run on (vid_stride) show the last tracked frame's
    detections; video frames carry their time (frame number / fps) to the tracker, so that it
    predicts across the frames between.  Problems pass through unchanged."""
    options = options.checked()
    tracker: Tracker | None = None
    sequence: object = None
    last: Detections | None = None
    for item in items:
        if item.detections is None:
            yield item
            continue
        key = 'arrays' if item.kind == 'array' else item.source_index
        fps = item.video.fps if item.video is not None and item.video.fps > 0 else DEFAULT_FPS
        if tracker is None or key != sequence:
            tracker, sequence, last = make_tracker(options, fps), key, None
        if item.inferred or last is None:
            timestamp = item.frame_index / fps if item.video is not None else None
            last = tracker.update(item.detections, timestamp=timestamp, image=item.image)
        yield replace(item, detections=last)



def save_tracks(items: Iterable[StreamItem], folder: str | os.PathLike) -> list[Path]:
    """FOLDER/mots/<video>.txt for each video or sequence of tracked `items` (what `Predictor.track`
    yields) and FOLDER/ytvis.json for them all: the files `mrcnn track` writes (see io.tracks).
    Arrays given together are one sequence, `arrays`; frames the model did not run on are left out."""
    from mrcnn_cli.io.tracks import write_track_files  # pycocotools: not for every Predictor
    stems: dict[int, str] = {}
    class_names: dict[int, str] = {}

    def records() -> Iterator[dict[str, Any]]:   # stems and class names are known by each video's first frame
        for item in items:
            det = item.detections
            if det is None or not item.inferred:
                continue
            array = item.kind == 'array'
            key = -1 if array else item.source_index
            stems.setdefault(key, 'arrays' if array else Path(item.source).stem or f'video{key}')
            class_names.update(zip(category_ids(det.classes), det.classes))
            yield {'source_index': key, 'frame_index': item.source_index if array else item.frame_index,
                   'height': det.height, 'width': det.width, 'annotations': det.to_coco()}

    return write_track_files(records(), folder, stems, class_names)
