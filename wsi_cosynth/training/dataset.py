"""Training examples from LabelledTiles of any reader: random crops, D4 flips, prompts.

Each tile is prepared once (semantic label, distance map, point map of its nuclei centroids);
an example is a random crop of ``tile_size`` with one of the 8 symmetries of the square applied
to all maps together, and a prompt from the tissue type and the classes whose centroids lie in
the crop. All randomness comes from the ``numpy.random.Generator`` passed to :meth:`batch`.

Tiles of several sources (training/mixture.py) come in their own class sets: ``class_luts``
maps each set's ids into the model's (by name, decided by the caller), where K + 1 stands for a
nucleus of unknown class (models with ``model.unknown_class``); ``weights`` make some tiles
likelier than others (the sources' balance).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..diffusion.joint import JointState
from ..errors import CosynthError
from ..records import LabelledTile
from ..taxonomy import Taxonomy
from ..models.denoiser import unknown_class_id
from ..models.text import UNCLASSIFIED_WORD, build_prompt, prompt_tissue


@dataclass(frozen=True)
class PreparedTile:
    """image (H, W, 3) uint8; semantic (H, W) int64 0..K; distance (H, W) float32 in [0, 1];
    points (H, W) int64 class at each centroid pixel (0 elsewhere)."""

    name: str
    image: np.ndarray
    semantic: np.ndarray
    distance: np.ndarray
    points: np.ndarray


@dataclass(frozen=True)
class Batch:
    x0: JointState
    points: torch.Tensor  # (B, S, S) int64
    prompts: list[str]
    keep_text: torch.Tensor  # (B,) bool, False where the prompt is dropped


def source_image_of(name: str) -> str:
    """The source image a tile was cut from: ``train_10_003`` -> ``train_10`` (a trailing
    ``_<digits>`` is the tile index) and ``slide_x256_y512`` -> ``slide`` (a slide tile's
    level-0 position); names without either are their own source."""
    m = re.match(r"^(.*)_x\d+_y\d+$", name) or re.match(r"^(.*)_\d+$", name)
    return m.group(1) if m else name


def prepare_tile(tile: LabelledTile, class_lut: np.ndarray | None = None) -> PreparedTile:
    """Semantic, distance and point maps of one tile (distance from the tile if it has one).

    ``class_lut``: (K_tile + 1,) int64, the tile's class ids -> the model's (``lut[0] = 0``);
    None keeps the tile's ids.
    """
    from ..layouts import distance_map, layout_from_tile, rasterize_points

    layout = layout_from_tile(tile)
    dist = tile.distance if tile.distance is not None else distance_map(tile.instances)
    semantic, classes = tile.semantic(), layout.classes
    if class_lut is not None:
        semantic, classes = class_lut[semantic], class_lut[classes]
    points = rasterize_points(layout.xy_tile, classes, tile.size)
    return PreparedTile(tile.provenance.name, tile.image, semantic, np.asarray(dist, np.float32),
                        np.asarray(points, np.int64))


def d4(a: np.ndarray, k: int) -> np.ndarray:
    """Symmetry ``k`` in 0..7 of the square on the first two axes: k % 4 quarter turns, then a
    left-right flip when k >= 4."""
    a = np.rot90(a, k % 4, axes=(0, 1))
    return a[:, ::-1] if k >= 4 else a


class TileDataset:
    """Random training examples over prepared tiles (``augment=False``: fixed top-left crop, no flips).

    ``class_luts``: class-set names (a taxonomy's ``names``) -> (K_set + 1,) id lookup into
    ``taxonomy``, for tiles of other class sets (values 1..K, or K + 1 for a nucleus of unknown
    class); tiles of ``taxonomy`` itself need none. ``weights``: (N,) relative probability of each
    tile being drawn (None: uniform).
    """

    def __init__(
        self,
        tiles: Iterable[LabelledTile],
        *,
        taxonomy: Taxonomy,
        tile_size: int,
        tissue: str | None,
        text_drop_prob: float = 0.1,
        augment: bool = True,
        class_luts: dict[tuple[str, ...], np.ndarray] | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.taxonomy = taxonomy
        self.augment = augment
        self.tile_size = tile_size
        self.tissue = tissue
        self.text_drop_prob = text_drop_prob
        self.tiles: list[PreparedTile] = []
        self.tissues: list[str | None] = []
        luts = class_luts or {}
        for tile in tiles:
            lut = luts.get(tuple(tile.taxonomy.names))
            if lut is None and tile.taxonomy.names != taxonomy.names:
                raise CosynthError(f"tile {tile.provenance.name!r}: taxonomy {tile.taxonomy.key!r} differs from {taxonomy.key!r}")
            h, w = tile.size
            if h < tile_size or w < tile_size:
                raise CosynthError(f"tile {tile.provenance.name!r} is {w}x{h}, smaller than the training tile size {tile_size}")
            self.tiles.append(prepare_tile(tile, lut))
            self.tissues.append(tissue or tile.provenance.tissue)
        if not self.tiles:
            raise CosynthError("no training tiles (is the data directory empty, or every source image held out?)")
        self.probabilities = _tile_probabilities(weights, len(self.tiles))

    def __len__(self) -> int:
        return len(self.tiles)

    def class_word(self, class_id: int) -> str:
        """The prompt word of a class id of the prepared maps (K + 1: a nucleus of unknown class)."""
        if class_id == unknown_class_id(self.taxonomy.n_classes):
            return UNCLASSIFIED_WORD
        return self.taxonomy.name_of(class_id)

    def draw_tiles(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n,) int64 tile indices drawn with replacement: uniform, or by ``weights``."""
        if self.probabilities is None:
            return rng.integers(0, len(self.tiles), size=n)
        return rng.choice(len(self.tiles), size=n, p=self.probabilities)

    def example(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, bool]:
        """(image, semantic, distance, points, prompt, keep_text) of one random view of tile ``i``."""
        t, s = self.tiles[i], self.tile_size
        h, w = t.semantic.shape
        if self.augment:
            r0, c0, k = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1)), int(rng.integers(0, 8))
        else:  # the top-left crop as it is (fitting one tile exactly)
            r0, c0, k = 0, 0, 0
        crop = [d4(a[r0:r0 + s, c0:c0 + s], k) for a in (t.image, t.semantic, t.distance, t.points)]
        present = sorted(set(int(c) for c in np.unique(crop[3]) if c > 0))
        names = [self.class_word(c) for c in present]
        # Shuffle the class names with the numpy stream: a torch generator seeded from it.
        g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        prompt = build_prompt(self.tissues[i], names, g)
        keep = bool(rng.random() >= self.text_drop_prob)
        return (*crop, prompt, keep)

    def batch(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """A batch of random examples, tiles drawn with replacement (uniformly, or by ``weights``)."""
        if self.probabilities is None:  # one draw per example, interleaved, as before weights existed
            ex = [self.example(int(rng.integers(0, len(self.tiles))), rng) for _ in range(batch_size)]
        else:
            ex = [self.example(int(i), rng) for i in self.draw_tiles(batch_size, rng)]
        image = torch.from_numpy(np.stack([e[0] for e in ex]).astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1
        label = torch.from_numpy(np.stack([e[1] for e in ex]).astype(np.int64))
        dist = torch.from_numpy(np.stack([e[2] for e in ex]).astype(np.float32))[:, None] * 2 - 1
        points = torch.from_numpy(np.stack([e[3] for e in ex]).astype(np.int64))
        return Batch(JointState(image, dist, label), points, [e[4] for e in ex], torch.tensor([e[5] for e in ex]))

    def summary(self) -> dict:
        names = [t.name for t in self.tiles]
        tissues = sorted({prompt_tissue(t) for t in self.tissues})
        return {"n_tiles": len(names), "source_images": sorted(set(source_image_of(n) for n in names)),
                "tissues": tissues}


def _tile_probabilities(weights: Sequence[float] | None, n: int) -> np.ndarray | None:
    """(n,) float64 drawing probabilities from relative weights; None for uniform (or no weights)."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != n or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise CosynthError(f"tile weights must be {n} finite non-negative numbers with a positive sum")
    if np.all(w == w[0]):
        return None
    return w / w.sum()
