"""The `mrcnn` command line: parses options and calls the library, nothing more."""
import contextlib
import os
import signal
import sys
import warnings
from pathlib import Path

import click

from mrcnn_cli.errors import MrcnnError, command_line_voice
from mrcnn_cli.version import __version__

STYLE = click.Choice(['pytorch', 'caffe'])


def warn(message):
    """One line on stderr that never lands inside a progress bar's line."""
    from tqdm import tqdm
    tqdm.write(message, file=sys.stderr)


def weights_dir_option(f):
    return click.option('--weights-dir', type=click.Path(file_okay=False), default=None,
                        help='Where zoo checkpoints are cached (default: $MRCNN_WEIGHTS_DIR if set, else weights/ '
                             'in a checkout, else ~/.cache/mrcnn/weights).')(f)


def _complete_zoo_names(ctx, param, incomplete):
    from mrcnn_cli.io import zoo as zoo_lib
    return [e.name for e in zoo_lib.entries() if e.name.startswith(incomplete)]


def model_options(f):
    f = weights_dir_option(f)
    f = click.option('--device', default='auto', show_default=True, help='auto, cpu, cuda or cuda:N.')(f)
    f = click.option('--style', type=STYLE, default=None,
                     help="Backbone style (default: the checkpoint's training config, or the zoo "
                          "entry's; else pytorch).")(f)
    f = click.option('--weights', type=click.Path(dir_okay=False), default=None,
                     help='A local checkpoint (mmdetection 3.x/2.x file or bare state_dict).')(f)
    f = click.option('--model', 'model_name', default=None, shell_complete=_complete_zoo_names,
                     help='A zoo name, see `mrcnn zoo list`.')(f)
    return f


def _parse_scale(ctx, param, value):
    try:
        long, short = (int(v) for v in value.replace('x', ',').split(','))
    except ValueError:
        raise click.BadParameter(f'need LONG,SHORT such as 1333,800, not {value!r}') from None
    return long, short


def scale_option(f):
    return click.option('--scale', default='1333,800', show_default=True, callback=_parse_scale,
                        help="Test-time resize bound LONG,SHORT (keep-ratio); mmdetection's 1333,800 gives "
                             'its numbers, smaller is faster.')(f)


def max_pixels_option(f):
    from mrcnn_cli.io.image_header import MAX_PIXELS, OPENCV_MAX_PIXELS
    return click.option('--max-pixels', type=click.IntRange(1, OPENCV_MAX_PIXELS), default=MAX_PIXELS,
                        show_default=True,
                        help='Skip images (and videos) larger than this many pixels, read from the file header '
                             'before decoding: decompression bombs and damaged headers.')(f)


@click.group(context_settings={'help_option_names': ['-h', '--help']})
@click.version_option(__version__, prog_name='mrcnn')
@click.option('--debug', is_flag=True, help='Show Python tracebacks on errors.')
@click.option('-q', '--quiet', is_flag=True,
              help='Errors and warnings only: no progress bars, no model line, no summaries.')
@click.pass_context
def cli(ctx, debug, quiet):
    """mmdetection-exact Mask R-CNN: masks, COCO JSON, ONNX and fps from model-zoo checkpoints."""
    ctx.obj = {'quiet': quiet}
    if quiet:   # what a command prints on stdout goes; stderr keeps its errors and warnings
        sink = ctx.with_resource(open(os.devnull, 'w'))
        ctx.with_resource(contextlib.redirect_stdout(sink))


def warn_unused(ctx, names, reason):
    """One warning line naming the options given on the command line that `reason` makes unused."""
    from click.core import ParameterSource
    flags = {p.name: max(p.opts, key=len) for p in ctx.command.params}
    given = [flags[n] for n in names if ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT)]
    if given:
        warn(f'warning: {", ".join(given)} {"does" if len(given) == 1 else "do"} not apply {reason}; ignored')


def quiet():
    ctx = click.get_current_context(silent=True)
    return bool(ctx and (ctx.find_root().obj or {}).get('quiet'))


def backend_options(f):
    f = click.option('--ort-provider', type=click.Choice(['cuda', 'tensorrt', 'cpu']), default=None,
                     help='onnxruntime provider (default: CUDA with a GPU, else CPU).')(f)
    f = click.option('--onnx', 'onnx_path', type=click.Path(dir_okay=False), default=None,
                     help='An ONNX file from `mrcnn export` (for --backend onnx or openvino).')(f)
    f = click.option('--backend', type=click.Choice(['torch', 'onnx', 'openvino']), default=None,
                     help='torch (the checkpoint), onnx (onnxruntime) or openvino, both on an --onnx file '
                          '[default: onnx with --onnx, else torch].')(f)
    return f


def precision_options(f):
    f = click.option('--compile', 'compile_model', is_flag=True,
                     help='torch.compile backbone+FPN+RPN (CUDA graphs on a GPU); each new input size '
                          'compiles once, so best for video and fixed sizes.')(f)
    f = click.option('--bf16', is_flag=True, help='BF16 autocast (CPUs with BF16 support, or GPUs).')(f)
    f = click.option('--fp16', is_flag=True, help='FP16 autocast on a CUDA GPU (NMS, decoding, paste stay FP32).')(f)
    return f


def precision_of(fp16, bf16):
    if fp16 and bf16:
        raise click.UsageError('choose one of --fp16 and --bf16')
    return 'fp16' if fp16 else 'bf16' if bf16 else 'fp32'


def parse_class_filter(text, classes):
    """--classes person,car (or 0-based indexes, 0,2) -> ['person', 'car'], each checked against the
    model's classes (an unknown name gets the closest known one)."""
    if not text:
        return None
    from mrcnn_cli.engine.detections import select_classes
    items = [int(c) if c.isdigit() else c for c in (c.strip() for c in text.split(',')) if c != '']
    try:
        return [classes[i] for i in select_classes(items, classes)]
    except MrcnnError as e:
        raise MrcnnError(f'{e} (--classes)') from None


def classes_known_before_loading(model_name, weights, onnx_path):
    """The model's class names when they are known without reading a model file: a zoo entry's
    (every zoo model is COCO's); None otherwise."""
    if model_name and not weights and not onnx_path:
        from mrcnn_cli.io import zoo
        from mrcnn_cli.io.coco import COCO_CLASSES
        zoo.get_entry(model_name)   # an unknown name is its own error
        return COCO_CLASSES
    return None


def load_model(model_name, weights, onnx_path, backend, style, device, weights_dir, fp16=False, bf16=False,
               compile_model=False, ort_provider=None, announce=True, scale=(1333, 800)):
    """The predictor for a command's options (through the one `load`), with the CLI's own
    process settings: the CPU allocator tuned, inductor's toolchain warning silenced."""
    from mrcnn_cli.api import load
    from mrcnn_cli.engine.memory import tune_cpu_allocator
    if compile_model:   # inductor's C++ toolchain probe warns that a CPU build has no CUDA
        import logging
        logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
    predictor = load(model_name, weights=weights, onnx=onnx_path, backend=backend, style=style, device=device,
                     precision=precision_of(fp16, bf16), compile=compile_model, weights_dir=weights_dir,
                     ort_provider=ort_provider, scale=scale)
    if predictor.device.type == 'cpu':
        tune_cpu_allocator()
    elif compile_model:   # CUDA graphs replay fixed sizes: let cuDNN pick its fastest kernels once per size
        import torch
        torch.backends.cudnn.benchmark = True
    if announce and not quiet():
        click.echo(f'model: {predictor.describe()}', err=True)
    return predictor


@cli.command()
@click.argument('sources', nargs=-1, required=True)
@model_options
@backend_options
@precision_options
@click.option('--score-thr', type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help='Minimum score drawn and written to JSON (the model always applies 0.05).')
@click.option('--out', 'out_dir', type=click.Path(file_okay=False), default='runs/predict', show_default=True)
@click.option('--no-vis', is_flag=True, help='Write predictions.json only, no pictures or videos.')
@click.option('--classes', 'class_names', default=None, help='Keep only these classes, e.g. person,car.')
@click.option('--batch-size', type=click.IntRange(1), default=1, show_default=True,
              help='Images or frames per network call (results are identical to 1).')
@click.option('--vid-stride', type=click.IntRange(1), default=1, show_default=True,
              help='Run the model on every Nth video frame; frames between reuse the last result.')
@click.option('--max-frames', type=click.IntRange(1), default=None, help='Stop each video after N frames.')
@click.option('--show', is_flag=True,
              help='Show results in a window: needs a display and a GUI build of OpenCV, which the default '
                   'install (opencv-python-headless) is not; see the README.')
@scale_option
@click.option('--save-masks', is_flag=True,
              help='masks/: a 16-bit instance map, a class-id map and one PNG per instance, per image or frame.')
@click.option('--save-txt', is_flag=True, help='labels/: YOLO segmentation labels (and labels/classes.txt).')
@click.option('--save-conf', is_flag=True, help='With --save-txt: the score last on each line.')
@click.option('--save-crop', is_flag=True, help='crops/<class>/: each instance as an RGBA PNG, its mask as alpha.')
@click.option('--mask-format', type=click.Choice(['rle', 'polygon']), default='rle', show_default=True,
              help='Segmentation in predictions.json (polygons cannot express holes).')
@click.option('--line-width', type=click.IntRange(1), default=None, help='Box and contour width in px.')
@click.option('--mask-alpha', type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help='Opacity of the drawn masks.')
@click.option('--hide-labels', is_flag=True, help='Draw no class names.')
@click.option('--hide-conf', is_flag=True, help='Draw no scores.')
@click.option('--hide-boxes', is_flag=True, help='Draw no boxes.')
@click.option('--hide-masks', is_flag=True, help='Draw no masks.')
@click.option('--codec', type=click.Choice(['h264', 'vp9', 'mp4v']), default='h264', show_default=True,
              help='Annotated videos: H.264 MP4 or VP9 WebM (browsers play both), or OpenCV mp4v.')
@click.option('--resume', is_flag=True, help='Skip the inputs OUT/predictions.jsonl already has (after a crash).')
@click.option('--exist-ok', is_flag=True,
              help="Write into an --out that holds another run's results (files of the same names are replaced); "
                   'without it such a folder is refused (the default folder becomes runs/predict2, ...).')
@click.option('--shard', default=None, help='K/N: this process takes every Nth input from the Kth; '
                                            '`mrcnn merge OUT` joins the parts.')
@max_pixels_option
def predict(sources, model_name, weights, style, device, weights_dir, backend, onnx_path, ort_provider, fp16, bf16,
            compile_model, score_thr, out_dir, no_vis, class_names, batch_size, vid_stride, max_frames, show, scale,
            save_masks, save_txt, save_conf, save_crop, mask_format, line_width, mask_alpha, hide_labels, hide_conf,
            hide_boxes, hide_masks, codec, resume, exist_ok, shard, max_pixels):
    """Segment SOURCES: image files, directories, glob patterns, videos, camera indexes (0), image
    URLs (http/https, fetched) or rtsp/http stream URLs."""
    from mrcnn_cli.commands.predict import PredictOptions, predict_sources
    from mrcnn_cli.io.sources import collect_sources
    found, missing = collect_sources(sources, exclude_dir=out_dir, warn=warn)   # before any model download
    from mrcnn_cli.engine.distributed import distributed_context, parse_shard, torchrun_device
    if shard:
        parse_shard(shard)   # a bad --shard is an error before any model loads
    early_classes = classes_known_before_loading(model_name, weights, onnx_path)
    if early_classes is not None:
        parse_class_filter(class_names, early_classes)   # a typo is an error before any download
    rank = (distributed_context() or (0,))[0]
    predictor = load_model(model_name, weights, onnx_path, backend, style, torchrun_device(device), weights_dir,
                           fp16, bf16, compile_model, ort_provider, announce=rank == 0, scale=scale)
    if batch_size > 1 and predictor.name != 'torch':
        warn(f'warning: the ONNX graph takes one image per call: --batch-size {batch_size} changes nothing '
             f'with --backend {predictor.name}')
    ctx = click.get_current_context()
    from click.core import ParameterSource
    default_out = ctx.get_parameter_source('out_dir') == ParameterSource.DEFAULT
    if not save_txt:
        warn_unused(ctx, ('save_conf',), 'without --save-txt')
    if no_vis:
        warn_unused(ctx, ('line_width', 'mask_alpha', 'hide_labels', 'hide_conf', 'hide_boxes', 'hide_masks', 'codec'),
                    'with --no-vis (nothing is drawn)')
    draw = {'line_width': line_width, 'mask_alpha': mask_alpha, 'labels': not hide_labels, 'conf': not hide_conf,
            'boxes': not hide_boxes, 'masks': not hide_masks}
    opts = PredictOptions(out_dir, score_thr, not no_vis, parse_class_filter(class_names, predictor.classes),
                          batch_size, vid_stride, max_frames, show, save_masks=save_masks, save_txt=save_txt,
                          save_conf=save_conf, save_crop=save_crop, mask_format=mask_format, draw=draw, codec=codec,
                          resume=resume, shard=shard, max_pixels=max_pixels, progress=not quiet(),
                          exist_ok=exist_ok, next_free_out=default_out)
    s = predict_sources(predictor, found, opts, warn=warn, missing=missing)
    done = ', '.join(part for part in (f'{s.images} images' if s.images else '',
                                       f'{s.frames} video frames' if s.frames else '') if part) or 'nothing'
    earlier = f' ({s.skipped} inputs done by the earlier run)' if s.skipped else ''
    if s.json_path is None:   # a torchrun rank other than 0: rank 0 reports
        pass
    elif s.json_path == s.log_path:   # one shard of several
        click.echo(f'{done}{earlier} in {s.seconds:.1f} s -> {s.log_path}; when every part is done: '
                   f'mrcnn merge {s.out_dir}')
    else:
        pictures = '' if no_vis else f' and {len(s.outputs)} pictures/videos in {s.out_dir}/'
        click.echo(f'{done}, {s.instances} instances (score >= {score_thr}){earlier} in {s.seconds:.1f} s '
                   f'-> {s.json_path}{pictures}')
    if s.failed:
        click.echo(f'{len(s.failed)} inputs failed: ' + ', '.join(s.failed[:5])
                   + (' ...' if len(s.failed) > 5 else ''), err=True)
        sys.exit(1)


@cli.command('merge')
@click.argument('out_dir', type=click.Path(file_okay=False, exists=True))
def merge(out_dir):
    """Join the parts of a sharded (--shard K/N) or torchrun `mrcnn predict` in OUT_DIR into
    OUT_DIR/predictions.json, the document one process would have written."""
    from mrcnn_cli.io.results_log import merge_logs
    click.echo(f'-> {merge_logs(out_dir)}')


@cli.command('export')
@click.option('--onnx', 'onnx_path', type=click.Path(dir_okay=False), required=True, help='Output .onnx file.')
@model_options
@click.option('--opset', type=click.IntRange(16), default=17, show_default=True)
@click.option('--fp16', is_flag=True, help='FP16 network; box decoding and NMS stay FP32.')
@click.option('--check-image', type=click.Path(dir_okay=False, exists=True), default=None,
              help='Image for the onnxruntime-vs-PyTorch check (default: the bundled demo photo).')
def export(onnx_path, model_name, weights, style, device, weights_dir, opset, fp16, check_image):
    """Export one ONNX file (standard operators, dynamic size) and check it against PyTorch.

    The export itself always traces on the CPU; --device picks where onnxruntime runs the
    self-check (auto: its CUDA provider when there is a GPU)."""
    from mrcnn_cli.api import load
    from mrcnn_cli.backends.onnx_export import DEMO_IMAGE, export_onnx
    from mrcnn_cli.engine.compare import agreement
    from mrcnn_cli.io.images import read_image
    predictor = load(model_name, weights=weights, style=style, device='cpu', weights_dir=weights_dir)
    seconds = export_onnx(predictor, onnx_path, opset, fp16)
    size = os.path.getsize(onnx_path) / 2 ** 20
    click.echo(f'exported {onnx_path} ({size:.1f} MiB, opset {opset}, {"fp16" if fp16 else "fp32"}) in {seconds:.1f} s')
    image_path = check_image or DEMO_IMAGE
    img = read_image(image_path)
    ort_predictor = load(onnx=onnx_path, device=device)
    result = agreement(predictor(img), ort_predictor(img), max_score_diff=0.05 if fp16 else 0.01)
    click.echo(f'check on {os.path.basename(str(image_path))}: onnxruntime ({ort_predictor.providers[0]}) vs '
               f'PyTorch: {result}')
    if result.matched < result.total:
        click.echo('warning: onnxruntime and PyTorch disagree on some detections', err=True)


@cli.group('eval')
def eval_group():
    """Evaluate box and mask AP."""


@eval_group.command('coco')
@click.option('--ann', type=click.Path(dir_okay=False), required=True, help='COCO annotation JSON.')
@click.option('--images', 'images_dir', type=click.Path(file_okay=False), default=None,
              help='Folder with the annotation file\'s images.')
@click.option('--results', 'results_files', multiple=True,
              help='Evaluate existing COCO results file(s) instead of running a model (globs allowed).')
@model_options
@backend_options
@precision_options
@click.option('--max-images', type=click.IntRange(1), default=None, help='Only the first N images (by id).')
@click.option('--out', 'out_dir', type=click.Path(file_okay=False), default='runs/eval', show_default=True)
@click.option('--resume', is_flag=True, help='Skip images already done by an interrupted run with the same --out.')
@click.option('--shard', default=None, help='K/N: this process takes every Nth image from the Kth.')
@click.option('--classwise', is_flag=True, help='Also print box and mask AP per category (always in metrics.json).')
@click.option('--covered-only', is_flag=True,
              help='With --results: score only the images the results name (by default every image of --ann is '
                   'scored, as COCO does; one warning says when the results name fewer).')
@scale_option
@max_pixels_option
def eval_coco(ann, images_dir, results_files, model_name, weights, style, device, weights_dir, backend,
              onnx_path, ort_provider, fp16, bf16, compile_model, max_images, out_dir, resume, shard, classwise,
              covered_only, scale, max_pixels):
    """COCO box AP and mask AP through pycocotools (mmdetection's test thresholds: 0.05, 100 per image)."""
    from mrcnn_cli.commands import evaluate as ev
    ctx = click.get_current_context()
    if results_files:
        warn_unused(ctx, ('images_dir', 'weights', 'style', 'device', 'weights_dir', 'backend', 'onnx_path',
                          'ort_provider', 'fp16', 'bf16', 'compile_model', 'max_images', 'resume', 'shard', 'scale',
                          'max_pixels'), 'with --results (the files are evaluated as they are)')
        done = ev.eval_results_files(ann, results_files, out_dir, model_name, covered_only=covered_only, warn=warn)
        _print_evaluation(done.evaluation, ev.published(model_name), classwise)
        click.echo(f'{done.images_evaluated} of {done.images_total} images evaluated; metrics -> {done.metrics_path}')
        return
    warn_unused(ctx, ('covered_only',), 'when a model runs (the images it reads are evaluated)')
    if not images_dir:
        raise click.UsageError('--images DIR is needed to run a model (or pass --results FILE)')
    from mrcnn_cli.engine.distributed import distributed_context, torchrun_device
    dist_ctx = distributed_context()
    device = torchrun_device(device)
    predictor = load_model(model_name, weights, onnx_path, backend, style, device, weights_dir, fp16, bf16,
                           compile_model, ort_provider, announce=not dist_ctx or dist_ctx[0] == 0, scale=scale)
    outcome = ev.eval_with_model(predictor, ann, images_dir, out_dir, max_images, shard, resume, model_name,
                                 warn=warn, max_pixels=max_pixels, progress=not quiet())
    if outcome.rank != 0 and outcome.evaluation is None and dist_ctx:
        return
    if outcome.evaluation is None:
        click.echo(f'shard results -> {outcome.results_path}; evaluate all shards with '
                   f"mrcnn eval coco --ann {ann} --results '{Path(out_dir) / 'results.shard-*.json'}'")
        return
    _print_evaluation(outcome.evaluation, ev.published(model_name), classwise)
    click.echo(f'{outcome.evaluated} of {outcome.total} images evaluated -> {outcome.results_path}, '
               f'{outcome.metrics_path}')
    if outcome.missing:
        click.echo(ev.summarise_missing(outcome.missing, outcome.total), err=True)
        sys.exit(1)


def _print_evaluation(evaluation, published, classwise=False):
    from mrcnn_cli.commands.evaluate import classwise_table
    for kind, value in evaluation.items():
        click.echo(f'--- {kind} ---')
        click.echo(value['summary'])
    if classwise:
        click.echo('\n'.join(classwise_table(evaluation)))
    if published:
        for kind, name in (('bbox', 'box'), ('segm', 'mask')):
            if kind in evaluation:
                ap = evaluation[kind]['metrics']['AP']
                click.echo(f'{name} AP {ap:.3f}, published {published[kind]:.3f} ({ap - published[kind]:+.3f})')


@cli.command()
@click.option('--fps', is_flag=True, help='Throughput and latency: what bench always measures (kept for scripts).')
@model_options
@click.option('--backend', type=click.Choice(['torch', 'onnx', 'openvino', 'all']), default=None,
              help='all: torch, onnxruntime and (when installed) OpenVINO FP32 and BF16 rows, on --onnx FILE '
                   '[default: onnx with --onnx, else torch].')
@click.option('--onnx', 'onnx_path', type=click.Path(dir_okay=False), default=None,
              help='An ONNX file from `mrcnn export`, for the onnx and openvino rows.')
@click.option('--ort-provider', type=click.Choice(['cuda', 'tensorrt', 'cpu']), default=None,
              help='onnxruntime provider of the onnx rows (default: CUDA with a GPU, else CPU).')
@precision_options
@click.option('--images', 'images_dir', type=click.Path(file_okay=False, exists=True), default=None,
              help='Folder of images to cycle through (default: the bundled demo photo).')
@click.option('--n', 'count', type=click.IntRange(1), default=200, show_default=True, help='Timed images.')
@click.option('--warmup', type=click.IntRange(0), default=5, show_default=True, help='Untimed batches first.')
@click.option('--batch-size', type=click.IntRange(1), default=1, show_default=True,
              help='Images per call of the torch rows (an ONNX graph takes one image per call).')
@click.option('--compare', type=click.Choice(['torchvision']), default=None,
              help="Also time torchvision's maskrcnn_resnet50_fpn with the same weights.")
@click.option('--json', 'json_path', type=click.Path(dir_okay=False), default=None, help='Write the report here.')
@click.option('--pipeline', is_flag=True,
              help='Also time the whole predict path (decode to written files) per backend.')
@click.option('--replay', is_flag=True,
              help='With --pipeline: the network replays outputs recorded in a first pass (the CPU side alone).')
@click.option('--no-vis', is_flag=True, help='With --pipeline: no pictures, JSON only.')
@scale_option
def bench(fps, model_name, weights, style, device, weights_dir, backend, onnx_path, ort_provider, fp16, bf16,
          compile_model, images_dir, count, warmup, batch_size, compare, json_path, pipeline, replay, no_vis, scale):
    """Speed: fps, latency percentiles, peak memory and a per-stage breakdown, per backend."""
    from mrcnn_cli.commands import bench as bench_lib
    from mrcnn_cli.engine.predictor import resolve_device
    from mrcnn_cli.io.files import write_json
    precision = precision_of(fp16, bf16)
    backend = backend or ('onnx' if onnx_path else 'torch')
    rows = bench_lib.bench_rows(backend, precision, compile_model, ort_provider, batch_size, warn=warn)
    dev = str(resolve_device(device)) if any(b != 'openvino' for b, _ in rows) else 'cpu'
    # only the images the timed batches use (they cycle from the first)
    images, decode_ms = bench_lib.load_images(images_dir, limit=min(64, -(-count // batch_size) * batch_size))

    from mrcnn_cli.backends.openvino import DEVICES as OPENVINO_DEVICES
    ov_row_device = device if device in OPENVINO_DEVICES else 'cpu'   # CUDA is not OpenVINO's

    def make(row_backend, row_precision):
        return load_model(model_name, weights, onnx_path, row_backend, style,
                          ov_row_device if row_backend == 'openvino' else dev, weights_dir,
                          row_precision == 'fp16', row_precision == 'bf16', compile_model and row_backend == 'torch',
                          ort_provider if row_backend == 'onnx' else None, announce=False, scale=scale)

    if (replay or no_vis) and not pipeline:
        raise click.UsageError('--replay and --no-vis go with --pipeline')
    paths = bench_lib.image_paths(images_dir, limit=min(64, count))
    report = bench_lib.run_bench(make, rows, images, decode_ms, count, warmup, batch_size, dev, compare,
                                 progress=not quiet(),
                                 peer_model_args=(model_name, weights, style, weights_dir), scale=scale,
                                 pipeline={'paths': paths, 'vis': not no_vis, 'replay': replay} if pipeline else None)
    click.echo(f'method: {report.method}')
    click.echo('machine: ' + ', '.join(f'{k} {v}' for k, v in report.machine.items()))
    click.echo(f'images: {len(images)} ({", ".join(f"{w}x{h}" for h, w in report.image_sizes)}), '
               f'decode {decode_ms:.1f} ms/image (not timed)')
    click.echo(bench_lib.format_table(report))
    if json_path:
        write_json(json_path, bench_lib.report_dict(report))


@cli.group()
def zoo():
    """The mmdetection Mask R-CNN model zoo."""


@zoo.command('list')
@weights_dir_option
def zoo_list(weights_dir):
    """Every zoo checkpoint with its published box / mask AP."""
    from mrcnn_cli.io import zoo as zoo_lib
    rows = [(e.name, e.backbone, e.style, e.schedule, f'{e.box_ap:.1f}', f'{e.mask_ap:.1f}',
             'yes' if zoo_lib.local_path(e, weights_dir).exists() else '-') for e in zoo_lib.entries()]
    header = ('name', 'backbone', 'style', 'schedule', 'box AP', 'mask AP', 'downloaded')
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        click.echo('  '.join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())


@zoo.command('download')
@click.argument('name', shell_complete=_complete_zoo_names)
@weights_dir_option
def zoo_download(name, weights_dir):
    """Download a zoo checkpoint (sha256-checked) into the weights directory."""
    from mrcnn_cli.io import zoo as zoo_lib
    entry = zoo_lib.get_entry(name)
    path = zoo_lib.local_path(entry, weights_dir)
    if path.exists():
        zoo_lib.verify_local(entry, path)
        click.echo(f'{name}: already at {path} (checksum verified)')
        return
    click.echo(f'{name}: saved to {zoo_lib.download(entry, weights_dir)}')


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _show_warning(message, category, filename, lineno, file=None, line=None):
    text = str(message).strip().splitlines()
    warn(f'warning: {text[0] if text else category.__name__}')


def _error_prefix():
    """'error: ', or 'error: rank R: ' in a torchrun worker, so that a failed job names the rank."""
    if int(os.environ.get('WORLD_SIZE', '1')) > 1 and 'RANK' in os.environ:
        return f'error: rank {os.environ["RANK"]}: '
    return 'error: '


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # --debug and --quiet belong to `mrcnn` itself but are taken anywhere before a `--`
    end = argv.index('--') if '--' in argv else len(argv)
    flags = [a for a in argv[:end] if a in ('--debug', '-q', '--quiet')]
    argv = flags + [a for a in argv[:end] if a not in flags] + argv[end:]
    debug = '--debug' in flags
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM finishes outputs as Ctrl-C does
    if not debug:   # the program's own choice: every warning is one `warning:` line
        warnings.showwarning = _show_warning
        # ... and OpenCV's and FFmpeg's own stderr lines go: mrcnn says in one line what failed
        os.environ.setdefault('OPENCV_LOG_LEVEL', 'SILENT')
        os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '-8')   # AV_LOG_QUIET
    try:
        with command_line_voice():   # library messages name flags (--style caffe), not keywords
            cli.main(args=argv, prog_name='mrcnn', standalone_mode=False)
    except MrcnnError as e:
        if debug:
            raise
        click.echo(f'{_error_prefix()}{e}', err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo('interrupted', err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo('interrupted', err=True)
        sys.exit(130)
    except click.UsageError as e:   # click's three-line block, as one line (exit code 2, as click's)
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ''
        click.echo(f'error: {e.format_message()}{hint}', err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        click.echo(f'error: {e.format_message()}', err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - the one place that turns bugs into one line
        if debug:
            raise
        click.echo(f'{_error_prefix()}{type(e).__name__}: {e} (run with --debug for the traceback)', err=True)
        sys.exit(1)
