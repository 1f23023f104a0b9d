"""GeoJSON for GIS tools: one FeatureCollection per image, a (Multi)Polygon with holes per instance.

Rings trace the pixels' outer edges (the pixel-edge rule), so a polygon's area is exactly its
mask's pixel count; a mask whose pixels touch only at a corner becomes polygons that touch at a
point, which is valid (OGC simple features) where one ring through the point twice is not.
Coordinates are pixels (x right, y down, pixel corners at integers), or the map coordinates of a
GeoTIFF with its CRS named in the 2008 GeoJSON `crs` member that GDAL and QGIS read."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from mrcnn_cli.io.files import write_text

if TYPE_CHECKING:
    from mrcnn_cli.io.scene import GeoReference
    from mrcnn_cli.ops.paste import MaskWindow

Ring = np.ndarray   # (K, 2) float64 vertices, not repeated at the end


def mask_polygons_with_holes(win: MaskWindow) -> list[tuple[Ring, list[Ring]]]:
    """(exterior, holes) rings of a MaskWindow in image pixel-edge coordinates, one polygon per
    4-connected part of the mask (parts touching only at a corner are separate polygons: one
    polygon through such a point would not be valid)."""
    mask = win.mask.astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    components = cv2.connectedComponents(mask, connectivity=4)[1] if count > 2 else mask
    polygons = []
    for k in range(1, count):
        x, y, w, h = (int(v) for v in stats[k, :4])
        part = (components[y:y + h, x:x + w] == k).astype(np.uint8)
        polygons += _part_polygons(part, np.array([win.x0 + x, win.y0 + y], np.float64))
    return polygons


def _part_polygons(part: np.ndarray, offset: np.ndarray) -> list[tuple[Ring, list[Ring]]]:
    # Contours run through pixel centres; on the mask doubled, a point at u is the edge ceil(u/2) of
    # the original pixels (even u: a pixel's left/top edge, odd u: its right/bottom edge).
    doubled = cv2.resize(part, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    rings = [_ring((c.reshape(-1, 2) + 1) // 2) for c in contours]
    exterior = next(i for i in range(len(contours)) if hierarchy[0][i][3] < 0)
    holes = [r + offset for i, r in enumerate(rings) if hierarchy[0][i][3] >= 0 and r is not None]
    return [(rings[exterior] + offset, holes)]


def _ring(points: np.ndarray) -> Ring | None:
    """A contour's vertices without the repeats the halving makes; None without area."""
    pts = points[np.any(points != np.roll(points, 1, axis=0), axis=1)].astype(np.float64)
    return pts if len(pts) >= 3 and _area(pts) != 0 else None


def _area(ring: Ring) -> float:
    """Signed shoelace area (positive: counter-clockwise with y up)."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _closed(ring: Ring, georef: GeoReference | None, exterior: bool) -> list[list[float]]:
    """A ring as GeoJSON positions: mapped, oriented (exteriors counter-clockwise, holes clockwise,
    as RFC 7946 asks), and closed."""
    pts = georef.to_map(ring) if georef is not None else ring
    if (_area(pts) > 0) != exterior:
        pts = pts[::-1]
    return [[float(x), float(y)] for x, y in np.vstack([pts, pts[:1]])]


def geometry(win: MaskWindow, georef: GeoReference | None = None) -> dict[str, Any] | None:
    """A mask as a GeoJSON Polygon or MultiPolygon (None for an empty mask)."""
    polygons = [[_closed(ext, georef, True)] + [_closed(h, georef, False) for h in holes]
                for ext, holes in mask_polygons_with_holes(win)]
    if not polygons:
        return None
    if len(polygons) == 1:
        return {'type': 'Polygon', 'coordinates': polygons[0]}
    return {'type': 'MultiPolygon', 'coordinates': polygons}


def feature_collection(windows: Sequence[MaskWindow], labels: Sequence[int], scores: Sequence[float],
                       classes: Sequence[str], *, name: str, width: int, height: int,
                       georef: GeoReference | None = None) -> dict[str, Any]:
    """One image's instances: features with id (1, 2, ... by decreasing score), class, score and
    the mask's pixel area."""
    features = []
    for k, (win, label, score) in enumerate(zip(windows, labels, scores), 1):
        features.append({'type': 'Feature', 'id': k, 'geometry': geometry(win, georef),
                         'properties': {'id': k, 'class_name': classes[int(label)], 'label': int(label),
                                        'score': round(float(score), 5), 'area_px': int(np.count_nonzero(win.mask))}})
    out: dict[str, Any] = {'type': 'FeatureCollection', 'name': name}
    if georef is not None and georef.epsg is not None:
        out['crs'] = {'type': 'name', 'properties': {'name': f'urn:ogc:def:crs:EPSG::{georef.epsg}'}}
    out['image'] = {'width': width, 'height': height, 'coordinates': 'map' if georef is not None else 'pixel'}
    out['features'] = features
    return out


def write_geojson(path: Any, collection: dict[str, Any]) -> None:
    write_text(path, json.dumps(collection, separators=(',', ':')))
