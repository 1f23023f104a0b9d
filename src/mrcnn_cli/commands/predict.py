"""`mrcnn predict`: pictures or annotated videos with masks drawn, predictions.json, and the files
users ask for (mask PNGs, YOLO labels, crops).

One consumer of `Predictor.stream`: the stream decodes and infers in its threads, this draws,
encodes and writes in the caller's."""
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.coco import CocoDocument
from mrcnn_cli.io.files import write_image, write_text
from mrcnn_cli.io.sources import IMAGE, collect_sources, output_names
from mrcnn_cli.io.video import VideoSink, display_available, video_suffix

LOSSY_SUFFIXES = {'.jpg', '.jpeg', '.jp2'}


@dataclass
class PredictOptions:
    out_dir: Path = Path('runs/predict')
    score_thr: float = 0.3
    vis: bool = True
    classes: list = None          # keep only these class names
    batch_size: int = 1
    vid_stride: int = 1
    max_frames: int = None
    show: bool = False
    progress: bool = True
    save_masks: bool = False      # masks/: instance map, class map, one PNG per instance
    save_txt: bool = False        # labels/: YOLO segmentation labels
    save_conf: bool = False       # ... with the score appended
    save_crop: bool = False       # crops/<class>/: RGBA box crops, the mask as alpha
    mask_format: str = 'rle'      # predictions.json segmentation: rle or polygon
    draw: dict = field(default_factory=dict)   # Detections.plot options
    codec: str = 'h264'


@dataclass
class PredictSummary:
    images: int = 0
    frames: int = 0
    instances: int = 0
    failed: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    json_path: Path = None
    seconds: float = 0.0


def picture_suffix(source, codec):
    """Pictures keep a lossless format for lossless inputs (PNG in, PNG out; JPEG in, JPEG out)."""
    if source.is_video:
        return video_suffix(codec)
    return '.jpg' if Path(str(source.location)).suffix.lower() in LOSSY_SUFFIXES else '.png'


def check_no_overwrite(sources, names, out_dir):
    inputs = {s.location.resolve() for s in sources if isinstance(s.location, Path)}
    for name in names:
        if (out_dir / name).resolve() in inputs:
            raise MrcnnError(f'writing {out_dir / name} would overwrite the input; choose another --out')


class _Writer:
    """Everything one `mrcnn predict` run writes, fed one StreamItem at a time."""

    def __init__(self, predictor, opts, names, warn):
        self.predictor, self.opts, self.names, self.warn = predictor, opts, names, warn
        self.doc = CocoDocument(predictor.classes)
        self.summary = PredictSummary(json_path=opts.out_dir / 'predictions.json')
        self.sink, self.sink_source = None, None
        self.show = opts.show and display_available()
        if opts.show and not self.show:
            warn('warning: --show needs a display and a GUI build of OpenCV (pip install '
                 "'mrcnn-cli[gui]'); not showing")
        if opts.save_txt:
            write_text(opts.out_dir / 'labels' / 'classes.txt', ''.join(c + '\n' for c in predictor.classes))

    def __call__(self, item):
        if item.source_index != self.sink_source:
            self.close_video()
        if not item.ok:
            self.problem(item)
            return
        det = item.detections.filter(score_thr=self.opts.score_thr, classes=self.opts.classes)
        stem = Path(self.names[item.source_index]).stem
        if item.video is None or item.inferred:
            if item.video is None:
                self.doc.add(item.source, det.width, det.height, det.to_coco(mask_format=self.opts.mask_format))
                self.summary.images += 1
            else:
                stem = f'{stem}/{item.frame_index:06d}'
                self.doc.add(f'{item.source}#{item.frame_index}', det.width, det.height,
                             det.to_coco(mask_format=self.opts.mask_format), frame_index=item.frame_index,
                             video=item.source)
                self.summary.frames += 1
            self.summary.instances += len(det)
            self.instance_files(det, item.image, stem)
        if self.opts.vis or self.show:
            self.picture(item, det.plot(item.image, **self.opts.draw))

    def instance_files(self, det, image, stem):
        out = self.opts.out_dir
        if self.opts.save_masks:
            det.save_masks(out / 'masks', stem)
        if self.opts.save_txt:
            det.save_txt(out / 'labels' / f'{stem}.txt', conf=self.opts.save_conf)
        if self.opts.save_crop:
            det.save_crops(image, out / 'crops', stem.replace('/', '_'))

    def picture(self, item, drawn):
        if self.opts.vis:
            path = self.opts.out_dir / self.names[item.source_index]
            if item.video is None:
                self.summary.outputs.append(write_image(path, drawn))
            else:
                if self.sink is None:
                    self.sink = VideoSink(path, item.video.fps, (item.video.width, item.video.height),
                                          self.opts.codec)
                    self.sink_source = item.source_index
                self.sink.write(drawn)
        if self.show:
            cv2.imshow('mrcnn', drawn)
            if cv2.waitKey(1) & 0xFF == ord('q'):
                raise KeyboardInterrupt

    def problem(self, item):
        if item.error:
            prefix = 'warning: skipped ' if item.kind == IMAGE else 'error: '
            self.warn(prefix + item.error)
        else:
            self.warn(f'warning: {item.warning}')
        if item.source not in self.summary.failed:
            self.summary.failed.append(item.source)

    def close_video(self):
        if self.sink is not None:
            sink, self.sink, self.sink_source = self.sink, None, None
            sink.close()
            if sink.frames:
                self.summary.outputs.append(sink.path)

    def finish(self):
        try:
            self.close_video()
        finally:
            self.doc.write(self.summary.json_path)
            if self.show:
                cv2.destroyAllWindows()


def predict_sources(predictor, sources, opts=None, warn=print, missing=()):
    """Run `mrcnn predict` over images, videos, cameras and streams; returns a PredictSummary.

    predictions.json is written at the end, and also when interrupted, for what was done;
    a video being written is closed as a complete, playable file."""
    from tqdm import tqdm
    opts = opts or PredictOptions()
    opts.out_dir = Path(opts.out_dir)
    found, missed = collect_sources(sources, exclude_dir=opts.out_dir, warn=warn)
    names = output_names(found, lambda s: picture_suffix(s, opts.codec))
    if opts.vis:
        check_no_overwrite(found, names, opts.out_dir)
    try:
        opts.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MrcnnError(f'cannot write to {opts.out_dir}: {e.strerror or e}') from None
    writer = _Writer(predictor, opts, names, warn)
    writer.summary.failed += list(missing) + missed
    start = time.perf_counter()
    total = sum(not s.is_video for s in found)   # frames are added as each video opens
    try:
        with tqdm(total=total or None, unit='img', desc='predict', disable=not opts.progress) as bar:
            opened = set()
            for item in predictor.stream(found, vid_stride=opts.vid_stride, max_frames=opts.max_frames,
                                         batch_size=opts.batch_size, errors='yield'):
                if item.video is not None and item.source_index not in opened:
                    opened.add(item.source_index)
                    frames = min(item.video.frames, opts.max_frames or item.video.frames)
                    total = total + frames if frames and total is not None else None   # a stream: unknown
                    bar.total = total
                    bar.refresh()
                writer(item)
                if item.ok:
                    bar.update(1)
    finally:
        writer.finish()
        writer.summary.seconds = time.perf_counter() - start
    return writer.summary

