"""`mrcnn predict`: pictures or annotated videos with masks drawn, and one predictions.json."""
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mrcnn_cli import MrcnnError
from mrcnn_cli.pipeline import Frame, run_pipeline
from mrcnn_cli.preprocess import read_image
from mrcnn_cli.results import CocoDocument, atomic_path
from mrcnn_cli.sources import collect_sources, output_names
from mrcnn_cli.video import ReadStats, VideoSink, display_available, open_capture, read_frames
from mrcnn_cli.visualize import draw_detections


@dataclass
class PredictOptions:
    out_dir: Path = Path('runs/predict')
    score_thr: float = 0.3
    vis: bool = True
    class_filter: list = None
    batch_size: int = 1
    vid_stride: int = 1
    max_frames: int = None
    show: bool = False
    progress: bool = True


@dataclass
class PredictSummary:
    images: int = 0
    frames: int = 0
    instances: int = 0
    skipped_frames: int = 0
    failed: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    json_path: Path = None
    seconds: float = 0.0


def parse_class_filter(text, classes):
    if not text:
        return None
    names = [c.strip() for c in text.split(',') if c.strip()]
    unknown = [c for c in names if c not in classes]
    if unknown:
        raise MrcnnError(f"unknown class {unknown[0]!r} in --classes (known: {', '.join(classes[:5])}, ...)")
    return names


def kept(det, classes, opts):
    keep = det.scores >= opts.score_thr
    if opts.class_filter:
        keep &= np.isin(det.labels, [classes.index(c) for c in opts.class_filter])
    return keep


def write_image(path, img):
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), img):
            raise MrcnnError(f'cannot write {path}')


class _Run:
    """State shared by the writer callbacks of one `mrcnn predict` call."""

    def __init__(self, predictor, opts, warn):
        self.predictor, self.opts, self.warn = predictor, opts, warn
        self.doc = CocoDocument(predictor.classes)
        self.summary = PredictSummary(json_path=opts.out_dir / 'predictions.json')
        self.show = opts.show and display_available()
        if opts.show and not self.show:
            warn('warning: --show needs a display and a GUI build of OpenCV; not showing')

    def infer(self, images):
        return self.predictor.predict_batch(images)

    def display(self, img):
        if self.show:
            cv2.imshow('mrcnn', img)
            if cv2.waitKey(1) & 0xFF == ord('q'):
                raise KeyboardInterrupt

    def images(self, paths, names):
        def frames():
            for i, path in enumerate(paths):
                try:
                    yield Frame(i, read_image(path))
                except MrcnnError as e:
                    yield Frame(i, None, error=str(e))

        def write(frame, det):
            bar.update(1)
            path = paths[frame.index]
            if frame.image is None:
                self.warn(f'warning: skipped {frame.error}')
                self.summary.failed.append(str(path))
                return
            keep = kept(det, self.predictor.classes, self.opts)
            self.doc.add(str(path), det, keep)
            self.summary.images += 1
            self.summary.instances += int(keep.sum())
            if self.opts.vis or self.show:
                drawn = draw_detections(frame.image, det, self.predictor.classes, keep)
                if self.opts.vis:
                    write_image(self.opts.out_dir / names[frame.index], drawn)
                    self.summary.outputs.append(self.opts.out_dir / names[frame.index])
                self.display(drawn)

        with tqdm(total=len(paths), desc='images', unit='img', disable=not self.opts.progress) as bar:
            run_pipeline(frames(), self.infer, write, self.opts.batch_size)

    def video(self, src, name):
        try:
            cap, info = open_capture(src)
        except MrcnnError as e:
            self.warn(f'error: {e}')
            self.summary.failed.append(str(src))
            return
        stats = ReadStats()
        sink = VideoSink(self.opts.out_dir / name, info.fps, (info.width, info.height)) if self.opts.vis else None
        total = min(info.frames, self.opts.max_frames or info.frames) or self.opts.max_frames

        def write(frame, det):
            bar.update(1)
            keep = kept(det, self.predictor.classes, self.opts)
            if frame.infer:
                self.doc.add(f'{src}#{frame.index}', det, keep, frame_index=frame.index, video=str(src))
                self.summary.frames += 1
                self.summary.instances += int(keep.sum())
            if sink or self.show:
                drawn = draw_detections(frame.image, det, self.predictor.classes, keep)
                if sink:
                    sink.write(drawn)
                self.display(drawn)

        try:
            with tqdm(total=total or None, desc=Path(str(src)).name, unit='frame',
                      disable=not self.opts.progress) as bar:
                run_pipeline(read_frames(cap, info, stats, self.opts.vid_stride, self.opts.max_frames),
                             self.infer, write, self.opts.batch_size)
        finally:
            if sink:
                sink.close()
                if sink.frames:
                    self.summary.outputs.append(sink.path)
            self.summary.skipped_frames += stats.skipped
        if stats.read == 0:
            self.warn(f'error: {src}: no frame could be decoded')
            self.summary.failed.append(str(src))
        elif stats.truncated:
            self.warn(f'warning: {src} ended after {stats.read + stats.skipped} of {info.frames} frames '
                      '(truncated?)')
            self.summary.failed.append(str(src))


def check_no_overwrite(sources, names, out_dir):
    inputs = {Path(s).resolve() for s in sources if not isinstance(s, str)}
    for name in names:
        if (out_dir / name).resolve() in inputs:
            raise MrcnnError(f'writing {out_dir / name} would overwrite the input; choose another --out')


def predict_sources(predictor, sources, opts=None, warn=print):
    """Run `mrcnn predict` over images, videos, cameras and streams; returns a PredictSummary.

    predictions.json is written at the end, and also when interrupted, for what was done."""
    opts = opts or PredictOptions()
    opts.out_dir = Path(opts.out_dir)
    images, videos, missing = collect_sources(sources, exclude_dir=opts.out_dir, warn=warn)
    run = _Run(predictor, opts, warn)
    run.summary.failed += missing
    used = set()
    image_names, video_names = output_names(images, '.jpg', used), output_names(videos, '.mp4', used)
    if opts.vis:
        check_no_overwrite(images + videos, image_names + video_names, opts.out_dir)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        if images:
            run.images(images, image_names)
        for src, name in zip(videos, video_names):
            run.video(src, name)
    finally:
        run.doc.write(run.summary.json_path)
        run.summary.seconds = time.perf_counter() - start
        if run.show:
            cv2.destroyAllWindows()
    return run.summary
