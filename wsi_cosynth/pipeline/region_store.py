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
        self.latent = self._map("latent.f32", np.float32, (image_channels, h // f, w // f))
        self.distance = self._map("distance.f16", np.float16, (h, w))
        self.label = self._map("label.u8", np.uint8, (h, w))
        self.image = self._map("image.u8", np.uint8, (h, w, 3))
        self.instances = self._map("instances.u32", np.uint32, (h, w))

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
