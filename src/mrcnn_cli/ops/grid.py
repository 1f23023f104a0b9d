"""Rectangles by the grid cells they cover: which of thousands lie near a region, in time that
does not grow with how many there are elsewhere (label placement, merging a scene's tiles)."""
from __future__ import annotations


class RectGrid:
    """Integer ids of rectangles, looked up by the cells of `cell` pixels they cover."""

    def __init__(self, cell: int = 256):
        self.cell = cell
        self.cells: dict[tuple[int, int], list[int]] = {}

    def _cells(self, x0: float, y0: float, x1: float, y1: float) -> list[tuple[int, int]]:
        c = self.cell
        return [(cx, cy) for cx in range(int(x0 // c), int(x1 // c) + 1)
                for cy in range(int(y0 // c), int(y1 // c) + 1)]

    def add(self, key: int, x0: float, y0: float, x1: float, y1: float) -> None:
        for cell in self._cells(x0, y0, x1, y1):
            self.cells.setdefault(cell, []).append(key)

    def near(self, x0: float, y0: float, x1: float, y1: float) -> list[int]:
        """The ids of rectangles in the cells the region covers (a superset of those overlapping
        it), each once, in increasing order."""
        return sorted({k for cell in self._cells(x0, y0, x1, y1) for k in self.cells.get(cell, ())})
