"""GeoJSON for GIS tools: one FeatureCollection per image, a (Multi)Polygon with holes per instance.

Rings trace the pixels' outer edges (the pixel-edge rule), so a polygon's area is exactly its
mask's pixel count; a mask whose pixels touch only at a corner becomes polygons that touch at a
point, which is valid (OGC simple features) where one ring through the point twice is not.
Coordinates are pixels (x right, y down, pixel corners at integers), or the map coordinates of a
GeoTIFF with its CRS named in the 2008 GeoJSON `crs` member that GDAL and QGIS read."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from mrcnn_cli.io.files import atomic_path

if TYPE_CHECKING:
    from mrcnn_cli.io.scene import GeoReference
    from mrcnn_cli.ops.paste import MaskWindow

def mask_rings(win: MaskWindow) -> tuple[list[np.ndarray], list[int], list[bool]]:
    """Every ring of a MaskWindow in image pixel-edge coordinates ((K, 2) int vertices, the halving's
    repeats still in), the polygon it belongs to, and whether it is that polygon's exterior: one
    polygon per 4-connected part of the mask (parts touching only at a corner are separate
    polygons: one polygon through such a point would not be valid)."""
    if not win.mask.any():   # no pixels (a 0 x 0 window too)
        return [], [], []
    mask = win.mask.astype(np.uint8)
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    rings, polygon_of, exterior = [], [], []
    for k in range(1, count):
        x, y, w, h = (int(v) for v in stats[k, :4])
        part = (components[y:y + h, x:x + w] == k).astype(np.uint8)
        # Contours run through pixel centres; on the mask doubled, a point at u is the edge ceil(u/2)
        # of the original pixels (even u: a pixel's left/top edge, odd u: its right/bottom edge).
        doubled = cv2.resize(part, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        contours, hierarchy = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        for c, links in zip(contours, hierarchy[0]):
            rings.append((c.reshape(-1, 2) + 1) // 2 + (win.x0 + x, win.y0 + y))
            polygon_of.append(k - 1)
            exterior.append(bool(links[3] < 0))
    return rings, polygon_of, exterior


def geometry(win: MaskWindow, georef: GeoReference | None = None) -> dict[str, Any] | None:
    """A mask as a GeoJSON Polygon or MultiPolygon (None for an empty mask): rings closed and
    oriented as RFC 7946 asks (exteriors counter-clockwise, holes clockwise, in the output's
    coordinates).  All rings are handled as one array: a mask can have thousands."""
    rings, polygon_of, exterior = mask_rings(win)
    if not rings:
        return None
    raw = np.concatenate(rings)
    ring_id = np.repeat(np.arange(len(rings)), [len(r) for r in rings])
    keep = _distinct_from_previous(raw, ring_id)
    pts, ring_id = raw[keep].astype(np.float64), ring_id[keep]
    lengths = np.bincount(ring_id, minlength=len(rings))
    nxt = _next_in_ring(lengths)
    area = np.bincount(ring_id, weights=pts[:, 0] * pts[nxt, 1] - pts[nxt, 0] * pts[:, 1], minlength=len(rings))
    mapped = georef.to_map(pts) if georef is not None else pts
    flips = georef is not None and georef.mirrors
    polygons: dict[int, list[list[list[float]]]] = {}
    positions = mapped.tolist()   # one conversion; rings are slices of it
    ends = np.cumsum(lengths).tolist()
    for i, (end, length) in enumerate(zip(ends, lengths.tolist())):
        if length < 3 or area[i] == 0:   # a spur the halving leaves: no area
            continue
        ring = positions[end - length:end]
        if ((area[i] > 0) != flips) != exterior[i]:
            ring.reverse()
        ring.append(ring[0])
        ring_list = polygons.setdefault(polygon_of[i], [])
        if exterior[i]:
            ring_list.insert(0, ring)
        else:
            ring_list.append(ring)
    coordinates = list(polygons.values())
    if len(coordinates) == 1:
        return {'type': 'Polygon', 'coordinates': coordinates[0]}
    return {'type': 'MultiPolygon', 'coordinates': coordinates}


def _distinct_from_previous(pts: np.ndarray, ring_id: np.ndarray) -> np.ndarray:
    """Which vertices differ from the one before them in their ring (the halving repeats some)."""
    lengths = np.bincount(ring_id)
    previous = np.arange(len(pts)) - 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    previous[starts] = starts + lengths - 1
    return (pts != pts[previous]).any(axis=1)


def _next_in_ring(lengths: np.ndarray) -> np.ndarray:
    """The index of each vertex's successor, the last of a ring wrapping to its first."""
    nxt = np.arange(int(lengths.sum())) + 1
    ends = np.cumsum(lengths)
    filled = lengths > 0
    nxt[ends[filled] - 1] = ends[filled] - lengths[filled]
    return nxt


def features(windows: Sequence[MaskWindow], labels: Sequence[int], scores: Sequence[float],
             classes: Sequence[str], georef: GeoReference | None = None) -> Iterator[dict[str, Any]]:
    """One Feature per instance, in order: id (1, 2, ... by decreasing score), class, score and the
    mask's pixel area."""
    for k, (win, label, score) in enumerate(zip(windows, labels, scores), 1):
        yield {'type': 'Feature', 'id': k, 'geometry': geometry(win, georef),
               'properties': {'id': k, 'class_name': classes[int(label)], 'label': int(label),
                              'score': round(float(score), 5), 'area_px': int(np.count_nonzero(win.mask))}}


def collection_header(name: str, width: int, height: int, georef: GeoReference | None) -> dict[str, Any]:
    """A FeatureCollection's members other than its features: its name, the CRS of a GeoTIFF, and
    the image's size (a foreign member)."""
    out: dict[str, Any] = {'type': 'FeatureCollection', 'name': name}
    if georef is not None and georef.epsg is not None:
        out['crs'] = {'type': 'name', 'properties': {'name': f'urn:ogc:def:crs:EPSG::{georef.epsg}'}}
    out['image'] = {'width': width, 'height': height, 'coordinates': 'map' if georef is not None else 'pixel'}
    return out


def write_feature_collection(path: Any, header: dict[str, Any], items: Iterable[dict[str, Any]]) -> None:
    """The collection written feature by feature (a scene's polygons are never all held as Python
    lists at once), atomically."""
    opening = json.dumps({**header, 'features': []}, separators=(',', ':'))[:-2]   # ...,"features":[
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        f.write(opening)
        for k, feature in enumerate(items):
            f.write((',' if k else '') + json.dumps(feature, separators=(',', ':')))
        f.write(']}')
