"""`mrcnn predict`: pictures or annotated videos with masks drawn, predictions.json, and the files
users ask for (mask PNGs, YOLO labels, crops).

One consumer of `Predictor.stream`: the stream decodes and infers in its threads, this draws,
encodes and writes in the caller's.  Results go to predictions.jsonl as each image is done (what
--resume reads), and predictions.json is assembled from it at the end."""
import hashlib
import itertools
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2

from mrcnn_cli.commands.options import RunOptions, SaveOptions, VideoOptions
from mrcnn_cli.engine.detections import Selection
from mrcnn_cli.engine.distributed import partition, process_group
from mrcnn_cli.engine.runner import Stage
from mrcnn_cli.engine.stream import StreamOptions, stream_sources
from mrcnn_cli.engine.tiling import TileOptions
from mrcnn_cli.engine.timing import no_stage
from mrcnn_cli.engine.tracking import TrackOptions, tracked_items
from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.coco import category_ids
from mrcnn_cli.io.files import write_image, write_text
from mrcnn_cli.io.images import MAX_PIXELS
from mrcnn_cli.io.results_log import (
    ResultsLog,
    header_differences,
    iter_lines,
    read_header,
    unfinished_parts,
    write_document,
)
from mrcnn_cli.io.scene import shrunk_size
from mrcnn_cli.io.sources import IMAGE, file_path, output_names
from mrcnn_cli.io.tracks import write_track_files
from mrcnn_cli.io.video import VideoSink, display_available, video_suffix
from mrcnn_cli.model.spec import DEFAULT_SCORE_THR
from mrcnn_cli.visualize import PICTURE_MAX_SIDE, DrawOptions, TrackTrails

LOSSY_SUFFIXES = {'.jpg', '.jpeg', '.jp2'}


@dataclass(frozen=True)
class PredictOptions:
    """How one `mrcnn predict` run works; the option groups as the command line builds them."""
    out_dir: Path = Path('runs/predict')
    score_thr: float = DEFAULT_SCORE_THR
    vis: bool = True                      # pictures and videos (else predictions.json and the files asked for)
    classes: list[str] | None = None      # keep only these class names
    batch_size: int = 1
    max_pixels: int = MAX_PIXELS          # larger images and videos are skipped before they are decoded
    progress: bool = True
    draw: DrawOptions = DrawOptions()
    save: SaveOptions = SaveOptions()
    video: VideoOptions = VideoOptions()
    run: RunOptions = RunOptions()
    tiles: TileOptions | None = None      # sliced inference (--tile)
    stage: Stage = no_stage               # timing hook (bench): see engine.runner
    track: TrackOptions | None = None     # `mrcnn track`: identities, and the MOTS and YouTube-VIS files
    trail: int = 0                        # `mrcnn track`: frames of each track's path drawn behind it


@dataclass
class PredictSummary:
    images: int = 0
    frames: int = 0                       # video frames read (and drawn)
    inferred_frames: int = 0              # of which the model ran on (--vid-stride)
    instances: int = 0
    failed: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    json_path: Path | None = None        # predictions.json, or this part's log when it is one of several
    log_path: Path | None = None
    skipped: int = 0              # inputs done by an earlier run (--resume)
    seconds: float = 0.0
    out_dir: Path | None = None          # where the run wrote (the default folder may have become runs/predict2)


def picture_suffix(source, codec):
    """Pictures keep a lossless format for lossless inputs (PNG in, PNG out; JPEG in, JPEG out)."""
    if source.is_video:
        return video_suffix(codec)
    suffix = file_path(source).suffix
    if suffix.lower() in ('.jpg', '.jpeg'):
        return suffix   # as the input spells it: x.JPEG and x.jpg in one folder keep their own names
    return '.jpg' if suffix.lower() in LOSSY_SUFFIXES else '.png'


def check_no_overwrite(sources, names, out_dir):
    inputs = {s.location.resolve() for s in sources if isinstance(s.location, Path)}
    for name in names:
        if (out_dir / name).resolve() in inputs:
            raise MrcnnError(f'writing {out_dir / name} would overwrite the input; choose another --out')


def run_header(predictor, opts, sources, part):
    """What a predictions log records of its run: everything that changes its results, so that a
    resume or a merge never mixes two runs."""
    names = hashlib.sha256('\n'.join(s.name for s in sources).encode()).hexdigest()
    return {**predictor.identity(), 'score_thr': opts.score_thr, 'class_filter': opts.classes,
            'mask_format': opts.save.mask_format, 'vid_stride': opts.video.vid_stride,
            'max_frames': opts.video.max_frames, 'tiles': opts.tiles.to_dict() if opts.tiles else None,
            **({'track': asdict(opts.track)} if opts.track else {}),
            'inputs': {'count': len(sources), 'sha256': names},
            'partition': [part.rank, part.world]}


def run_folder(out_dir, header, log_name, opts):
    """Where this run writes: `out_dir`, unless it holds another run's results.  Then, without
    --resume or --exist-ok, the next free out_dir2, out_dir3, ... for the default folder (as
    Ultralytics does), and one MrcnnError for a folder the user named: two runs never mix.  A
    resume in the default folder goes on in whichever of them holds this same run."""
    if opts.run.resume and opts.run.next_free_out:
        return _folder_of_this_run(out_dir, header, log_name) or out_dir
    if opts.run.resume or opts.run.exist_ok:
        return out_dir
    for candidate in _numbered(out_dir):
        other = other_run(candidate, header, log_name)
        if other is None:
            return candidate
        if not opts.run.next_free_out:
            raise MrcnnError(f'{out_dir} holds the results of another run ({other}); choose another --out, add '
                             '--resume to finish that run, or --exist-ok to write over it')


def _numbered(out_dir):
    """out_dir, out_dir2, out_dir3, ..."""
    yield out_dir
    for number in itertools.count(2):
        yield out_dir.with_name(f'{out_dir.name}{number}')


def _folder_of_this_run(out_dir, header, log_name):
    """The first of out_dir, out_dir2, ... whose log `log_name` this run wrote, or None."""
    for candidate in _numbered(out_dir):
        if not candidate.is_dir():
            return None
        try:
            if not header_differences(read_header(candidate / log_name), header):
                return candidate
        except MrcnnError:
            pass


def other_run(folder, header, log_name):
    """The log in `folder` of a run other than this one, or None.  The parts of this same run (its
    other shards or torchrun ranks: the same header but for the partition) are not another run;
    this part's own log from before is (it would be replaced)."""
    logs = sorted(folder.glob('predictions*.jsonl')) + sorted(folder.glob('predictions.json'))
    for path in logs:
        if path.suffix == '.json' or path.name == log_name:
            return path.name
        try:
            if header_differences(read_header(path), header, parts=True):
                return path.name
        except MrcnnError:
            return path.name
    return None


class FileWriter:
    """The files of one image or frame: its picture, and the masks, labels, crops and GeoJSON asked for."""

    def __init__(self, out_dir, save, classes, warn):
        self.out_dir, self.save, self.warn = out_dir, save, warn
        if save.txt:
            write_text(out_dir / 'labels' / 'classes.txt', ''.join(c + '\n' for c in classes))

    def instance_files(self, det, item, stem):
        image = item.image
        if (self.save.masks or self.save.crop) and image is None:
            asked = (('--save-masks', self.save.masks), ('--save-crop', self.save.crop))
            flags = ' or '.join(flag for flag, on in asked if on)
            self.warn(f'warning: {item.source} was read a region at a time (it is not held whole): no {flags} files '
                      'for it')
        elif self.save.masks:
            det.save_masks(self.out_dir / 'masks', stem)
        if self.save.txt:
            det.save_txt(self.out_dir / 'labels' / f'{stem}.txt', conf=self.save.conf)
        if self.save.crop and image is not None:
            det.save_crops(image, self.out_dir / 'crops', stem.replace('/', '_'))
        if self.save.geojson:
            georef = item.scene.georef if item.scene is not None else None
            det.save_geojson(self.out_dir / 'geojson' / f'{stem}.geojson', georef=georef)

    def picture(self, name, drawn):
        return write_image(self.out_dir / name, drawn)


def draw_bounded(item, det, draw):
    """The picture of an image or frame; a sliced image larger than PICTURE_MAX_SIDE is drawn on
    a shrunk copy (its preview when it was read by regions) so that pictures stay a bounded size."""
    image = item.image
    if item.scene is not None and (image is None or max(image.shape[:2]) > PICTURE_MAX_SIDE):
        image = item.scene.preview if image is None else shrink(image, PICTURE_MAX_SIDE)
        det = det.resize(image.shape[1], image.shape[0])
    return det.plot(image, score_thr=0, **asdict(draw))   # det is filtered already


def shrink(image, max_side):
    return cv2.resize(image, shrunk_size(image.shape[1], image.shape[0], max_side), interpolation=cv2.INTER_AREA)


class VideoOutput:
    """One video source's outputs, opened on its first frame and closed when its source ends: the
    annotated video (with pictures) and the log's end line (a video counts as done only when the
    stream ran to its end)."""

    def __init__(self, index, log, sink=None, trails=None):
        self.index, self.log, self.sink = index, log, sink
        self.trails = trails                 # TrackTrails: tracks' paths, drawn on each frame

    def write(self, picture):
        if self.sink is not None:
            self.sink.write(picture)

    def close(self, finished):
        """The video file written (None without pictures or frames); `finished` logs the end."""
        if self.sink is not None:
            self.sink.close()
        if finished:
            self.log.end(self.index)
        return self.sink.path if self.sink is not None and self.sink.frames else None


class _Writer:
    """What one `mrcnn predict` run writes, fed one StreamItem at a time: the log line of each
    image or inferred frame, its files (FileWriter), each video's output (VideoOutput), the
    display, and the summary."""

    def __init__(self, predictor, opts, names, todo, log, warn):
        self.opts, self.names, self.warn = opts, names, warn
        self.todo, self.log = todo, log      # global input index of each streamed source
        self.summary = PredictSummary(json_path=opts.out_dir / 'predictions.json', log_path=log.path,
                                      out_dir=opts.out_dir)
        self.files = FileWriter(opts.out_dir, opts.save, predictor.classes, warn)
        self.video = None                    # the VideoOutput of the source whose frames are coming
        self.show = opts.video.show and display_available()
        if opts.video.show and not self.show:
            warn('warning: --show needs a display and a GUI build of OpenCV (pip uninstall opencv-python-headless '
                 '&& pip install opencv-python); not showing')

    def __call__(self, item):
        index = self.todo[item.source_index]
        if self.video is not None and self.video.index != index:
            self.close_video(finished=True)
        if not item.ok:
            self.problem(item, index)
            return
        if item.video is not None and self.video is None:
            self.video = self.open_video(index, item.video)
        det = item.detections.filter(score_thr=self.opts.score_thr, classes=self.opts.classes)
        if item.video is not None:
            self.summary.frames += 1
        if item.video is None or item.inferred:
            self.record(item, index, det)
        if self.opts.vis or self.show:
            drawn = draw_bounded(item, det, self.opts.draw)
            if item.video is not None and self.video.trails is not None:
                self.video.trails.add(det)
                self.video.trails.draw(drawn, self.opts.draw.line_width)
            if self.opts.vis and item.video is None:
                self.summary.outputs.append(self.files.picture(self.names[index], drawn))
            elif self.opts.vis:
                self.video.write(drawn)
            if self.show:
                self.display(drawn)

    def record(self, item, index, det):
        """The log line and the files of an image or an inferred frame."""
        entries = det.to_coco(mask_format=self.opts.save.mask_format)
        stem = Path(self.names[index]).stem
        if item.video is None:
            self.log.add(index, item.source, det.width, det.height, entries)
            self.summary.images += 1
        else:
            stem = f'{stem}/{item.frame_index:06d}'
            self.log.add(index, f'{item.source}#{item.frame_index}', det.width, det.height, entries,
                         frame_index=item.frame_index, video=item.source)
            self.summary.inferred_frames += 1
        self.summary.instances += len(det)
        self.files.instance_files(det, item, stem)

    def open_video(self, index, info):
        sink = VideoSink(self.opts.out_dir / self.names[index], info.fps, (info.width, info.height),
                         self.opts.video.codec) if self.opts.vis else None
        return VideoOutput(index, self.log, sink, TrackTrails(self.opts.trail) if self.opts.trail else None)

    def close_video(self, finished):
        video, self.video = self.video, None
        path = video.close(finished)
        if path is not None:
            self.summary.outputs.append(path)

    @staticmethod
    def display(drawn):
        cv2.imshow('mrcnn', drawn)
        if cv2.waitKey(1) & 0xFF == ord('q'):
            raise KeyboardInterrupt

    def problem(self, item, index):
        if item.note:   # a live stream's news: nothing it sent was lost
            self.warn(f'warning: {item.note}')
            return
        if item.error:
            prefix = 'warning: skipped ' if item.kind == IMAGE else 'error: '
            self.warn(prefix + item.error)
            if self.video is None or self.video.index != index:
                self.log.failed(index, item.error)
        else:
            self.warn(f'warning: {item.warning}')
        if item.source not in self.summary.failed:
            self.summary.failed.append(item.source)

    def finish(self, completed):
        """Close what is open; a video counts as finished only when the stream ran to its end."""
        try:
            if self.video is not None:
                self.close_video(finished=completed)
        finally:
            self.log.close()
            if self.show:
                cv2.destroyAllWindows()


def predict_sources(predictor, sources, opts=None, warn=print, missing=()):
    """Run `mrcnn predict` over `sources` (Sources, as `io.sources.collect_sources` resolves what a
    user names; `missing`: the names it could not find); returns a PredictSummary.

    Every image's or frame's results are appended to predictions.jsonl as it is done, and
    predictions.json is assembled from it at the end, also when interrupted, for what was done;
    a video being written is closed as a complete, playable file.  With `opts.run.resume` the
    inputs the log already has are skipped; with `opts.run.shard` (or under torchrun) this process
    takes every Nth input and writes its own log, which `mrcnn merge` (or rank 0) joins."""
    opts = opts or PredictOptions()
    opts = replace(opts, out_dir=Path(opts.out_dir))
    found = list(sources)
    names = output_names(found, lambda s: picture_suffix(s, opts.video.codec))
    part = partition(opts.run.shard)
    header, log_name = run_header(predictor, opts, found, part), f'predictions{part.tag}.jsonl'
    opts = replace(opts, out_dir=run_folder(opts.out_dir, header, log_name, opts))
    if opts.vis:
        check_no_overwrite(found, names, opts.out_dir)
    try:
        opts.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MrcnnError(f'cannot write to {opts.out_dir}: {e.strerror or e}') from None
    with process_group(part, predictor.device.type == 'cuda') as dist:   # the last collective: wait_for_ranks
        log = ResultsLog(opts.out_dir / log_name, header, resume=opts.run.resume)
        for index in log.restarted:
            warn(f'warning: {found[index].name} was not finished by the last run; it starts again')
        todo = [i for i in part.take(range(len(found))) if i not in log.done]
        writer = _Writer(predictor, opts, names, todo, log, warn)
        writer.summary.failed += list(missing)
        writer.summary.skipped = len(part.take(range(len(found)))) - len(todo)
        start = time.perf_counter()
        completed = False
        try:
            _run(predictor, [found[i] for i in todo], writer, opts, show_progress=opts.progress and part.rank == 0)
            completed = True
        except KeyboardInterrupt:
            if dist is None:
                raise
            # torchrun stops every rank when one fails (or on Ctrl-C); this rank's log stays resumable
            raise MrcnnError(f'stopped before this rank was done; its results so far are in {log.path.name}: '
                             'run the same command with --resume to finish') from None
        finally:
            writer.finish(completed)
            summary = writer.summary
            logs = [opts.out_dir / f'predictions.rank{r}.jsonl' for r in range(part.world)] if dist else [log.path]
            if dist is not None and completed:
                wait_for_ranks(dist, logs)
            if part.world == 1 or (dist is not None and part.rank == 0 and completed):
                write_document(logs, summary.json_path, predictor.classes)
                if opts.track is not None:
                    summary.outputs += write_tracks(logs, opts.out_dir, names, predictor.classes)
            else:
                summary.json_path = None if dist is not None else log.path
            summary.seconds = time.perf_counter() - start
    return summary


def write_tracks(logs, out_dir, names, classes):
    """mots/<video>.txt and ytvis.json from the logs (complete frames only: what Ctrl-C left is whole)."""
    records = (record for path in logs for i, (record, _) in enumerate(iter_lines(path)) if i > 0)
    class_names = dict(zip(category_ids(classes), classes))
    return write_track_files(records, out_dir, {i: Path(name).stem for i, name in enumerate(names)}, class_names)


def wait_for_ranks(dist, logs):
    """Meet the other torchrun ranks once every log is complete; a rank that died is named from the logs."""
    try:
        dist.barrier()
    except RuntimeError:   # what gloo and NCCL raise when a peer is gone
        gone = [f'rank {part.rank} ({part.done} of {part.inputs} inputs done)' for part in unfinished_parts(logs)]
        raise MrcnnError(f'{", ".join(gone) or "another rank"} stopped before finishing; every rank\'s results so '
                         'far are kept: run the same command with --resume to finish') from None


def _run(predictor, sources, writer, opts, show_progress):
    from tqdm import tqdm
    total = sum(not s.is_video for s in sources)   # frames are added as each video opens
    with tqdm(total=total or None, unit='img', desc='predict',
              disable=None if show_progress else True) as bar:   # None: no bar when stderr is not a terminal
        opened = set()
        stream = StreamOptions(vid_stride=opts.video.vid_stride, max_frames=opts.video.max_frames,
                               reconnect=opts.video.reconnect, max_pixels=opts.max_pixels, batch_size=opts.batch_size,
                               errors='yield', tiles=opts.tiles,
                               selection=Selection(opts.score_thr, opts.classes), stage=opts.stage)
        items = stream_sources(predictor, sources, stream) if sources else iter(())
        if opts.track is not None:
            items = tracked_items(items, opts.track)
        for item in items:
            if item.video is not None and item.source_index not in opened:
                opened.add(item.source_index)
                frames = min(item.video.frames, opts.video.max_frames or item.video.frames)
                total = total + frames if frames and total is not None else None   # a stream: unknown
                bar.total = total
                bar.refresh()
            writer(item)
            if item.ok:
                bar.update(1)
