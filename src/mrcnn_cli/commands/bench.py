"""`mrcnn bench --fps`: what a user gets per image, measured the way mmdetection's benchmark does."""
import itertools
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mrcnn_cli.backends.base import Backend
from mrcnn_cli.backends.pytorch import load_torch_model
from mrcnn_cli.backends.registry import BACKENDS, backend_for
from mrcnn_cli.engine.choice import ModelChoice, Precision
from mrcnn_cli.engine.memory import release_freed_memory
from mrcnn_cli.engine.preprocess import pad_batch
from mrcnn_cli.engine.timing import StageTimer, no_stage
from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.cpu import cpu_info, isa_flags
from mrcnn_cli.io.images import read_image
from mrcnn_cli.io.sources import collect_sources, list_images
from mrcnn_cli.predictor import Predictor

METHOD = ('warm-up iterations not counted, then N images at the given batch size, cycled from the image set; '
          'the timed span covers preprocessing (resize, normalise, pad), the network, NMS and the '
          'full-resolution mask paste, with torch.cuda.synchronize() on GPU; image decoding is done '
          'beforehand and reported separately; the torchvision peer runs first, in a fresh process of its '
          'own, as its users run it (glibc default allocator); mrcnn rows then run in this process, CPU '
          'rows with mrcnn\'s allocator setting (freed memory kept for reuse)')


@dataclass
class BenchRow:
    backend: str
    precision: str
    device: str
    images: int
    fps: float
    latency_ms: dict
    stages_ms: dict
    peak_rss_mb: float
    cuda_max_allocated_mb: float | None = None
    speedup_vs_torchvision: float | None = None
    detections_per_image: float = 0.0
    pipeline: dict | None = None      # a whole `mrcnn predict` run: {fps, vis, replay, detections_per_image}
    tiled: dict | None = None         # `mrcnn predict --tile`: {tile, tiles_per_s, megapixels_per_s, cpu_overhead, ...}
    load_s: float | None = None       # building the predictor (checkpoint read, model built and rewritten)
    first_result_s: float | None = None   # load + the first image's detections (the first call compiles, warms up)
    agreement: dict | None = None     # an INT8 file's accuracy guard: its agreement with the FP32 model it came from


@dataclass
class BenchReport:
    method: str
    machine: dict
    decode_ms_per_image: float
    image_sizes: list
    rows: list = field(default_factory=list)
    tracking: dict | None = None      # `--track`: what the tracker adds per frame, by association


TRACK_OBJECTS, TRACK_FRAMES, TRACK_SIZE = 20, 300, (1920, 1080)


def tracking_stream(objects=TRACK_OBJECTS, frames=TRACK_FRAMES, size=TRACK_SIZE, seed=0):
    """Detections of `objects` elliptic blobs (people-sized on a full-HD frame) moving at constant
    velocities with a pixel of jitter: what the tracker sees of a busy scene, without the model."""
    import cv2

    from mrcnn_cli.engine.detections import Detections
    from mrcnn_cli.io.coco import COCO_CLASSES
    from mrcnn_cli.ops.paste import MaskWindow
    rng = np.random.default_rng(seed)
    width, height = size
    w, h = 80, 160
    shape = cv2.ellipse(np.zeros((h, w), np.uint8), (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 1, -1) > 0
    start = rng.uniform((0, 0), (width - w, height - h), (objects, 2))
    velocity = rng.uniform(-6, 6, (objects, 2))
    out = []
    for t in range(frames):
        corners = np.clip(start + velocity * t + rng.integers(-1, 2, (objects, 2)), 0, (width - w, height - h))
        corners = corners.astype(int)
        boxes = np.concatenate([corners, corners + (w, h)], axis=1)
        out.append(Detections(boxes, rng.uniform(0.6, 0.99, objects), np.zeros(objects, int),
                              [MaskWindow(shape, int(x), int(y)) for x, y in corners], height, width, COCO_CLASSES))
    return out


def measure_tracking(runs=3):
    """Milliseconds per frame the tracker adds at TRACK_OBJECTS objects, per association: the
    median over frames of the median of `runs` passes over the same stream."""
    from mrcnn_cli.engine.tracking import MaskTracker, TrackOptions
    stream = tracking_stream()
    result = {'objects': TRACK_OBJECTS, 'frames': TRACK_FRAMES, 'frame_size': list(TRACK_SIZE), 'runs': runs}
    for association in ('mask', 'box'):
        medians = []
        for _ in range(runs):
            tracker, times = MaskTracker(TrackOptions(association=association), fps=30.0), []
            for t, det in enumerate(stream):
                start = time.perf_counter()
                tracker.update(det, timestamp=t / 30)
                times.append(time.perf_counter() - start)
            medians.append(float(np.median(times)) * 1000)
        result[f'{association}_ms_per_frame'] = float(np.median(medians))
    return result


def image_paths(folder=None, limit=64):
    """The bench's image files: up to `limit` from `folder`, or the bundled demo photo."""
    from mrcnn_cli.backends.onnx_export import DEMO_IMAGE
    if not folder:
        return [Path(DEMO_IMAGE)]
    paths = list_images(folder, limit)
    if not paths:
        raise MrcnnError(f'no images in {folder}')
    return paths


def load_images(folder=None, limit=64):
    """Decoded bench images (the bundled demo photo by default) and the mean decode time."""
    paths = image_paths(folder, limit)
    start = time.perf_counter()
    images = [read_image(p) for p in paths]
    return images, (time.perf_counter() - start) / len(images) * 1000


def reset_peak_rss():
    """Linux: restart the process's peak-RSS counter (from the current RSS)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass


def peak_rss_mb():
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(frozen=True)
class BenchPlan:
    """What `mrcnn bench` times, and how: `n` images cycled from `images` (decoded beforehand), in
    batches of `batch_size` after `warmup` untimed batches; `device` is the torch rows' device."""
    images: list
    n: int
    warmup: int = 5
    batch_size: int = 1
    device: str = 'cpu'
    progress: bool = True
    decode_ms: float = 0.0


@dataclass(frozen=True)
class PipelinePlan:
    """`--pipeline`: the whole predict path over `paths`, with pictures (`vis`) or without,
    the network run or its outputs replayed (`replay`)."""
    paths: list
    vis: bool = True
    replay: bool = False


def measure(name, precision, device, predict_batch, plan, *, batch_size=None, warm_every_batch=False):
    """Time `predict_batch(images, stage)` over the plan's images after its untimed warm-up batches
    (and, for a compiled model, after one untimed pass over every batch: each new input size
    compiles first).  `batch_size` overrides the plan's (the ONNX graph takes one image a call)."""
    images, n, warmup, progress = plan.images, plan.n, plan.warmup, plan.progress
    batch_size = batch_size or plan.batch_size
    dev = torch.device(device)
    cuda = dev.type == 'cuda'
    batches = [[images[(b * batch_size + j) % len(images)] for j in range(batch_size)]
               for b in range(-(-n // batch_size))]
    first_call_s = None
    for b in range(max(warmup, len(batches) if warm_every_batch else 0)):
        start = time.perf_counter()
        predict_batch(batches[b % len(batches)])
        first_call_s = first_call_s or time.perf_counter() - start
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
    reset_peak_rss()
    timer = StageTimer(device)
    latencies, dets = [], 0
    # disable=None: no bar when stderr is not a terminal
    with tqdm(total=n, desc=f'{name} {precision}', unit='img', disable=None if progress else True) as bar:
        for batch in batches:
            start = time.perf_counter()
            out = predict_batch(batch, timer)
            if cuda:
                torch.cuda.synchronize()
            latencies.append((time.perf_counter() - start) / len(batch))
            dets += sum(len(d) for d in out)
            bar.update(len(batch))
    total = sum(latencies) * batch_size
    lat = np.array(latencies) * 1000
    count = len(batches) * batch_size
    return BenchRow(
        backend=name, precision=precision, device=str(device), images=count,
        fps=count / total,
        latency_ms={'mean': float(lat.mean()), 'p50': float(np.percentile(lat, 50)),
                    'p90': float(np.percentile(lat, 90)), 'p99': float(np.percentile(lat, 99))},
        stages_ms={k: v / count * 1000 for k, v in timer.totals.items()},
        peak_rss_mb=peak_rss_mb(),
        cuda_max_allocated_mb=torch.cuda.max_memory_allocated(dev) / 2 ** 20 if cuda else None,
        detections_per_image=dets / count, first_result_s=first_call_s)


def machine_info(device):
    info = {'cpu': cpu_info().model, 'isa': isa_flags(), 'cores': os.cpu_count(),
            'torch_threads': torch.get_num_threads(), 'torch': torch.__version__, 'python': platform.python_version()}
    if torch.device(device).type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
    try:
        import onnxruntime
        info['onnxruntime'] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def format_table(report):
    rows = report.rows
    head = ['backend', 'precision', 'device', 'fps', 'mean ms', 'p50', 'p90', 'p99', 'peak RSS MB', 'vs torchvision']
    lines = [head]
    for r in rows:
        lat = [f'{r.latency_ms[k]:.0f}' if k in r.latency_ms else '-' for k in ('mean', 'p50', 'p90', 'p99')]
        lines.append([r.backend, r.precision, r.device, f'{r.fps:.3f}', *lat,
                      f'{r.peak_rss_mb:.0f}', f'{r.speedup_vs_torchvision:.2f}x' if r.speedup_vs_torchvision else '-'])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = ['  '.join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines]
    if report.tracking:
        t = report.tracking
        out.append(f'tracking (bytetrack, {t["objects"]} objects on {t["frame_size"][0]}x{t["frame_size"][1]} frames, '
                   f'median of {t["runs"]} runs): mask association {t["mask_ms_per_frame"]:.2f} ms/frame, box '
                   f'{t["box_ms_per_frame"]:.2f} ms/frame')
    for r in rows:
        if r.tiled:
            t = r.tiled
            out.append(f'  {r.backend} {r.precision}: {t["tiles"]} tiles of {t["tile"][0]}x{t["tile"][1]} in '
                       f'{t["seconds"]:.1f} s: {t["tiles_per_s"]:.2f} tiles/s, {t["megapixels_per_s"]:.2f} '
                       f'megapixels/s, {t["detections_per_megapixel"]:.0f} detections/megapixel; the CPU side adds '
                       f'{t["cpu_overhead"]:.1%} to the model time')
        if r.agreement:
            a = r.agreement
            out.append(f'  {r.backend} {r.precision} agreement with FP32 (its export\'s guard, {a["images"]} held-out '
                       f'images): box AP {a["box_ap"]:.3f}, mask AP {a["mask_ap"]:.3f}, found {a["found"]:.1%}')
        if r.stages_ms:
            parts = ', '.join(f'{k} {v:.0f}' for k, v in r.stages_ms.items())
            start = f'; load {r.load_s:.2f} s, first result {r.first_result_s:.2f} s' if r.first_result_s else ''
            out.append(f'  {r.backend} {r.precision} stages (ms/image): {parts}{start}')
    return '\n'.join(out)


class ReplayBackend(Backend):
    """A backend whose network returns, call by call, the outputs `backend`'s network gave for
    `images` (one image a call), from the first again after `restart()`: what remains of a run is
    the CPU side's own cost, the ceiling it puts on any accelerator."""

    def __init__(self, backend: Backend, images: list[np.ndarray]) -> None:
        super().__init__(backend.spec, backend.classes, backend.device, backend.source, backend.precision,
                         backend.palette, backend.scale)
        self.name = backend.name   # type: ignore[misc] # this instance stands for that backend
        self.recorded = []
        for img in images:
            p = backend.prepare(img)
            self.recorded.append(backend.run_network(pad_batch([p.tensor]), [p.img_shape]))
        self.restart()

    def restart(self) -> None:
        self._replay = itertools.cycle(self.recorded)

    def run_network(self, batch, img_shapes, stage=no_stage):
        return next(self._replay)


def measure_pipeline(name, predictor, pipeline, n, progress=True, runs=3):
    """A whole `mrcnn predict` over n images cycled from `pipeline.paths` (decode, preprocess,
    network, paste, RLE, drawing, encoding and writing, in its three threads), every detection the
    model returns written (mmdetection's test threshold, the most work per image); the median of
    `runs` runs."""
    paths, vis, replay = pipeline.paths, pipeline.vis, pipeline.replay
    import shutil
    import tempfile

    from mrcnn_cli.commands.predict import PredictOptions, predict_sources
    if replay:
        replaying = ReplayBackend(predictor.backend, [read_image(p) for p in paths])
        predictor, restart = Predictor(replaying), replaying.restart
    else:
        restart = lambda: None  # noqa: E731
    fps_runs = []
    with tempfile.TemporaryDirectory(prefix='mrcnn-bench-') as tmp:
        inputs = Path(tmp) / 'in'
        inputs.mkdir()
        for k in range(n):   # copies, not links: a run takes each file once
            src = Path(paths[k % len(paths)])
            shutil.copyfile(src, inputs / f'{k:06d}{src.suffix}')
        opts = PredictOptions(out_dir=Path(tmp) / 'out', score_thr=0.05, vis=vis, progress=progress)
        first, _ = collect_sources([inputs / f'000000{paths[0].suffix}'])
        every, _ = collect_sources([inputs])
        predict_sources(predictor, first, opts, warn=lambda m: None)   # warm-up
        reset_peak_rss()
        for _ in range(runs if replay else 1):   # the network's own runs are long enough to time once
            shutil.rmtree(opts.out_dir)
            restart()
            start = time.perf_counter()
            summary = predict_sources(predictor, every, opts, warn=lambda m: None)
            fps_runs.append(summary.images / (time.perf_counter() - start))
    fps = statistics.median(fps_runs)
    pipeline = {'fps': fps, 'vis': vis, 'replay': replay, 'detections_per_image': summary.instances / summary.images,
                'fps_runs': fps_runs}
    return BenchRow(backend=f'{name} predict' + (' (replay)' if replay else ''), precision=predictor.precision,
                    device=str(predictor.device), images=summary.images, fps=fps, latency_ms={}, stages_ms={},
                    peak_rss_mb=peak_rss_mb(), detections_per_image=pipeline['detections_per_image'],
                    pipeline=pipeline)


@dataclass(frozen=True)
class TiledPlan:
    """`--tile`: sliced inference over each of `paths` once, with `tiles` (TileOptions)."""
    paths: list
    tiles: object


def measure_tiled(name, predictor, tiled, progress=True):
    """A whole `mrcnn predict --tile --save-geojson` over `paths` (each image once: large images
    are slow), with pictures: tiles/s, megapixels/s, and what the CPU side (reading, merging, RLE,
    polygons, GeoJSON, drawing, writing) adds to the model's own time (each tile's resize and
    normalisation, the network, NMS and mask paste: what a photo of that size costs, as the fps
    rows time it): `cpu_overhead` = wall time / model time - 1."""
    import json
    import tempfile

    from mrcnn_cli.commands.options import SaveOptions
    from mrcnn_cli.commands.predict import PredictOptions, predict_sources
    tiles = tiled.tiles
    sources, _ = collect_sources(tiled.paths)
    model_time = StageTimer(predictor.device)   # preparing each tile, the network, NMS and the paste
    counted = {'tiles': 0, 'pixels': 0}
    with tempfile.TemporaryDirectory(prefix='mrcnn-bench-') as tmp:
        opts = PredictOptions(out_dir=Path(tmp) / 'out', progress=progress, tiles=tiles,
                              save=SaveOptions(geojson=True), stage=model_time)
        predictor.backend.predict_batch([read_image(image_paths()[0])])   # warm-up
        reset_peak_rss()
        start = time.perf_counter()
        summary = predict_sources(predictor, sources, opts, warn=lambda m: None)
        wall = time.perf_counter() - start
        for line in (Path(tmp) / 'out' / 'predictions.jsonl').read_text().splitlines()[1:]:
            record = json.loads(line)
            if 'width' in record:
                counted['pixels'] += record['width'] * record['height']
                counted['tiles'] += _tile_count(record['width'], record['height'], tiles)
    megapixels = counted['pixels'] / 1e6
    tiled = {'tile': list(tiles.size), 'overlap': tiles.overlap, 'full': tiles.full, 'tiles': counted['tiles'],
             'tiles_per_s': counted['tiles'] / wall, 'megapixels_per_s': megapixels / wall, 'seconds': wall,
             'model_s': model_time.total, 'cpu_overhead': wall / model_time.total - 1,
             'detections_per_megapixel': summary.instances / megapixels}
    return BenchRow(backend=f'{name} tiled', precision=predictor.precision, device=str(predictor.device),
                    images=summary.images, fps=summary.images / wall, latency_ms={}, stages_ms={},
                    peak_rss_mb=peak_rss_mb(), detections_per_image=summary.instances / summary.images, tiled=tiled)


def _tile_count(width, height, tiles):
    from mrcnn_cli.engine.tiling import tile_grid
    return len(tile_grid(width, height, tiles)) + tiles.full


def report_dict(report):
    return asdict(report)


def measure_torchvision_peer(peer, plan):
    """torchvision's maskrcnn_resnet50_fpn on the checkpoint's own weights (`peer`, a ModelChoice),
    FP32, in a fresh (spawned) process: the state its users run it in (glibc's default allocator),
    and neither row's speed or peak RSS carries what the other left behind."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    try:   # an executor, not a Pool: a worker that dies (e.g. killed for memory) raises, never hangs
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn')) as pool:
            return pool.submit(_torchvision_row, peer, plan).result()
    except BrokenProcessPool:
        raise MrcnnError('the torchvision peer process died (out of memory?)') from None


def _torchvision_row(peer, plan):
    from mrcnn_cli.commands.torchvision_peer import TorchvisionPeer
    loaded = load_torch_model(peer.name, peer.weights, peer.style, peer.weights_dir)
    runner = TorchvisionPeer(loaded.model, plan.device, peer.scale)   # as loaded: BatchNorms unfolded
    return measure('torchvision', 'fp32', plan.device, runner.predict_batch, plan)


def bench_rows(choice, batch_size=1, warn=print, int8=()):
    """The rows `mrcnn bench` times, one ModelChoice each: the backend `choice` names, or with
    backend='all' every backend that is installed, in the precisions each is timed in; then, for
    each file of `int8` (from `mrcnn export --int8`), its INT8 row on the runtime it was made for
    (OpenVINO for an .xml, onnxruntime for an .onnx).  An option a row's backend does not take is
    refused (one backend) or said in one warning line ('all'), never ignored."""
    from mrcnn_cli.backends.onnx_runtime import OnnxBackend
    from mrcnn_cli.backends.openvino import OpenVinoBackend
    from mrcnn_cli.io.files import model_file_kind
    rows = _choice_rows(choice, warn)
    for path in int8:
        cls = OpenVinoBackend if model_file_kind(path) == 'openvino' else OnnxBackend
        rows.append(ModelChoice(onnx=path, backend=cls.name, precision=Precision.INT8,
                                device=cls.device_for(choice.device), scale=choice.scale))
        cls.check_choice(rows[-1])
    if batch_size > 1 and not all(backend_for(row).batches for row in rows):
        warn('warning: the ONNX graph takes one image per call: --batch-size applies to the torch rows only')
    return rows


def _choice_rows(choice, warn):
    if choice.backend != 'all':
        backend_for(choice).check_choice(choice)
        rows = [choice]
    else:
        rows = []
        for cls in BACKENDS.values():
            if not cls.available():
                warn(f'warning: no {cls.name} rows: what it needs is not installed (pip install '
                     f"'mrcnn-cli[{cls.name}]')")
                continue
            device = cls.device_for(choice.device)
            note = cls.bench_note(device)
            if note:
                warn(note)
            rows += [replace(choice, backend=cls.name, precision=precision, device=device,
                             compile=choice.compile and cls.compiles, onnx=choice.onnx if cls.runs_graph else None,
                             ort_provider=choice.ort_provider if cls.takes_provider else None)
                     for precision in cls.bench_precisions(choice.precision, device)]
        for row in rows:
            backend_for(row).check_choice(row)
        kept = [f for f, on in ((f'--{choice.precision}', choice.precision != Precision.FP32),
                                ('--compile', choice.compile)) if on]
        if kept:   # the first row is the checkpoint's backend, the one row that takes them
            warn(f'warning: {" and ".join(kept)} apply to the {rows[0].backend} row only; the other rows keep their '
                 'own precisions')
    return rows


def run_bench(make_predictor, rows, plan, *, compare=None, pipeline=None, tiled=None, track=False):
    """Benchmark each row (a ModelChoice, built by `make_predictor`) in this process on the plan's
    images (and first, with `compare='torchvision'`, the torchvision peer on the first row's weights
    in a process of its own); with `pipeline` (a PipelinePlan) also the whole predict path, with
    `tiled` (a TiledPlan) sliced inference, with `track` what the tracker adds per frame."""
    report = BenchReport(METHOD, machine_info(plan.device), plan.decode_ms,
                         sorted({tuple(int(v) for v in img.shape[:2]) for img in plan.images}))
    peer_row = None
    if compare == 'torchvision':
        from mrcnn_cli.commands.torchvision_peer import check_peer_spec
        peer = rows[0]
        check_peer_spec(load_torch_model(peer.name, peer.weights, peer.style, peer.weights_dir).model.spec)
        release_freed_memory()   # before a process is spawned for it
        peer_row = measure_torchvision_peer(peer, plan)
    for row_choice in rows:
        start = time.perf_counter()
        predictor = make_predictor(row_choice)
        load_s = time.perf_counter() - start
        compiled = predictor.compiled
        row = measure(predictor.name, predictor.precision, predictor.device, predictor.backend.predict_batch, plan,
                      batch_size=None if predictor.batches else 1, warm_every_batch=compiled)
        row.device = predictor.execution_device
        row.agreement = getattr(predictor.backend, 'agreement', None)
        row.load_s = load_s
        row.first_result_s = load_s + row.first_result_s if row.first_result_s is not None else None
        if compiled:
            row.precision += '+compile'
        report.rows.append(row)
        if pipeline:   # the whole predict path on the same backend
            report.rows.append(measure_pipeline(predictor.name, predictor, pipeline, plan.n, plan.progress))
        if tiled:
            report.rows.append(measure_tiled(predictor.name, predictor, tiled, plan.progress))
        del predictor
        release_freed_memory()   # the next backend's peak RSS must be its own
    if peer_row is not None:
        for r in report.rows:
            r.speedup_vs_torchvision = r.fps / peer_row.fps
        report.rows.append(peer_row)
    if track:
        report.tracking = measure_tracking()
    return report
