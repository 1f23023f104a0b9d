"""Sliced inference as a stream runs it: a large image read as a Scene (a TIFF by regions, anything
else whole) becomes one Frame per tile of engine.tiling's grid, the whole-image pass's Frame, and
a SceneEnd; the tiles' detections wait for it (Slices) and are merged by engine.merge's rules into
one Detections in full-image coordinates."""
from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.engine.frames import Frame, Item, Problem, SceneEnd
from mrcnn_cli.engine.merge import TilePass, merge_passes
from mrcnn_cli.engine.preprocess import Prepared, rescale_size
from mrcnn_cli.engine.runner import Runner
from mrcnn_cli.engine.tiling import Rect, SceneInfo, TileOptions, TilePart, tile_grid
from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.scene import ArrayScene, Scene, TiffScene, is_tiff
from mrcnn_cli.io.sources import IMAGE, Source, read_source_image
from mrcnn_cli.visualize import PICTURE_MAX_SIDE


def open_scene(src: Source, max_pixels: int) -> Scene:
    """A still-image Source as a Scene: a TIFF file read by regions (`max_pixels` then bounds what
    is decoded at once, not the whole image), anything else decoded whole."""
    if src.kind == IMAGE and is_tiff(Path(str(src.location))):
        return TiffScene(Path(str(src.location)), src.name, max_pixels)
    return ArrayScene(read_source_image(src, max_pixels), src.name)


def scene_items(si: int, src: Source, max_pixels: int, tiles: TileOptions, scale: tuple[int, int]) -> Iterator[Item]:
    """A sliced image's items: one Frame per tile (its pixels, `tile` its region), the whole-image
    pass's Frame, and the SceneEnd (with the image itself when it is held whole anyway).  A scene
    read by regions also keeps a preview, shrunk for drawing (visualize.PICTURE_MAX_SIDE).
    Damaged TIFF segments (read as black) follow as a warning."""
    problem = functools.partial(Problem, src.name, src.kind, si)
    try:
        scene = open_scene(src, max_pixels)
    except MrcnnError as e:
        yield problem(error=str(e))
        return
    try:
        grid = tile_grid(scene.width, scene.height, tiles)
        whole = scene.whole
        scene.keep_for(*tiles.size)
        if whole is None:
            scene.start_preview(PICTURE_MAX_SIDE)
        for rect in grid:
            yield Frame(src.name, src.kind, si, image=scene.read(*rect), tile=TilePart(rect))
        preview = None if whole is not None else scene.preview(PICTURE_MAX_SIDE)
        if tiles.full:
            yield _full_pass(si, src, scene, whole, preview, scale)
        info = SceneInfo(scene.width, scene.height, len(grid), tiles.full, preview, scene.georef)
        yield SceneEnd(src.name, src.kind, si, info=info, image=whole)
    except MrcnnError as e:
        yield problem(error=str(e))
        return
    finally:
        scene.close()
    if scene.georef_problem:
        yield problem(warning=f'{src.name}: {scene.georef_problem}; its GeoJSON is in pixel coordinates')
    if scene.damaged:
        yield problem(warning=f'{src.name}: {scene.damaged} of {scene.segments} TIFF segments could not be decoded '
                              '(damaged?) and were read as black')


def _full_pass(si: int, src: Source, scene: Scene, whole: np.ndarray | None, preview: np.ndarray | None,
               scale: tuple[int, int]) -> Frame:
    """The whole image for the model: the image itself, or for a scene read by regions its
    preview shrunk to the model's input size (its detections are pasted onto the full scene)."""
    region = Rect(0, 0, scene.width, scene.height)
    if whole is not None:
        return Frame(src.name, src.kind, si, image=whole, tile=TilePart(region, full_pass=True))
    assert preview is not None   # a scene not held whole keeps one
    small = cv2.resize(preview, rescale_size(scene.width, scene.height, scale), interpolation=cv2.INTER_AREA)
    return Frame(src.name, src.kind, si, image=small,
                 tile=TilePart(region, full_pass=True, scene_shape=(scene.height, scene.width)))


def prepare_frame(runner: Runner, frame: Frame) -> Prepared:
    """The frame made ready for the network; a whole-scene pass on a shrunk copy is mapped back
    onto the full scene (its masks are pasted there, as for any image)."""
    prepared = runner.prepare(frame.image)
    if frame.tile is None or frame.tile.scene_shape is None:
        return prepared
    height, width = frame.tile.scene_shape
    h, w = prepared.img_shape
    return Prepared(prepared.tensor, prepared.img_shape, (w / width, h / height), (height, width))


class Slices:
    """Each tile's detections, held until its scene's end, then merged."""

    def __init__(self, tiles: TileOptions | None, classes: Sequence[str]) -> None:
        self.tiles, self.classes = tiles, classes
        self.passes: list[TilePass] = []

    def add(self, frame: Frame) -> None:
        assert frame.tile is not None and frame.detections is not None
        self.passes.append(TilePass(frame.detections, frame.tile.region))

    def drop(self) -> None:
        """Forget the tiles of a scene whose reading failed."""
        self.passes = []

    def merged(self, end: SceneEnd) -> Detections:
        assert self.tiles is not None
        passes, self.passes = self.passes, []
        return merge_passes(passes, end.info.height, end.info.width, self.tiles, self.classes)
