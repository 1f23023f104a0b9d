"""A large image read a region at a time: a TIFF (BigTIFF, tiled or striped, pyramidal, as GIS and
microscopy software write them) decoded only in the strips or tiles a region touches, through
tifffile; any other image decoded whole and sliced.  A GeoTIFF's georeferencing comes with it."""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from mrcnn_cli.errors import MrcnnError, first_line, option

TIFF_MAGICS = (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+')   # classic TIFF and BigTIFF
UNASSOCIATED_ALPHA = 2    # TIFF ExtraSamples


@dataclass(frozen=True)
class GeoReference:
    """Pixel (column, row) -> map (x, y): x = a*col + b*row + c, y = d*col + e*row + f, for pixel
    corners (a tie point for a pixel's centre is moved by half a pixel), and the CRS's EPSG code."""
    transform: tuple[float, float, float, float, float, float]
    epsg: int | None

    @property
    def mirrors(self) -> bool:
        """Whether the transform flips orientation (as map y up against pixel rows down does)."""
        a, b, _, d, e, _ = self.transform
        return a * e - b * d < 0

    def to_map(self, points: np.ndarray) -> np.ndarray:
        a, b, c, d, e, f = self.transform
        x, y = points[:, 0], points[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])


def shrunk_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is `max_side` (for images larger than that)."""
    factor = max(width, height) / max_side
    return max(1, round(width / factor)), max(1, round(height / factor))


class Scene:
    """An image as regions: `read(rect)` gives the BGR uint8 pixels [x0, x1) x [y0, y1)."""
    name: str
    width: int
    height: int
    georef: GeoReference | None = None
    georef_problem: str | None = None   # georeferencing there but unusable: why
    damaged: int = 0          # segments that could not be decoded (read as black)
    segments: int = 0

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def whole(self) -> np.ndarray | None:
        """The whole image when it is in memory anyway, else None."""
        return None

    def keep_for(self, tile_width: int, tile_height: int) -> None:
        """A hint: tiles of this size will be read, row by row."""

    def start_preview(self, max_side: int) -> None:
        """A hint: `preview(max_side)` will be asked for once the tiles are read."""

    def preview(self, max_side: int) -> np.ndarray:
        return self.overview(max_side)

    def overview(self, max_side: int) -> np.ndarray:
        """The image shrunk (INTER_AREA) so that its longer side is at most `max_side`, read in
        bands so that only one band is decoded at a time."""
        factor = max(self.width, self.height) / max_side
        if factor <= 1:
            return self.read(0, 0, self.width, self.height)
        out_w, out_h = shrunk_size(self.width, self.height, max_side)
        band = max(1, math.ceil(factor)) * 64
        rows = []
        for y in range(0, self.height, band):
            y1 = min(y + band, self.height)
            top, bottom = round(y * out_h / self.height), round(y1 * out_h / self.height)
            if bottom > top:
                rows.append(cv2.resize(self.read(0, y, self.width, y1), (out_w, bottom - top),
                                       interpolation=cv2.INTER_AREA))
        return np.concatenate(rows)

    def close(self) -> None:
        pass


class ArrayScene(Scene):
    """An image already decoded whole."""

    def __init__(self, image: np.ndarray, name: str):
        self.image, self.name = image, name
        self.height, self.width = image.shape[:2]

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self.image[y0:y1, x0:x1]

    @property
    def whole(self) -> np.ndarray:
        return self.image


def is_tiff(path: Path) -> bool:
    try:
        with open(path, 'rb') as f:
            return f.read(4) in TIFF_MAGICS
    except OSError:
        return False


class TiffScene(Scene):
    """A TIFF's first image (its full-resolution level), read by the segments a region touches.
    `max_pixels` bounds what one segment may decode to (a strip as large as the image is
    refused: it could only be decoded whole)."""

    def __init__(self, path: Path, name: str, max_pixels: int):
        import tifffile
        self.name = name
        # our own handle: tifffile leaves the file open when a damaged header stops it in __init__
        self._file = open(path, 'rb')  # noqa: SIM115 - closed in close() or below
        try:
            try:
                self._tif = tifffile.TiffFile(self._file)
                page = self._tif.pages.first
                page = page if isinstance(page, tifffile.TiffPage) else page.aspage()
            except Exception as e:  # noqa: BLE001 - the reader's boundary: whatever tifffile raises on this file
                raise MrcnnError(f'{name}: not a readable TIFF ({first_line(e)})') from None
            self._setup(page, max_pixels)
        except BaseException:
            self.close()
            raise

    def _setup(self, page: Any, max_pixels: int) -> None:
        samples, depth, height, width, contig = page.shaped
        if depth != 1 or page.dtype is None or page.dtype.kind != 'u' or page.dtype.itemsize > 2:
            raise MrcnnError(f'{self.name}: TIFF samples of type {page.dtype} (depth {depth}) are not supported; '
                             'need 8- or 16-bit unsigned')
        self.page, self.height, self.width = page, int(height), int(width)
        self.channels = samples * contig
        if page.is_tiled:
            self.seg_h, self.seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self.seg_h, self.seg_w = int(min(page.rowsperstrip or height, height)), self.width
        if self.seg_h * self.seg_w > max_pixels:
            raise MrcnnError(f'{self.name}: its TIFF {"tiles" if page.is_tiled else "strips"} are '
                             f'{self.seg_w}x{self.seg_h} pixels, more than {option("max_pixels")} '
                             f'({max_pixels}) to decode at once')
        self.across = -(-self.width // self.seg_w)
        self.down = -(-self.height // self.seg_h)
        self.planes = samples                     # planar configuration: one set of segments per sample
        self.segments = self.across * self.down * self.planes
        try:
            self._decode: Callable[..., Any] = page.decode
        except Exception as e:  # noqa: BLE001 - a codec tifffile lacks
            raise MrcnnError(f'{self.name}: cannot decode its {page.compression.name} TIFF data '
                             f'({first_line(e)}; pip install imagecodecs reads most)') from None
        self._bad: set[int] = set()
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._capacity = 16
        self._preview: np.ndarray | None = None
        self._painted = np.zeros((0, 0), bool)
        try:
            self.georef = _georeference(page)
        except GeoTiffProblem as e:
            self.georef_problem = str(e)

    def keep_for(self, tile_width: int, tile_height: int) -> None:
        """Keep the decoded segments a row of tiles this size touches, so that overlapping tiles,
        read row by row, decode each segment once."""
        rows = -(-tile_height // self.seg_h) + 1
        self._capacity = max(self._capacity, min(self.across * rows, self.segments))

    def start_preview(self, max_side: int) -> None:
        """Shrink each segment into a preview (at most `max_side` a side) as it is first decoded,
        when segments are large enough for that; `preview()` finishes it."""
        factor = max(self.width, self.height) / max_side
        if factor > 1 and min(self.seg_w, self.seg_h) >= 2 * factor:
            out_w, out_h = shrunk_size(self.width, self.height, max_side)
            self._preview = np.zeros((out_h, out_w, 3), np.uint8)
            self._painted = np.zeros((self.down, self.across), bool)

    def preview(self, max_side: int) -> np.ndarray:
        """The image shrunk to at most `max_side` a side: the segments painted while reading, the
        rest read now (or, for segments too thin to paint, the image read again in bands)."""
        if self._preview is None:
            return self.overview(max_side)
        for row, col in zip(*np.nonzero(~self._painted)):
            self._block(int(row), int(col))
        return self._preview

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for row in range(y0 // self.seg_h, -(-y1 // self.seg_h)):
            for col in range(x0 // self.seg_w, -(-x1 // self.seg_w)):
                block = self._block(row, col)
                sy, sx = row * self.seg_h, col * self.seg_w
                top, left = max(y0, sy), max(x0, sx)
                bottom, right = min(y1, sy + block.shape[0]), min(x1, sx + block.shape[1])
                out[top - y0:bottom - y0, left - x0:right - x0] = block[top - sy:bottom - sy, left - sx:right - sx]
        return out

    def _block(self, row: int, col: int) -> np.ndarray:
        """The BGR pixels of the segment at (row, col), all its planes, decoded once while it is
        among the `keep_for` most recent; painted into the preview when first decoded."""
        key = (row, col)
        block = self._cache.get(key)
        if block is not None:
            self._cache.move_to_end(key)
            return block
        sy, sx = row * self.seg_h, col * self.seg_w
        h, w = min(self.seg_h, self.height - sy), min(self.seg_w, self.width - sx)
        raw = np.zeros((h, w, self.channels), self.page.dtype)
        fh = self._tif.filehandle
        for plane in range(self.planes):
            segment = self._segment(fh, (plane * self.down + row) * self.across + col)
            if segment is None:
                continue
            part = segment[:h, :w]
            if self.planes > 1:
                raw[:part.shape[0], :part.shape[1], plane] = part[..., 0]
            else:
                raw[:part.shape[0], :part.shape[1]] = part
        block = self._to_bgr(raw)
        self._cache[key] = block
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        if self._preview is not None and not self._painted[row, col]:
            self._paint(block, sx, sy)
            self._painted[row, col] = True
        return block

    def _paint(self, block: np.ndarray, sx: int, sy: int) -> None:
        """A segment shrunk into its part of the preview (the parts of neighbours tile it exactly)."""
        out_h, out_w = cast(np.ndarray, self._preview).shape[:2]
        tx0, tx1 = sx * out_w // self.width, (sx + block.shape[1]) * out_w // self.width
        ty0, ty1 = sy * out_h // self.height, (sy + block.shape[0]) * out_h // self.height
        if tx1 > tx0 and ty1 > ty0:
            cast(np.ndarray, self._preview)[ty0:ty1, tx0:tx1] = cv2.resize(block, (tx1 - tx0, ty1 - ty0),
                                                                          interpolation=cv2.INTER_AREA)

    def _segment(self, fh: Any, index: int) -> np.ndarray | None:
        """One strip or tile, (h, w, samples); None when it is empty or damaged (counted once)."""
        page = self.page
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        if not count:
            return None
        try:
            with fh.lock:
                fh.seek(offset)
                data = fh.read(count)
            segment, _, _ = self._decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader,
                                         _fullsize=page.is_tiled)
            if segment is None or len(data) < count:
                raise ValueError('cut short')
            return segment.reshape(segment.shape[-3:])
        except Exception:  # noqa: BLE001 - a damaged segment: read as black, reported once per file
            if index not in self._bad:
                self._bad.add(index)
                self.damaged += 1
            return None

    def _to_bgr(self, img: np.ndarray) -> np.ndarray:
        """As cv2.imread's IMREAD_COLOR would: 16-bit to 8 (x / 257, rounded), grey to three
        channels, colour times an unassociated alpha (then dropped), a palette applied, RGB to BGR."""
        if img.dtype == np.uint16:
            img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
        if img.shape[2] >= 4 and tuple(self.page.extrasamples or ())[:1] == (UNASSOCIATED_ALPHA,):
            alpha = img[..., 3:4].astype(np.uint16)
            img = ((img[..., :3] * alpha + 127) // 255).astype(np.uint8)
        photometric = int(self.page.photometric)
        if photometric == 3 and self.page.colormap is not None:    # palette
            lut = (np.asarray(self.page.colormap).T >> 8).astype(np.uint8)
            return np.ascontiguousarray(lut[img[..., 0]][..., ::-1])
        if img.shape[2] < 3:
            grey = img[..., 0]
            if photometric == 0:   # white is zero
                grey = 255 - grey
            return cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_GRAY2BGR)
        return np.ascontiguousarray(img[..., 2::-1])

    def close(self) -> None:
        if getattr(self, '_tif', None) is not None:
            self._tif.close()
        self._file.close()


# GeoTIFF: tag numbers and geo keys (OGC GeoTIFF 1.1)
MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION, GEO_KEY_DIRECTORY = 33550, 33922, 34264, 34735
GT_RASTER_TYPE, GEOGRAPHIC_TYPE, PROJECTED_CS_TYPE = 1025, 2048, 3072
RASTER_PIXEL_IS_POINT, USER_DEFINED = 2, 32767


class GeoTiffProblem(ValueError):
    """Georeferencing tags present but unusable (the caller warns and keeps pixel coordinates)."""


def _georeference(page: Any) -> GeoReference | None:
    tags = {tag.code: tag.value for tag in page.tags.values()}
    if not any(code in tags for code in (MODEL_TIEPOINT, MODEL_TRANSFORMATION)):
        return None
    return georeference_from_tags(tags)


def georeference_from_tags(tags: dict[int, Any]) -> GeoReference:
    """The pixel-to-map transform and EPSG code of a GeoTIFF's tags (tag number -> value)."""
    keys = _geo_keys(tags.get(GEO_KEY_DIRECTORY))
    try:
        if MODEL_TRANSFORMATION in tags:
            m = [float(v) for v in tags[MODEL_TRANSFORMATION]]
            if len(m) != 16:
                raise GeoTiffProblem('its ModelTransformationTag does not hold 16 numbers')
            transform = (m[0], m[1], m[3], m[4], m[5], m[7])
        else:
            tie = [float(v) for v in tags[MODEL_TIEPOINT]][:6]
            scale = [float(v) for v in tags.get(MODEL_PIXEL_SCALE, ())]
            if len(tie) < 6 or len(scale) < 2 or not all(math.isfinite(v) for v in tie + scale):
                raise GeoTiffProblem('its tie point has no ModelPixelScaleTag to go with it')
            i, j, _, x, y, _ = tie
            transform = (scale[0], 0.0, x - i * scale[0], 0.0, -scale[1], y + j * scale[1])
    except (TypeError, ValueError, KeyError) as e:
        raise GeoTiffProblem(f'its georeferencing tags cannot be read ({e})') from None
    if keys.get(GT_RASTER_TYPE) == RASTER_PIXEL_IS_POINT:   # the tie point is a pixel's centre
        a, b, c, d, e_, f = transform
        transform = (a, b, c - 0.5 * (a + b), d, e_, f - 0.5 * (d + e_))
    epsg = keys.get(PROJECTED_CS_TYPE) or keys.get(GEOGRAPHIC_TYPE)
    if epsg is None or epsg == USER_DEFINED or not 1024 <= epsg < USER_DEFINED:
        raise GeoTiffProblem('its coordinate reference system is not an EPSG code' if epsg else
                             'it names no coordinate reference system')
    return GeoReference(transform, int(epsg))


def _geo_keys(directory: Any) -> dict[int, int]:
    """The SHORT-valued keys of a GeoKeyDirectoryTag."""
    if directory is None:
        return {}
    values = [int(v) for v in directory]
    out = {}
    for k in range(4, 4 + 4 * values[3] if len(values) >= 4 else 4, 4):
        key, location, _, value = values[k:k + 4] if len(values) >= k + 4 else (0, 1, 0, 0)
        if location == 0:
            out[key] = value
    return out
