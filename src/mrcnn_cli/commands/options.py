"""The command line's shared options, each group reaching a command as one typed value: the
model options as a `ModelChoice`, the drawing options as `DrawOptions`, the files asked for as
`SaveOptions`, the video options as `VideoOptions`, the large-run options as `RunOptions`."""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from mrcnn_cli.engine.choice import ModelChoice, Precision, parse_scale
from mrcnn_cli.io.image_header import MAX_PIXELS, OPENCV_MAX_PIXELS
from mrcnn_cli.model.spec import RECONNECT_TRIES, TEST_SCALE

if TYPE_CHECKING:
    from mrcnn_cli.engine.detections import MaskFormat

STYLE = click.Choice(['pytorch', 'caffe'])
PROVIDERS = click.Choice(['cuda', 'tensorrt', 'cpu'])


def grouped(target: str, build: Callable[..., object], *options: tuple[str, Callable]) -> Callable:
    """A decorator adding click options, each given as (its parameter name, its click.option
    decorator), whose values reach the command as one value, `build(**values)`, named `target`."""
    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def with_group(*args: object, **kwargs: object) -> object:
            kwargs[target] = build(**{name: kwargs.pop(name) for name, _ in options})
            return command(*args, **kwargs)
        for _, option in reversed(options):
            with_group = option(with_group)
        return with_group
    return decorate


def weights_dir_option(f: Callable) -> Callable:
    return click.option('--weights-dir', type=click.Path(file_okay=False), default=None,
                        help='Where zoo checkpoints are cached (default: $MRCNN_WEIGHTS_DIR if set, else weights/ '
                             'in a checkout, else ~/.cache/mrcnn/weights).')(f)


def complete_zoo_names(ctx, param, incomplete):
    from mrcnn_cli.io import zoo as zoo_lib
    return [e.name for e in zoo_lib.entries() if e.name.startswith(incomplete)]


def _parse_scale(ctx, param, value):
    from mrcnn_cli.errors import MrcnnError
    try:
        return parse_scale(value)
    except MrcnnError:
        raise click.BadParameter(f'need LONG,SHORT such as 1333,800, not {value!r}') from None


def _model_choice(**given):
    """The ModelChoice of the model options a command has (those it lacks keep their defaults)."""
    flags = [p for p in (Precision.FP16, Precision.BF16) if given.get(p.value)]
    named = given.get('precision')
    chosen = set(flags) | ({Precision(named)} if named else set())
    if len(chosen) > 1:
        raise click.UsageError(f'choose one precision ({", ".join(sorted(p.value for p in chosen))} given)')
    precision = chosen.pop() if chosen else Precision.FP32
    return ModelChoice(given['model_name'], given['weights'], given.get('onnx_path'), given.get('backend'),
                       given['style'], given['device'], precision, given.get('compile_model', False),
                       given.get('scale', TEST_SCALE), given['weights_dir'], given.get('ort_provider'))


def model_choice(*, backends: tuple[str, ...] | None = ('torch', 'onnx', 'openvino'), graph_help: str = '',
                 precision: bool = True, scale: bool = True) -> Callable:
    """The options that choose the model, as `model: ModelChoice`.  `backends`: the --backend
    choices, with --onnx and --ort-provider (None: none of the three); `precision`: --precision
    (--fp16 and --bf16 its aliases), --compile; `scale`: --scale."""
    options = [
        ('model_name', click.option('--model', 'model_name', default=None, shell_complete=complete_zoo_names,
                                    help='A zoo name, see `mrcnn zoo list`.')),
        ('weights', click.option('--weights', type=click.Path(dir_okay=False), default=None,
                                 help='A local checkpoint (mmdetection 3.x/2.x file or bare state_dict).')),
        ('style', click.option('--style', type=STYLE, default=None,
                               help="Backbone style (default: the checkpoint's training config, or the zoo "
                                    "entry's; else pytorch).")),
        ('device', click.option('--device', default='auto', show_default=True, help='auto, cpu, cuda or cuda:N.')),
        ('weights_dir', weights_dir_option)]
    if backends:
        options += [
            ('backend', click.option('--backend', type=click.Choice(list(backends)), default=None,
                                     help=(graph_help or 'torch (the checkpoint), onnx (onnxruntime) or openvino, '
                                           'both on an --onnx file') + ' [default: onnx with --onnx, else torch].')),
            ('onnx_path', click.option('--onnx', 'onnx_path', type=click.Path(dir_okay=False), default=None,
                                       help='An ONNX file from `mrcnn export` (for the onnx and openvino '
                                            'backends).')),
            ('ort_provider', click.option('--ort-provider', type=PROVIDERS, default=None,
                                          help='onnxruntime provider (default: CUDA with a GPU, else CPU).'))]
    if precision:
        options += [
            ('precision', click.option('--precision', type=click.Choice([p.value for p in Precision]), default=None,
                                       help='The network\'s precision [default: fp32, or an INT8 file\'s int8]: '
                                            'fp16 on a CUDA GPU, bf16 on CPUs with BF16 or GPUs, int8 for an '
                                            '--onnx file from `mrcnn export --int8`.')),
            ('fp16', click.option('--fp16', is_flag=True, help='Same as --precision fp16.')),
            ('bf16', click.option('--bf16', is_flag=True, help='Same as --precision bf16.')),
            ('compile_model', click.option('--compile', 'compile_model', is_flag=True,
                                           help='torch.compile backbone+FPN+RPN (CUDA graphs on a GPU); each new '
                                                'input size compiles once, so best for video and fixed sizes.'))]
    if scale:
        options.append(('scale', click.option(
            '--scale', default='1333,800', show_default=True, callback=_parse_scale,
            help="Test-time resize bound LONG,SHORT (keep-ratio); mmdetection's 1333,800 gives its numbers, smaller "
                 'is faster.')))
    return grouped('model', _model_choice, *options)


def max_pixels_option(f: Callable) -> Callable:
    """--max-pixels for commands that read images and videos (predict, bench)."""
    return _max_pixels('Skip images and videos')(f)


def max_pixels_images_option(f: Callable) -> Callable:
    """--max-pixels for commands that read still images only (eval)."""
    return _max_pixels('Skip images')(f)


def _max_pixels(what: str) -> Callable:
    return click.option('--max-pixels', type=click.IntRange(1, OPENCV_MAX_PIXELS), default=MAX_PIXELS,
                        show_default=True,
                        help=f'{what} larger than this many pixels, read from the file header before decoding: '
                             'decompression bombs and damaged headers.')


def _draw_options(line_width, mask_alpha, hide_labels, hide_conf, hide_boxes, hide_masks, label_size, max_labels):
    from mrcnn_cli.visualize import DrawOptions
    return DrawOptions(line_width, mask_alpha, labels=not hide_labels, conf=not hide_conf, boxes=not hide_boxes,
                       masks=not hide_masks, label_size=label_size, max_labels=max_labels)


DRAW_OPTION_NAMES = ('line_width', 'mask_alpha', 'hide_labels', 'hide_conf', 'hide_boxes', 'hide_masks', 'label_size',
                     'max_labels')

draw_options = grouped(
    'draw', _draw_options,
    ('line_width', click.option('--line-width', type=click.IntRange(1), default=None,
                                help='Box and contour width in px.')),
    ('mask_alpha', click.option('--mask-alpha', type=click.FloatRange(0, 1), default=0.5, show_default=True,
                                help='Opacity of the drawn masks.')),
    ('hide_labels', click.option('--hide-labels', is_flag=True, help='Draw no class names.')),
    ('hide_conf', click.option('--hide-conf', is_flag=True, help='Draw no scores.')),
    ('hide_boxes', click.option('--hide-boxes', is_flag=True, help='Draw no boxes.')),
    ('hide_masks', click.option('--hide-masks', is_flag=True, help='Draw no masks.')),
    ('label_size', click.option('--label-size', type=click.IntRange(1), default=None,
                                help="A label's height in px (default: 4 % of the picture's shorter side, "
                                     '16 to 32 px).')),
    ('max_labels', click.option('--max-labels', type=click.IntRange(1), default=None,
                                help='Label at most this many detections, the surest (a label that would '
                                     'cover another is left out anyway).')))


@dataclass(frozen=True)
class SaveOptions:
    """The files `mrcnn predict` writes besides pictures and predictions.json."""
    masks: bool = False           # masks/: instance map, its colour preview, class map, one PNG per instance
    txt: bool = False             # labels/: YOLO segmentation labels
    conf: bool = False            # ... with the score appended
    crop: bool = False            # crops/<class>/: RGBA box crops, the mask as alpha
    mask_format: MaskFormat = 'rle'   # predictions.json segmentation: rle or polygon
    geojson: bool = False         # geojson/: a FeatureCollection per image (map coordinates for a GeoTIFF)


save_options = grouped(
    'save', lambda save_masks, save_txt, save_conf, save_crop, save_geojson, mask_format: SaveOptions(
        save_masks, save_txt, save_conf, save_crop, mask_format, save_geojson),
    ('save_masks', click.option('--save-masks', is_flag=True,
                                help='masks/: a 16-bit instance map (and its colour preview), a class-id map and '
                                     'one PNG per instance, per image or frame.')),
    ('save_txt', click.option('--save-txt', is_flag=True,
                              help='labels/: YOLO segmentation labels (and labels/classes.txt).')),
    ('save_conf', click.option('--save-conf', is_flag=True, help='With --save-txt: the score last on each line.')),
    ('save_crop', click.option('--save-crop', is_flag=True,
                               help='crops/<class>/: each instance as an RGBA PNG, its mask as alpha.')),
    ('save_geojson', click.option('--save-geojson', is_flag=True,
                                  help="geojson/: each image's instances as GeoJSON polygons (a GeoTIFF's map "
                                       'coordinates and CRS when it has them, else pixels).')),
    ('mask_format', click.option('--mask-format', type=click.Choice(['rle', 'polygon']), default='rle',
                                 show_default=True, help='Segmentation in predictions.json (polygons cannot express '
                                                         'holes).')))


@dataclass(frozen=True)
class VideoOptions:
    """How `mrcnn predict` reads and writes videos, cameras and streams."""
    vid_stride: int = 1           # the model on every Nth frame; frames between reuse its result
    max_frames: int | None = None
    reconnect: int = RECONNECT_TRIES   # tries to reopen a live stream that dropped
    codec: str = 'h264'
    show: bool = False            # a live window


video_options = grouped(
    'video', VideoOptions,
    ('vid_stride', click.option('--vid-stride', type=click.IntRange(1), default=1, show_default=True,
                                help='Run the model on every Nth video frame; frames between reuse the last '
                                     'result.')),
    ('max_frames', click.option('--max-frames', type=click.IntRange(1), default=None,
                                help='Stop each video after N frames.')),
    ('reconnect', click.option('--reconnect', type=click.IntRange(0), default=RECONNECT_TRIES, show_default=True,
                               help='Reopen a live stream that drops, up to N tries (waits 1, 2, 4 ... s); '
                                    'frame numbers skip the time away.')),
    ('codec', click.option('--codec', type=click.Choice(['h264', 'vp9', 'mp4v']), default='h264', show_default=True,
                           help='Annotated videos: H.264 MP4 or VP9 WebM (browsers play both), or OpenCV mp4v.')),
    ('show', click.option('--show', is_flag=True,
                          help='Show results in a window: needs a display and a GUI build of OpenCV, which the '
                               'default install (opencv-python-headless) is not; see the README.')))


@dataclass(frozen=True)
class RunOptions:
    """Where a run's parts and earlier runs stand: resume one, write over one, take a shard."""
    resume: bool = False          # skip the inputs the run's log already has
    exist_ok: bool = False        # write into an output folder that holds another run's results
    shard: tuple[int, int] | None = None   # (K, N): every Nth input from the Kth (torchrun: the rank)
    next_free_out: bool = False   # the default folder: out_dir2, out_dir3, ... when it holds another run


def _parse_shard(ctx, param, value):
    """--shard K/N, read once, as (K, N); a bad value is a usage error (exit 2), as any other."""
    from mrcnn_cli.engine.distributed import parse_shard
    from mrcnn_cli.errors import MrcnnError
    try:
        return None if value is None else parse_shard(value)
    except MrcnnError as e:
        raise click.BadParameter(str(e).replace('--shard ', '').replace('--shard', '').strip()) from None


def run_options(*, exist_ok: bool, joined_by: str) -> Callable:
    """--resume and --shard (and, for predict, --exist-ok), as `run: RunOptions`; `joined_by` says
    what joins the shards' parts."""
    options = [('resume', click.option('--resume', is_flag=True,
                                       help='Skip what an interrupted run with the same --out already did.'))]
    if exist_ok:
        options.append(('exist_ok', click.option(
            '--exist-ok', is_flag=True,
            help="Write into an --out that holds another run's results (files of the same names are replaced); "
                 'without it such a folder is refused (the default folder becomes runs/predict2, ...).')))
    options.append(('shard', click.option('--shard', default=None, callback=_parse_shard,
                                          help=f'K/N: this process takes every Nth input from the Kth ({joined_by} '
                                               'joins the parts).')))
    return grouped('run', RunOptions, *options)


def _tile_options(tile, tile_overlap, tile_full, tile_merge, tile_match, tile_match_thr):
    """TileOptions, or None without --tile (whose companions then change nothing: a usage error)."""
    from mrcnn_cli.engine.tiling import TileOptions
    from mrcnn_cli.errors import MrcnnError
    if tile is None:
        ctx = click.get_current_context()
        given = [name for name in ('tile_overlap', 'tile_full', 'tile_merge', 'tile_match', 'tile_match_thr')
                 if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f'--{given[0].replace("_", "-")} needs --tile SIZE')
        return None
    try:
        return TileOptions(tile, tile_overlap, tile_full, tile_merge, tile_match, tile_match_thr)
    except MrcnnError as e:
        raise click.UsageError(str(e)) from None


tile_options = grouped(
    'tiles', _tile_options,
    ('tile', click.option('--tile', default=None, metavar='SIZE',
                          help='Slice each image into SIZE (or W,H) pixel tiles, each run at --scale (small objects '
                               'grow), their detections merged on masks; TIFFs are read a region at a time.')),
    ('tile_overlap', click.option('--tile-overlap', type=float, default=0.2, show_default=True,
                                  help='Fraction of a tile shared with its neighbour.')),
    ('tile_full', click.option('--tile-full', is_flag=True,
                               help='Also run the whole image at --scale, so that objects larger than a tile '
                                    'survive.')),
    ('tile_merge', click.option('--tile-merge', type=click.Choice(['nmm', 'nms']), default='nmm', show_default=True,
                                help='Matching detections of different tiles: nmm joins their masks, nms keeps the '
                                     'higher-scored one.')),
    ('tile_match', click.option('--tile-match', type=click.Choice(['ios', 'iou']), default='ios', show_default=True,
                                help='Match masks by intersection over the smaller one (ios) or over their union.')),
    ('tile_match_thr', click.option('--tile-match-thr', type=float, default=0.5, show_default=True,
                                    help='Masks match above this.')))


def serve_options(f: Callable) -> Callable:
    """`mrcnn serve`'s options, one per ServeOptions field (its name with dashes, its help and
    bounds), so that the command line, the app and the Ray deployment take the same options."""
    from mrcnn_cli.serve.options import option_fields
    for name, kind, default, meta in reversed(option_fields()):
        low, high = meta['min'], meta['max']
        if kind is str:
            click_type: click.ParamType = click.STRING
        elif kind is int:
            click_type = click.IntRange(None if low is None else int(low), None if high is None else int(high))
        else:
            click_type = click.FloatRange(low, high)
        f = click.option(f'--{name.replace("_", "-")}', name, type=click_type, default=default,
                         show_default=default is not None and name != 'api_key', envvar=meta['envvar'],
                         help=meta['help'])(f)
    return f


def _track_options(tracker, association, track_thr, match_thr, track_buffer, min_hits, track_fill):
    from mrcnn_cli.engine.tracking import TrackOptions
    return TrackOptions(tracker, association, track_thr, match_thr, track_buffer, min_hits, track_fill)


def trail_option(f: Callable) -> Callable:
    return click.option('--trail', type=click.IntRange(0), default=0, show_default=True,
                        help="Draw each track's path over the last N frames behind it (0: none).")(f)


track_options = grouped(
    'track', _track_options,
    ('tracker', click.option('--tracker', type=click.Choice(['bytetrack', 'botsort']), default='bytetrack',
                             show_default=True,
                             help="ByteTrack with mrcnn's mask-aware association, or roboflow's BoT-SORT as it is "
                                  '(box IoU after camera-motion compensation).')),
    ('association', click.option('--association', type=click.Choice(['mask', 'box']), default=None,
                                 help='ByteTrack matches tracks to detections by mask IoU (the last mask moved to the '
                                      'predicted box; the default) or by box IoU; BoT-SORT by box IoU.')),
    ('track_thr', click.option('--track-thr', type=click.FloatRange(0, 1), default=0.5, show_default=True,
                               help='Detections scoring at least this are matched first and may start a track; lower '
                                    'ones (down to --score-thr) only continue one.')),
    ('match_thr', click.option('--match-thr', type=click.FloatRange(0, 1), default=0.1, show_default=True,
                               help='The least IoU that matches a detection to a track.')),
    ('track_buffer', click.option('--track-buffer', type=click.IntRange(0), default=30, show_default=True,
                                  help='Frames (at 30 fps; scaled to the video) a lost track waits to be found '
                                       'again.')),
    ('min_hits', click.option('--min-hits', type=click.IntRange(1), default=2, show_default=True,
                              help="Frames in a row before a new object gets an id (a sequence's first frame: at "
                                   'once).')),
    ('track_fill', click.option('--track-fill', type=click.IntRange(0), default=2, show_default=True,
                                help='Report a track the detector missed for up to N frames, its last mask moved to '
                                     'where it is predicted (0: detected objects only).')))
