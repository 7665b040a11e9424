"""Geometry of region synthesis: where the denoiser's windows lie on a canvas at each step, how
their predictions are weighted, and how a large region is cut into chunks.

Frames: every box here is in pixels of the synthesis canvas at the model's resolution, (row,
col) = (y, x), half-open. All window and chunk corners are multiples of ``cell`` (the latent
factor / pixel-unshuffle of the model), so a window's latent, distance and label crops align.

Three window schemes (MultiDiffusion, Bar-Tal et al. 2023; DiffInfinite, Aversa et al. 2023):

- ``"wrap"``: the canvas is treated as a torus: ceil(side / stride) windows a side, evenly
  spaced from an origin drawn at random at every step, and a window that runs off one edge
  continues at the opposite one. No window is pushed inside at the edges, so a canvas of n x n
  tiles costs exactly the n^2 windows of n^2 independent tiles per step (``"shift"`` needs
  (n + 1)^2 whenever its offset is not zero: 2.25x at a 512-px canvas). The price: the two edges
  of the canvas see each other as context, so the region continues across its own edges (only
  visible if the output is tiled periodically). The default.
- ``"shift"``: a grid of windows whose origin moves by a random offset at every step; a border
  that lies between two windows at one step lies inside a window at the next, so no border
  persists. With ``overlap`` 0, about one window per window-area (plus the windows pushed
  inside at the canvas edges), ~1x the compute of independent tiles; a small ``overlap`` with
  smooth ``weights`` also hides the borders of each single step (the last one above all,
  whose clean-data estimate IS the output).
- ``"overlap"``: a fixed grid of windows overlapping by ``overlap`` pixels, their predictions
  averaged with smooth weights (``weights``).

Either way a step costs about (window / (window - overlap))^2 windows per window-area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Scheme = Literal["wrap", "shift", "overlap"]
SCHEMES = ("wrap", "shift", "overlap")
Weights = Literal["uniform", "cosine", "gaussian"]
WEIGHTS = ("uniform", "cosine", "gaussian")
# The smallest window weight: a pixel seen by one window only (a canvas corner) still gets its
# prediction, and the normalisation never divides by zero.
WEIGHT_FLOOR = 1e-3


def axis_starts(length: int, window: int, stride: int, offset: int = 0) -> list[int]:
    """Window starts along one axis so that windows of ``window`` px cover [0, ``length``).

    A grid of period ``stride`` whose origin is at ``-offset``; windows sticking out of the
    canvas are pushed inside (so the two edge windows may overlap their neighbours more), and
    duplicates are dropped. ``length`` >= ``window``.
    """
    if length < window:
        raise ValueError(f"canvas side {length} px is smaller than the window {window} px")
    if not 0 < stride <= window:
        raise ValueError(f"stride must be in 1..{window}, got {stride}")
    last = length - window
    raw = range(-int(offset), length, stride)
    starts = sorted({min(max(s, 0), last) for s in raw if s + window > 0})
    if starts[-1] != last:  # the grid must reach the far edge
        starts.append(last)
    return starts


def wrapped_starts(length: int, window: int, stride: int, cell: int, offset: int = 0) -> list[int]:
    """Window starts on a circle of ``length`` px: ceil(length / stride) windows of ``window`` px,
    spaced as evenly as the ``cell`` grid allows, the first at ``offset``; each start in
    [0, length), a window past ``length`` continuing at 0. ``length`` >= ``window``."""
    if length < window:
        raise ValueError(f"canvas side {length} px is smaller than the window {window} px")
    if not 0 < stride <= window:
        raise ValueError(f"stride must be in 1..{window}, got {stride}")
    n = math.ceil(length / stride)
    cells = length // cell
    return [(int(offset) + round(i * cells / n) * cell) % length for i in range(n)]


def window_index(start: int, window: int, length: int) -> slice | np.ndarray:
    """The canvas positions of a window along one axis: a slice when it lies inside the canvas,
    else the wrapped positions (``start`` .. ``start + window`` modulo ``length``)."""
    if start + window <= length:
        return slice(start, start + window)
    return (start + np.arange(window)) % length


def window_weight(window: int, kind: Weights) -> np.ndarray:
    """(window, window) float32 weights of one window's prediction, > 0 everywhere.

    ``uniform``: all 1 (plain averaging); ``cosine``: a raised-cosine (Hann) bump, 1 in the
    centre and WEIGHT_FLOOR at the edges; ``gaussian``: exp(-r^2 / 2 sigma^2) with sigma =
    window / 4 per axis.
    """
    if kind not in WEIGHTS:
        raise ValueError(f"window weights must be one of {WEIGHTS}, got {kind!r}")
    u = (np.arange(window, dtype=np.float64) + 0.5) / window  # pixel centres in (0, 1)
    if kind == "uniform":
        w1 = np.ones(window)
    elif kind == "cosine":
        w1 = np.sin(np.pi * u) ** 2
    else:
        w1 = np.exp(-((u - 0.5) ** 2) / (2 * 0.25**2))
    w = np.outer(w1, w1)
    return np.maximum(w / w.max(), WEIGHT_FLOOR).astype(np.float32)


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows lie at each step.

    window : window side in px (the model's tile size).
    cell : every start is a multiple of it (the model's latent factor / unshuffle).
    scheme : ``"wrap"``, ``"shift"`` or ``"overlap"`` (module docstring).
    overlap : px of overlap between neighbouring windows.
    weights : how a window's prediction is weighted in the average (:func:`window_weight`).
    """

    window: int
    cell: int = 1
    scheme: Scheme = "wrap"
    overlap: int = 0
    weights: Weights = "uniform"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"window scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.window % self.cell:
            raise ValueError(f"window {self.window} px is not a multiple of the model's cell {self.cell} px")
        if not (0 <= self.overlap < self.window and self.overlap % self.cell == 0):
            raise ValueError(f"overlap must be a multiple of {self.cell} in 0..{self.window - 1}, got {self.overlap}")

    def starts(self, canvas_hw: tuple[int, int], generator: torch.Generator | None = None) -> list[tuple[int, int]]:
        """(y, x) top-left corners of this step's windows on a canvas of (H, W) px.

        ``"shift"`` draws the grid's offset (a multiple of ``cell`` in [0, stride)) from
        ``generator`` (None: offset 0, the plain grid); ``"wrap"`` draws its origin anywhere on
        the canvas (a multiple of ``cell``), and its windows may run off the far edges
        (:func:`window_index` gives their wrapped positions).
        """
        h, w = canvas_hw
        stride = self.window - self.overlap
        if self.scheme == "wrap":
            oy = ox = 0
            if generator is not None:
                oy = int(torch.randint(0, h // self.cell, (1,), generator=generator)) * self.cell
                ox = int(torch.randint(0, w // self.cell, (1,), generator=generator)) * self.cell
            ys = wrapped_starts(h, self.window, stride, self.cell, oy)
            xs = wrapped_starts(w, self.window, stride, self.cell, ox)
            return [(y, x) for y in ys for x in xs]
        oy = ox = 0
        if self.scheme == "shift" and generator is not None:
            oy, ox = (int(v) * self.cell for v in torch.randint(0, stride // self.cell, (2,), generator=generator))
        ys, xs = axis_starts(h, self.window, stride, oy), axis_starts(w, self.window, stride, ox)
        return [(y, x) for y in ys for x in xs]

    def windows_per_area(self) -> float:
        """Network windows per window-area of canvas, away from the canvas edges (the cost factor)."""
        return (self.window / (self.window - self.overlap)) ** 2


@dataclass(frozen=True)
class Chunk:
    """One independently sampled piece of a region.

    core : (y0, y1, x0, x1) the pixels this chunk owns (the region's cores tile it exactly).
    canvas : (y0, y1, x0, x1) what it samples: the core plus a margin above and to the left that
        earlier chunks already own (it conditions the chunk on them), at least one window a side.
    """

    index: int
    core: tuple[int, int, int, int]
    canvas: tuple[int, int, int, int]


def plan_chunks(region_hw: tuple[int, int], *, chunk: int, margin: int, window: int, cell: int) -> list[Chunk]:
    """Cut a (H, W) px canvas (both >= ``window``, multiples of ``cell``) into chunks, raster order.

    Cores are ``chunk`` px squares (the last row and column take the remainder); each canvas
    reaches ``margin`` px above and left of its core into earlier chunks, and further where the
    core is smaller than a window, so that every canvas holds at least one window a side.
    """
    h, w = region_hw
    if h < window or w < window or h % cell or w % cell:
        raise ValueError(f"region canvas {h}x{w} must be >= {window} px a side and a multiple of {cell}")
    if chunk < window or chunk % cell or margin % cell or margin < 0:
        raise ValueError(f"chunk ({chunk}) must be >= window ({window}); chunk and margin ({margin}) multiples of {cell}")

    def cuts(length: int) -> list[tuple[int, int]]:
        n = max(1, math.ceil(length / chunk))
        edges = [min(i * chunk, length) for i in range(n)] + [length]
        return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]

    out = []
    for y0, y1 in cuts(h):
        for x0, x1 in cuts(w):
            cy0 = max(0, min(y0 - margin, y1 - window))
            cx0 = max(0, min(x0 - margin, x1 - window))
            out.append(Chunk(index=len(out), core=(y0, y1, x0, x1), canvas=(cy0, y1, cx0, x1)))
    return out
