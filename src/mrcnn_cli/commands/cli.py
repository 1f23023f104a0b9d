"""The `mrcnn` command line: parses options and calls the library, nothing more."""
import contextlib
import os
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import click

from mrcnn_cli.commands.options import (
    DRAW_OPTION_NAMES,
    complete_zoo_names,
    draw_options,
    max_pixels_images_option,
    max_pixels_option,
    model_choice,
    run_options,
    save_options,
    serve_options,
    tile_options,
    track_options,
    trail_option,
    video_options,
    weights_dir_option,
)
from mrcnn_cli.errors import MrcnnError, command_line_voice
from mrcnn_cli.model.spec import DEFAULT_SCORE_THR, TRACK_SCORE_THR
from mrcnn_cli.version import __version__


def warn(message):
    """One line on stderr that never lands inside a progress bar's line."""
    from tqdm import tqdm
    tqdm.write(message, file=sys.stderr)


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


def classes_known_before_loading(model):
    """The model's class names when they are known without reading a model file: a zoo entry's
    (every zoo model is COCO's); None otherwise."""
    if model.name and not model.weights and not model.onnx:
        from mrcnn_cli.io import zoo
        from mrcnn_cli.io.coco import COCO_CLASSES
        zoo.get_entry(str(model.name))   # an unknown name is its own error
        return COCO_CLASSES
    return None


def load_model(model, announce=True):
    """The predictor for a command's ModelChoice (through the one `load`), with the CLI's own
    process settings: the CPU allocator tuned, inductor's toolchain warning silenced."""
    from mrcnn_cli.api import load
    from mrcnn_cli.engine.memory import tune_cpu_allocator
    if model.compile:   # inductor's C++ toolchain probe warns that a CPU build has no CUDA
        import logging
        logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
    predictor = load(model)
    if predictor.device.type == 'cpu':
        tune_cpu_allocator()
    elif model.compile:   # CUDA graphs replay fixed sizes: let cuDNN pick its fastest kernels once per size
        import torch
        torch.backends.cudnn.benchmark = True
    if announce and not quiet():
        click.echo(f'model: {predictor.describe()}', err=True)
    return predictor


def sources_command(*, out: str, score_thr: float, score_help: str, what: str, group: Callable) -> Callable:
    """The options `mrcnn predict` and `mrcnn track` share, around their own `group` of options."""
    shared: list[Callable[[Callable], Callable]] = [
              click.argument('sources', nargs=-1, required=True), model_choice(),
              click.option('--score-thr', type=click.FloatRange(0, 1), default=score_thr, show_default=True,
                           help=score_help),
              click.option('--out', 'out_dir', type=click.Path(file_okay=False), default=out, show_default=True,
                           help=f'Output folder (one holding another run becomes {out}2, ... by default).'),
              click.option('--no-vis', is_flag=True, help='Write the results only, no pictures or videos.'),
              click.option('--classes', 'class_names', default=None,
                           help=f'{what} only these classes, by name or 0-based index, e.g. person,car or 0,2.'),
              click.option('--batch-size', type=click.IntRange(1), default=1, show_default=True,
                           help='Images or frames per network call (results are identical to 1).'),
              group, video_options, save_options, draw_options,
              run_options(exist_ok=True, joined_by='`mrcnn merge OUT`'), max_pixels_option]

    def decorate(f: Callable) -> Callable:
        for option in reversed(shared):
            f = option(f)
        return cli.command()(f)
    return decorate


@sources_command(out='runs/predict', score_thr=DEFAULT_SCORE_THR, what='Keep', group=tile_options,
                 score_help='Minimum score drawn and written to JSON (the model always applies 0.05).')
def predict(sources, model, score_thr, out_dir, no_vis, class_names, batch_size, tiles, video, save, draw, run,
            max_pixels):
    """Segment SOURCES: image files, directories, glob patterns, videos, camera indexes (0), image
    URLs (http/https, fetched) or rtsp/http stream URLs."""
    _predict_command(locals())


@sources_command(out='runs/track', score_thr=TRACK_SCORE_THR, what='Track',
                 group=lambda f: track_options(trail_option(f)),
                 score_help='The least score a detection needs to continue a track (--track-thr to start one).')
def track(sources, model, score_thr, out_dir, no_vis, class_names, batch_size, track, trail, video, save, draw, run,
          max_pixels):
    """Track the objects of SOURCES over time: videos, camera indexes (0), stream URLs, or folders
    and glob patterns of frames (each one sequence, its images in sorted order).  Writes annotated
    videos with each track's id, predictions.jsonl/.json with track_id, mots/<video>.txt and
    ytvis.json."""
    _predict_command({**locals(), 'tiles': None})


def _predict_command(params):
    """What `mrcnn predict` and `mrcnn track` share (their parameters by name): sources found, the
    model loaded, the run."""
    from dataclasses import replace

    from click.core import ParameterSource

    from mrcnn_cli.commands.predict import PredictOptions, predict_sources
    from mrcnn_cli.engine.distributed import is_rank_zero, torchrun_device
    from mrcnn_cli.io.sources import collect_sources
    sources, model, out_dir, class_names = params['sources'], params['model'], params['out_dir'], params['class_names']
    track, save, batch_size, no_vis = params.get('track'), params['save'], params['batch_size'], params['no_vis']
    found, missing = collect_sources(sources, exclude_dir=out_dir, warn=warn,   # before any model download
                                     sequences=track is not None)
    if track is not None:
        from mrcnn_cli.engine.tracking import require_trackers
        require_trackers()
    early_classes = classes_known_before_loading(model)
    if early_classes is not None:
        parse_class_filter(class_names, early_classes)   # a typo is an error before any download
    predictor = load_model(replace(model, device=torchrun_device(model.device)), announce=is_rank_zero())
    if batch_size > 1 and not predictor.batches:
        warn(f'warning: the ONNX graph takes one image per call: --batch-size {batch_size} changes nothing '
             f'with --backend {predictor.name}')
    ctx = click.get_current_context()
    if not save.txt:
        warn_unused(ctx, ('save_conf',), 'without --save-txt')
    if no_vis:
        warn_unused(ctx, (*DRAW_OPTION_NAMES, 'codec', 'trail'), 'with --no-vis (nothing is drawn)')
    run = replace(params['run'], next_free_out=ctx.get_parameter_source('out_dir') == ParameterSource.DEFAULT)
    opts = PredictOptions(out_dir, params['score_thr'], not no_vis, parse_class_filter(class_names, predictor.classes),
                          batch_size, params['max_pixels'], not quiet(), params['draw'], save, params['video'], run,
                          params['tiles'], track=track, trail=params.get('trail', 0))
    s = predict_sources(predictor, found, opts, warn=warn, missing=missing)
    _print_predict_summary(s, opts.score_thr, no_vis)
    if s.failed:
        click.echo(f'{len(s.failed)} inputs failed: ' + ', '.join(s.failed[:5])
                   + (' ...' if len(s.failed) > 5 else ''), err=True)
        sys.exit(1)

def plural(n, noun):
    return f'{n} {noun}' + ('' if n == 1 else 's')


def _print_predict_summary(s, score_thr, no_vis):
    frames = plural(s.frames, 'video frame') + (f' ({s.inferred_frames} through the model)'
                                                 if s.inferred_frames != s.frames else '')
    done = ', '.join(part for part in (plural(s.images, 'image') if s.images else '',
                                       frames if s.frames else '') if part) or 'nothing'
    earlier = f' ({s.skipped} inputs done by the earlier run)' if s.skipped else ''
    if s.json_path is None:   # a torchrun rank other than 0: rank 0 reports
        return
    if s.json_path == s.log_path:   # one shard of several
        click.echo(f'{done}{earlier} in {s.seconds:.1f} s -> {s.log_path}; when every part is done: '
                   f'mrcnn merge {s.out_dir}')
    else:
        made = 'picture/video' if len(s.outputs) == 1 else 'pictures/videos'
        pictures = '' if no_vis else f' and {len(s.outputs)} {made} in {s.out_dir}/'
        click.echo(f'{done}, {plural(s.instances, "instance")} (score >= {score_thr}){earlier} in {s.seconds:.1f} s '
                   f'-> {s.json_path}{pictures}')


@cli.command('merge')
@click.argument('out_dir', type=click.Path(file_okay=False, exists=True))
def merge(out_dir):
    """Join the parts of a sharded (--shard K/N) or torchrun `mrcnn predict` in OUT_DIR into
    OUT_DIR/predictions.json, the document one process would have written."""
    from mrcnn_cli.io.results_log import merge_logs
    click.echo(f'-> {merge_logs(out_dir)}')


def _parse_guard(ctx, param, value):
    try:
        box, mask, found = (float(v) for v in value.split(','))
        if all(0 <= v <= 1 for v in (box, mask, found)):
            return box, mask, found
    except ValueError:
        pass
    raise click.BadParameter(f'need three numbers in [0, 1], BOX_AP,MASK_AP,FOUND, not {value!r}')


@cli.command('export')
@click.option('--onnx', 'onnx_path', type=click.Path(dir_okay=False), required=True, help='Output .onnx file.')
@model_choice(backends=None, precision=False)
@click.option('--opset', type=click.IntRange(16), default=17, show_default=True,
              help='ONNX opset of the graph (16 or newer: RoiAlign with half_pixel).')
@click.option('--fp16', is_flag=True, help='FP16 network; box decoding and NMS stay FP32.')
@click.option('--check-image', type=click.Path(dir_okay=False, exists=True), default=None,
              help='Image for the onnxruntime-vs-PyTorch check (default: the bundled demo photo).')
@click.option('--int8', 'int8_path', type=click.Path(dir_okay=False), default=None,
              help='Also write an INT8 model, quantized from the ONNX file and checked against it: FILE.xml for '
                   'OpenVINO (NNCF; its weights in FILE.bin), FILE.onnx for onnxruntime (QDQ).')
@click.option('--calib', 'calib_sources', multiple=True,
              help='Calibration images for --int8: a folder, a glob or files (repeatable).')
@click.option('--calib-n', type=click.IntRange(1), default=300, show_default=True,
              help='Calibration images to use at most.')
@click.option('--int8-check', 'check_sources', multiple=True,
              help="Held-out images for --int8's accuracy guard (default: the last --int8-check-n of --calib, "
                   'never used to calibrate).')
@click.option('--int8-check-n', 'check_n', type=click.IntRange(1), default=50, show_default=True,
              help='Held-out images for the accuracy guard.')
@click.option('--int8-guard', 'guard', default='0.90,0.85,0.95', show_default=True, callback=_parse_guard,
              help='Least agreement with FP32 on the held-out images: box AP, mask AP, share of detections found.')
@click.option('--force', is_flag=True, help='Write the INT8 model even if it fails the accuracy guard.')
def export(onnx_path, model, opset, fp16, check_image, int8_path, calib_sources, calib_n, check_sources, check_n,
           guard, force):
    """Export one ONNX file (standard operators, dynamic size) and check it against PyTorch.

    The export itself always traces on the CPU; --device picks where onnxruntime runs the
    self-check (auto: its CUDA provider when there is a GPU).  With --int8 FILE.xml (OpenVINO) or
    FILE.onnx (onnxruntime) and --calib, also an INT8 model, written only if it agrees with the
    FP32 model on held-out images (box and mask agreement AP, detections found; see docs/int8.md)."""
    from dataclasses import replace

    ctx = click.get_current_context()
    int8_images = None
    if int8_path is None:
        warn_unused(ctx, ('calib_sources', 'calib_n', 'check_sources', 'check_n', 'guard', 'force'), 'without --int8')
    else:
        from mrcnn_cli.backends import quantize
        if not calib_sources:
            raise click.UsageError('--int8 needs --calib (a folder or glob of calibration images)')
        if fp16:
            raise click.UsageError('--int8 quantizes the FP32 export: drop --fp16')
        try:
            if quantize.check_int8_path(int8_path).resolve() == Path(onnx_path).resolve():
                raise click.UsageError('--int8 names the FP32 file --onnx writes: give the INT8 model another path')
        except MrcnnError as e:
            raise click.UsageError(str(e)) from None
        if Path(int8_path).suffix == '.xml':
            quantize.require_nncf()   # before the FP32 export, as the image checks are
        int8_images = quantize.int8_images(calib_sources, check_sources, calibration_n=calib_n, check_n=check_n,
                                           warn=warn)

    from mrcnn_cli.api import load
    from mrcnn_cli.backends.onnx_export import DEMO_IMAGE, export_onnx
    from mrcnn_cli.engine.compare import agreement
    from mrcnn_cli.io.images import read_image
    predictor = load(replace(model, device='cpu'))
    seconds = export_onnx(predictor, onnx_path, opset, fp16)
    size = os.path.getsize(onnx_path) / 2 ** 20
    click.echo(f'exported {onnx_path} ({size:.1f} MiB, opset {opset}, {"fp16" if fp16 else "fp32"}) in {seconds:.1f} s')
    image_path = check_image or DEMO_IMAGE
    img = read_image(image_path)
    graph_predictor = load(onnx=onnx_path, device=model.device, scale=model.scale)
    result = agreement(predictor(img, score_thr=0), graph_predictor(img, score_thr=0),   # all it keeps
                       max_score_diff=0.05 if fp16 else 0.01)
    click.echo(f'check on {os.path.basename(str(image_path))}: onnxruntime ({graph_predictor.execution_device}) vs '
               f'PyTorch: {result}')
    if result.matched < result.total:
        click.echo('warning: onnxruntime and PyTorch disagree on some detections', err=True)
    if int8_images is not None:
        done = quantize.quantize_int8(onnx_path, int8_path, int8_images, scale=model.scale,
                                      guard=quantize.Int8Guard(*guard), force=force, warn=warn)
        click.echo(f'exported {done.path} (INT8, calibrated on {done.calibration_images} images) in '
                   f'{done.seconds:.1f} s')
        click.echo(f'accuracy guard vs FP32: {done.agreement}: {"passed" if done.passed else "FAILED (--force)"}')


@cli.group('eval')
def eval_group():
    """Evaluate box and mask AP (coco), or tracks (track)."""


@eval_group.command('coco')
@click.option('--ann', type=click.Path(dir_okay=False), required=True, help='COCO annotation JSON.')
@click.option('--images', 'images_dir', type=click.Path(file_okay=False), default=None,
              help='Folder with the annotation file\'s images.')
@click.option('--results', 'results_files', multiple=True,
              help='Evaluate existing COCO results file(s) instead of running a model (globs allowed).')
@click.option('--merge', 'merge_dir', type=click.Path(file_okay=False, exists=True), default=None,
              help='Evaluate the parts of a sharded eval (--shard K/N runs with this --out) together.')
@model_choice()
@click.option('--max-images', type=click.IntRange(1), default=None, help='Only the first N images (by id).')
@click.option('--out', 'out_dir', type=click.Path(file_okay=False), default='runs/eval', show_default=True,
              help='Output folder: results, metrics.json, the run log.')
@run_options(exist_ok=False, joined_by='`mrcnn eval coco --merge` with the same --out')
@click.option('--classwise', is_flag=True, help='Also print box and mask AP per category (always in metrics.json).')
@click.option('--covered-only', is_flag=True,
              help='With --results: score only the images the results name (by default every image of --ann is '
                   'scored, as COCO does; one warning says when the results name fewer).')
@max_pixels_images_option
def eval_coco(ann, images_dir, results_files, merge_dir, model, max_images, out_dir, run, classwise, covered_only,
              max_pixels):
    """COCO box AP and mask AP through pycocotools (mmdetection's test thresholds: 0.05, 100 per image)."""
    from dataclasses import replace

    from mrcnn_cli.commands import evaluate as ev
    ctx = click.get_current_context()
    if results_files:
        warn_unused(ctx, ('images_dir', 'weights', 'style', 'device', 'weights_dir', 'backend', 'onnx_path',
                          'ort_provider', 'precision', 'fp16', 'bf16', 'compile_model', 'max_images', 'resume', 'shard',
                          'scale', 'max_pixels'), 'with --results (the files are evaluated as they are)')
        done = ev.eval_results_files(ann, results_files, out_dir, model.name, covered_only=covered_only, warn=warn)
        _print_evaluation(done.evaluation, ev.published(model.name), classwise)
        click.echo(f'{done.images_evaluated} of {done.images_total} images evaluated; metrics -> {done.metrics_path}')
        return
    warn_unused(ctx, ('covered_only',), 'when a model runs (the images it reads are evaluated)')
    if merge_dir:
        warn_unused(ctx, ('images_dir', 'weights', 'style', 'device', 'backend', 'onnx_path', 'ort_provider',
                          'precision', 'fp16', 'bf16', 'compile_model', 'max_images', 'out_dir', 'resume', 'shard',
                          'scale', 'max_pixels'),
                    'with --merge (the parts are evaluated as they were run)')
        _report_evaluation(ev.eval_parts(ann, merge_dir, model.name), model.name, classwise)
        return
    if not images_dir:
        raise click.UsageError('--images DIR is needed to run a model (or pass --results FILE)')
    from mrcnn_cli.engine.distributed import distributed_context, is_rank_zero, torchrun_device
    predictor = load_model(replace(model, device=torchrun_device(model.device)), announce=is_rank_zero())
    options = ev.EvalOptions(max_images, run.resume, run.shard, model.name, max_pixels, progress=not quiet())
    outcome = ev.eval_with_model(predictor, ann, images_dir, out_dir, options, warn=warn)
    if outcome.rank != 0 and outcome.evaluation is None and distributed_context():
        return
    if outcome.evaluation is None:
        click.echo(f'shard results -> {outcome.results_path}; when every part is done: '
                   f'mrcnn eval coco --ann {ann} --merge {out_dir}')
        return
    _report_evaluation(outcome, model.name, classwise)


@eval_group.command('track')
@click.argument('gt')
@click.argument('results')
@click.option('--out', 'out_path', type=click.Path(dir_okay=False), default=None,
              help='Write the scores as JSON here (default: track_metrics.json beside RESULTS).')
def eval_track(gt, results, out_path):
    """HOTA, IDF1 and MOTA (DetA, AssA, IDSW) through TrackEval: RESULTS (a file, or a folder of
    them such as `mrcnn track`'s --out) against GT (a file or a folder; sequences paired by file
    name): MOTS txt masks (KITTI MOTS / MOTSChallenge), or MOTChallenge boxes when GT is
    comma-separated."""
    from pathlib import Path

    from mrcnn_cli.engine.track_metrics import evaluate_tracks
    from mrcnn_cli.io.files import write_text
    scores = evaluate_tracks(gt, results)
    target = Path(out_path) if out_path else (Path(results) if Path(results).is_dir() else Path(results).parent) \
        / 'track_metrics.json'
    import json
    write_text(target, json.dumps(scores.to_dict(), indent=1))
    click.echo('\n'.join(scores.table()))
    click.echo(f'{plural(len(scores.sequences), "sequence")} evaluated by TrackEval -> {target}')


def _report_evaluation(outcome, model_name, classwise):
    """The numbers of a whole evaluation, where they went, and the images it could not read (exit 1)."""
    from mrcnn_cli.commands import evaluate as ev
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
        click.echo(value.summary)
    if classwise:
        click.echo('\n'.join(classwise_table(evaluation)))
    if published:
        for kind, name in (('bbox', 'box'), ('segm', 'mask')):
            if kind in evaluation:
                ap = evaluation[kind].metrics['AP']
                click.echo(f'{name} AP {ap:.3f}, published {published[kind]:.3f} ({ap - published[kind]:+.3f})')


@cli.command()
@click.option('--fps', is_flag=True, help='Throughput and latency: what bench always measures (kept for scripts).')
@model_choice(backends=('torch', 'onnx', 'openvino', 'all'),
              graph_help='all: torch and (when installed) OpenVINO in FP32 and BF16 (where the CPU computes BF16), '
                        'onnxruntime in FP32, on --onnx FILE')
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
@click.option('--tile', default=None, metavar='SIZE',
              help='Also time `mrcnn predict --tile SIZE --save-geojson` over each of --images once (tiles/s, '
                   'megapixels/s, what the CPU side adds to the network time).')
@click.option('--int8', 'int8_paths', type=click.Path(dir_okay=False, exists=True), multiple=True,
              help='Also time this INT8 model (from `mrcnn export --int8`) on its runtime (OpenVINO for .xml, '
                   'onnxruntime for .onnx), with its agreement figures (repeatable).')
@click.option('--track', is_flag=True,
              help='Also time what tracking adds per frame (20 objects; mask and box association).')
def bench(fps, model, images_dir, count, warmup, batch_size, compare, json_path, pipeline, replay, no_vis, tile,
          int8_paths, track):
    """Speed: fps, latency percentiles, peak memory and a per-stage breakdown, per backend."""
    from mrcnn_cli.backends.base import resolve_device
    from mrcnn_cli.commands import bench as bench_lib
    from mrcnn_cli.io.files import write_json
    if (replay or no_vis) and not pipeline:
        raise click.UsageError('--replay and --no-vis go with --pipeline')
    rows = bench_lib.bench_rows(model, batch_size, warn=warn, int8=int8_paths)
    # only the images the timed batches use (they cycle from the first)
    images, decode_ms = bench_lib.load_images(images_dir, limit=min(64, -(-count // batch_size) * batch_size))
    plan = bench_lib.BenchPlan(images, count, warmup, batch_size, str(resolve_device(rows[0].device)),
                               not quiet(), decode_ms)
    paths = bench_lib.PipelinePlan(bench_lib.image_paths(images_dir, limit=min(64, count)), not no_vis, replay)
    tiled = None
    if tile is not None:
        from mrcnn_cli.engine.tiling import TileOptions
        try:
            tiled = bench_lib.TiledPlan(bench_lib.image_paths(images_dir, limit=64), TileOptions(tile))
        except MrcnnError as e:
            raise click.UsageError(str(e)) from None
    report = bench_lib.run_bench(lambda row: load_model(row, announce=False), rows, plan, compare=compare,
                                 pipeline=paths if pipeline else None, tiled=tiled, track=track)
    click.echo(f'method: {report.method}')
    click.echo('machine: ' + ', '.join(f'{k} {v}' for k, v in report.machine.items()))
    click.echo(f'images: {len(images)} ({", ".join(f"{w}x{h}" for h, w in report.image_sizes)}), '
               f'decode {decode_ms:.1f} ms/image (not timed)')
    click.echo(bench_lib.format_table(report))
    if json_path:
        write_json(json_path, bench_lib.report_dict(report))


@cli.command()
@model_choice()
@click.option('--host', default='127.0.0.1', show_default=True,
              help='Address to listen on (0.0.0.0 for every interface: only behind a firewall or with --api-key).')
@click.option('--port', type=click.IntRange(0, 65535), default=8000, show_default=True,
              help='Port to listen on; 0 takes any free one (the line "serving on URL" names it).')
@serve_options
def serve(model, host, port, **options):
    """Serve the model over HTTP: POST /v1/predict, a page at /, OpenAPI docs at /docs
    (needs pip install 'mrcnn-cli[serve]')."""
    from mrcnn_cli.serve.options import ServeOptions
    try:
        from mrcnn_cli.serve import server
        from mrcnn_cli.serve.app import create_app
    except ImportError as e:
        raise MrcnnError(f"mrcnn serve needs {e.name}: pip install 'mrcnn-cli[serve]'") from None
    opts = ServeOptions(**options)
    sock = server.bind(host, port)   # before the model loads: a port in use is said at once
    predictor = load_model(model, announce=True)
    if host not in ('127.0.0.1', 'localhost', '::1') and not opts.api_key:
        warn(f'warning: listening on {host} without --api-key: anyone who can reach it can use the model')
    if not quiet():
        where = f'[{host}]' if ':' in host else host
        click.echo(f'serving on http://{where}:{sock.getsockname()[1]}/ (API: POST /v1/predict, docs: /docs); '
                   'Ctrl-C stops', err=True)
    server.run(create_app(predictor, opts), sock, read_timeout=opts.read_timeout, graceful_timeout=opts.timeout + 5)


@cli.group()
def zoo():
    """The mmdetection Mask R-CNN model zoo."""


@zoo.command('list')
@weights_dir_option
def zoo_list(weights_dir):
    """Every zoo checkpoint with its published box / mask AP."""
    from mrcnn_cli.io import zoo as zoo_lib
    rows = [(e.name, e.backbone, e.style, e.schedule, f'{e.box_ap:.1f}', f'{e.mask_ap:.1f}',
             zoo_lib.download_state(e, weights_dir)) for e in zoo_lib.entries()]
    header = ('name', 'backbone', 'style', 'schedule', 'box AP', 'mask AP', 'downloaded')
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        click.echo('  '.join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())


@zoo.command('download')
@click.argument('name', shell_complete=complete_zoo_names)
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
