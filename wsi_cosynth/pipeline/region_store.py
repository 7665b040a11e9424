"""The resumable work directory of a region synthesis: the region's maps on disk, chunk by chunk.

``DIR/.<stem>.synthetic.work/`` holds ``manifest.json`` (the run's parameters and the chunks
finished so far) and one raw memory-mapped array per map of the whole region canvas, so memory
holds only the chunk being sampled while the region may be as large as the disk allows:

- ``latent.f32`` (C, h, w): the sampled image in the model's space (latent, or pixels);
- ``distance.f16`` (H, W): the distance map in [-1, 1];
- ``label.u8`` (H, W): the semantic classes;
- ``image.u8`` (H, W, 3) and ``instances.u32`` (H, W): written by the passes after sampling.

A chunk counts as finished only once its maps are flushed and the manifest (rewritten atomically)
lists it; a killed run reruns the chunk it was in and nothing else. A rerun with other parameters
is refused unless ``restart``. Bytes of a finished chunk never change afterwards, so a resumed run
ends with the same files as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from .workdir import resume_manifest

MANIFEST = "manifest.json"


class RegionStore:
    """The maps of one region canvas of (H, W) px with a C-channel image at 1/``image_factor``."""

    def __init__(self, path: str | Path, params: dict, *, shape_hw: tuple[int, int], image_channels: int,
                 image_factor: int, restart: bool = False) -> None:
        self.path = Path(path)
        self.params = params
        h, w = (int(v) for v in shape_hw)
        self.shape_hw = (h, w)
        if restart and self.path.exists():
            shutil.rmtree(self.path)
        manifest = self.path / MANIFEST
        self.done: set[int] = set()
        previous = resume_manifest(manifest, "params", params, what="region synthesis")
        if previous is not None:
            self.done = {int(i) for i in previous.get("done", [])}
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_manifest()
        f = int(image_factor)
        self._layout = {"latent": ("latent.f32", np.float32, (image_channels, h // f, w // f)),
                        "distance": ("distance.f16", np.float16, (h, w)),
                        "label": ("label.u8", np.uint8, (h, w)),
                        "image": ("image.u8", np.uint8, (h, w, 3)),
                        "instances": ("instances.u32", np.uint32, (h, w))}
        self._map_all()

    def _map_all(self) -> None:
        for attr, (name, dtype, shape) in self._layout.items():
            setattr(self, attr, self._map(name, dtype, shape))

    def release_pages(self) -> None:
        """Flush every map and map it afresh, so that the pages a pass has touched leave this
        process's resident memory (they stay in the files and the page cache). Called after each
        chunk and block: otherwise the resident set grows by ~13 bytes per pixel processed, and
        the peak memory with the region's area."""
        self.close()
        self._map_all()

    def clear_instances(self) -> None:
        """Zero the instance map without touching its pages (the file is truncated and regrown,
        sparse): a rerun of the instance pass starts from nothing."""
        name, dtype, shape = self._layout["instances"]
        self.instances.flush()
        self.instances = None
        file = self.path / name
        with open(file, "r+b") as fh:
            fh.truncate(0)
            fh.truncate(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        self.instances = self._map(name, dtype, shape)

    def reader(self, *attrs: str, rows: int | None = None, cols: int | None = None) -> "MapReader":
        """A read-only view of maps (several: stacked as channels) cut to ``rows`` x ``cols``, that maps
        its files afresh for every read, for writers that read a whole map once (the pyramid)."""
        return MapReader([(self.path / self._layout[a][0], *self._layout[a][1:]) for a in attrs], rows, cols)

    def _map(self, name: str, dtype: type, shape: tuple[int, ...]) -> np.memmap:
        file = self.path / name
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not file.exists() or file.stat().st_size != size:
            with open(file, "wb") as fh:  # a sparse file: disk is used only where written
                fh.truncate(size)
        return np.memmap(file, dtype=dtype, mode="r+", shape=shape)

    def _write_manifest(self) -> None:
        write_text_atomic(self.path / MANIFEST, json.dumps({"params": self.params, "done": sorted(self.done)}, indent=1))

    def is_done(self, chunk_index: int) -> bool:
        return chunk_index in self.done

    def mark_done(self, chunk_index: int) -> None:
        """Flush the maps, then record the chunk as finished."""
        for m in (self.latent, self.distance, self.label):
            m.flush()
        self.done.add(int(chunk_index))
        self._write_manifest()

    def close(self) -> None:
        """Flush every map and drop this store's references to them (the files stay)."""
        for name in ("latent", "distance", "label", "image", "instances"):
            m = getattr(self, name, None)
            if m is not None:
                m.flush()
                setattr(self, name, None)

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


class MapReader:
    """(H, W, C) view of one or more raw maps of equal (H, W), read lazily: each ``[rows, cols]``
    read maps the files, copies the slice and unmaps them, so reading a whole region leaves no
    pages resident (a plain memmap keeps every page it has read). Maps of one channel are stacked
    as channels, converted to the first map's dtype unless ``dtype`` is given."""

    def __init__(self, maps: list[tuple[Path, type, tuple[int, ...]]], rows: int | None = None,
                 cols: int | None = None, dtype: type | None = None) -> None:
        self.maps = maps
        h, w = maps[0][2][:2]
        channels = sum(shape[2] if len(shape) == 3 else 1 for _, _, shape in maps)
        self.shape = (h if rows is None else rows, w if cols is None else cols, channels)
        self.dtype = np.dtype(dtype or maps[0][1])
        self.ndim = 3
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize

    def astype(self, dtype: type) -> "MapReader":
        return MapReader(self.maps, self.shape[0], self.shape[1], dtype)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        ys, xs = key if isinstance(key, tuple) else (key, slice(None))
        ys = slice(*ys.indices(self.shape[0]))
        xs = slice(*xs.indices(self.shape[1]))
        parts = []
        for file, dtype, shape in self.maps:
            m = np.memmap(file, dtype=dtype, mode="r", shape=shape)
            part = np.array(m[ys, xs], dtype=self.dtype)
            del m
            parts.append(part if part.ndim == 3 else part[..., None])
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
