"""`mrcnn bench --fps`: what a user gets per image, measured the way mmdetection's benchmark does."""
import itertools
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mrcnn_cli.engine.memory import release_freed_memory
from mrcnn_cli.engine.timing import StageTimer
from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.images import read_image
from mrcnn_cli.io.sources import list_images

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
    cuda_max_allocated_mb: float = None
    speedup_vs_torchvision: float = None
    detections_per_image: float = 0.0
    pipeline: dict = None      # a whole `mrcnn predict` run: {fps, vis, replay, detections_per_image}
    load_s: float = None       # building the predictor (checkpoint read, model built and rewritten)
    first_result_s: float = None   # load + the first image's detections (the first call compiles, warms up)


@dataclass
class BenchReport:
    method: str
    machine: dict
    decode_ms_per_image: float
    image_sizes: list
    rows: list = field(default_factory=list)


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


def measure(name, precision, device, predict_batch, images, n, warmup, batch_size, progress=True,
            warm_every_batch=False):
    """Time `predict_batch(images, stage)` over n images after `warmup` untimed batches (and, for
    a compiled model, after one untimed pass over every batch: each new input size compiles first)."""
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
    info = {'cpu': platform.processor() or platform.machine(), 'cores': os.cpu_count(),
            'torch_threads': torch.get_num_threads(), 'torch': torch.__version__, 'python': platform.python_version()}
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                info['cpu'] = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
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
    for r in rows:
        if r.stages_ms:
            parts = ', '.join(f'{k} {v:.0f}' for k, v in r.stages_ms.items())
            start = f'; load {r.load_s:.2f} s, first result {r.first_result_s:.2f} s' if r.first_result_s else ''
            out.append(f'  {r.backend} {r.precision} stages (ms/image): {parts}{start}')
    return '\n'.join(out)


def replay_network(predictor, images):
    """Make `predictor` (one bench made for itself) return, call by call, the network outputs of a
    real pass over `images`: what remains is the CPU side's own cost, the ceiling it puts on any
    accelerator."""
    recorded, real = [], predictor.run_network

    def record(batch, img_shapes, stage=None):
        outs = real(batch, img_shapes) if stage is None else real(batch, img_shapes, stage)
        recorded.append(outs)
        return outs

    predictor.run_network = record
    for img in images:
        predictor.predict_batch([img])

    def restart():   # from the first image's outputs again
        replay = itertools.cycle(recorded)
        predictor.run_network = lambda batch, img_shapes, stage=None: next(replay)
    restart()
    return restart


def measure_pipeline(name, predictor, paths, n, vis=True, replay=False, progress=True, runs=3):
    """A whole `mrcnn predict` over n images cycled from `paths` (decode, preprocess, network, paste,
    RLE, drawing, encoding and writing, in its three threads), every detection the model returns
    written (mmdetection's test threshold, the most work per image); the median of `runs` runs."""
    import shutil
    import tempfile

    from mrcnn_cli.commands.predict import PredictOptions, predict_sources
    restart = replay_network(predictor, [read_image(p) for p in paths]) if replay else (lambda: None)
    fps_runs = []
    with tempfile.TemporaryDirectory(prefix='mrcnn-bench-') as tmp:
        inputs = Path(tmp) / 'in'
        inputs.mkdir()
        for k in range(n):   # copies, not links: a run takes each file once
            src = Path(paths[k % len(paths)])
            shutil.copyfile(src, inputs / f'{k:06d}{src.suffix}')
        opts = PredictOptions(out_dir=Path(tmp) / 'out', score_thr=0.05, vis=vis, progress=progress)
        predict_sources(predictor, [inputs / f'000000{paths[0].suffix}'], opts, warn=lambda m: None)   # warm-up
        reset_peak_rss()
        for _ in range(runs if replay else 1):   # the network's own runs are long enough to time once
            shutil.rmtree(opts.out_dir)
            restart()
            start = time.perf_counter()
            summary = predict_sources(predictor, [inputs], opts, warn=lambda m: None)
            fps_runs.append(summary.images / (time.perf_counter() - start))
    fps = statistics.median(fps_runs)
    pipeline = {'fps': fps, 'vis': vis, 'replay': replay, 'detections_per_image': summary.instances / summary.images,
                'fps_runs': fps_runs}
    return BenchRow(backend=f'{name} predict' + (' (replay)' if replay else ''), precision=predictor.precision,
                    device=str(predictor.device), images=summary.images, fps=fps, latency_ms={}, stages_ms={},
                    peak_rss_mb=peak_rss_mb(), detections_per_image=pipeline['detections_per_image'],
                    pipeline=pipeline)


def report_dict(report):
    return asdict(report)


def measure_torchvision_peer(model_args, device, images, n, warmup, batch_size, progress, scale):
    """torchvision's maskrcnn_resnet50_fpn on the checkpoint's own weights, FP32, in a fresh
    (spawned) process: the state its users run it in (glibc's default allocator), and neither
    row's speed or peak RSS carries what the other left behind.  `model_args` are
    `load_torch_model`'s (model name, weights, style, weights dir)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    try:   # an executor, not a Pool: a worker that dies (e.g. killed for memory) raises, never hangs
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn')) as pool:
            return pool.submit(_torchvision_row, model_args, str(device), images, n, warmup, batch_size,
                               progress, scale).result()
    except BrokenProcessPool:
        raise MrcnnError('the torchvision peer process died (out of memory?)') from None


def _torchvision_row(model_args, device, images, n, warmup, batch_size, progress, scale):
    from mrcnn_cli.backends.pytorch import load_torch_model
    from mrcnn_cli.commands.torchvision_peer import TorchvisionPeer
    peer = TorchvisionPeer(load_torch_model(*model_args)[0], device, scale)   # as loaded: BatchNorms unfolded
    return measure('torchvision', 'fp32', device, peer.predict_batch, images, n, warmup, batch_size, progress)


def bench_rows(backend, precision='fp32', compile_model=False, ort_provider=None, batch_size=1, warn=print):
    """The (backend, precision) rows `mrcnn bench --backend` times.  An option that does not apply
    to a row is refused (one backend) or said in one warning line (--backend all), never ignored."""
    from mrcnn_cli.backends.openvino import openvino_available
    if backend != 'all':
        if precision != 'fp32' and backend == 'onnx':
            raise MrcnnError(f'--{precision} does not apply to onnxruntime (it runs the file as exported: '
                             '`mrcnn export --fp16` for FP16); try --backend openvino')
        if compile_model and backend != 'torch':
            raise MrcnnError(f'--compile applies to the torch backend, not {backend}')
        if ort_provider and backend != 'onnx':
            raise MrcnnError(f'--ort-provider applies to --backend onnx, not {backend}')
        rows = [(backend, precision)]
    else:
        rows = [('torch', precision), ('onnx', 'fp32')]
        if openvino_available():
            rows += [('openvino', 'fp32'), ('openvino', 'bf16')]
        else:
            warn("warning: no OpenVINO rows: the openvino package is not installed (pip install "
                 "'mrcnn-cli[openvino]')")
        if precision != 'fp32' or compile_model:
            flags = ' and '.join(f for f, on in ((f'--{precision}', precision != 'fp32'),
                                                 ('--compile', compile_model)) if on)
            warn(f'warning: {flags} apply to the torch row only; the onnx and openvino rows keep their own precisions')
    if batch_size > 1 and any(b != 'torch' for b, _ in rows):
        warn('warning: the ONNX graph takes one image per call: --batch-size applies to the torch row only')
    return rows


def run_bench(make_predictor, backends, images, decode_ms, n, warmup, batch_size, device, compare=None,
              progress=True, peer_model_args=None, scale=(1333, 800), pipeline=None):
    """Benchmark each (backend, precision) row (`make_predictor(backend, precision)`) in this
    process on the same images (and first, with `peer_model_args` for its weights, the
    torchvision peer in a process of its own)."""
    report = BenchReport(METHOD, machine_info(device), decode_ms,
                         sorted({tuple(int(v) for v in img.shape[:2]) for img in images}))
    peer_row = None
    if compare == 'torchvision':
        from mrcnn_cli.backends.pytorch import load_torch_model
        from mrcnn_cli.commands.torchvision_peer import check_peer_spec
        check_peer_spec(load_torch_model(*peer_model_args)[0].spec)   # before a process is spawned for it
        release_freed_memory()
        peer_row = measure_torchvision_peer(peer_model_args, device, images, n, warmup, batch_size, progress,
                                            scale)
    for backend, precision in backends:
        start = time.perf_counter()
        predictor = make_predictor(backend, precision)
        load_s = time.perf_counter() - start
        compiled = getattr(predictor, 'compiled', False)
        row = measure(backend, predictor.precision, predictor.device, predictor.predict_batch, images, n,
                      warmup, batch_size if backend == 'torch' else 1, progress, warm_every_batch=compiled)
        row.device = getattr(predictor, 'providers', [getattr(predictor, 'ov_device', row.device)])[0]
        row.load_s = load_s
        row.first_result_s = load_s + row.first_result_s if row.first_result_s is not None else None
        if compiled:
            row.precision += '+compile'
        report.rows.append(row)
        if pipeline:   # {'paths', 'vis', 'replay'}: the whole predict path on the same backend
            report.rows.append(measure_pipeline(backend, predictor, pipeline['paths'], n, pipeline['vis'],
                                                pipeline['replay'], progress))
        del predictor
        release_freed_memory()   # the next backend's peak RSS must be its own
    if peer_row is not None:
        for r in report.rows:
            r.speedup_vs_torchvision = r.fps / peer_row.fps
        report.rows.append(peer_row)
    return report
