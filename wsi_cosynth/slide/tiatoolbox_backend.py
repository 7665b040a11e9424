"""TIAToolbox as an optional slide backend (``SlideReader(path, backend="tiatoolbox")``).

TIAToolbox is not a dependency (its releases pin older torch versions); it is imported only
when this backend is asked for, and a missing install is a CosynthError that says how to get it.
Level geometry and window reads go through ``WSIReader.read_rect(..., units="level")``; the
resolution arithmetic stays ours so both backends choose levels the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CosynthError


class TiaToolboxSource:
    """A TIAToolbox ``WSIReader`` behind the reader's LevelSource protocol."""

    def __init__(self, path: Path) -> None:
        try:
            from tiatoolbox.wsicore.wsireader import WSIReader
        except ImportError as exc:
            raise CosynthError(
                f"slide backend 'tiatoolbox' is not available ({exc}); install it with "
                f"`pip install tiatoolbox` in an environment whose torch it supports, or use "
                f"the default backend 'openslide'"
            ) from None
        self.path = path
        try:
            self._reader = WSIReader.open(str(path))
            info = self._reader.info
        except Exception as exc:  # noqa: BLE001 - TIAToolbox raises many types for bad files
            raise CosynthError(f"slide {path} cannot be opened with TIAToolbox ({exc})") from None
        self.level_dimensions = [tuple(int(v) for v in d) for d in info.level_dimensions]
        self.level_downsamples = [float(d) for d in info.level_downsamples]
        self.properties = {}
        if info.mpp is not None:
            self.properties["openslide.mpp-x"] = str(float(np.asarray(info.mpp).reshape(-1)[0]))

    def read_window(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        try:
            region = self._reader.read_rect(
                (int(round(x * ds)), int(round(y * ds))), (w, h), resolution=level, units="level",
                pad_mode="constant", pad_constant_values=255,
            )
        except Exception as exc:  # noqa: BLE001
            raise CosynthError(f"slide {self.path} cannot be read with TIAToolbox ({exc})") from None
        return np.ascontiguousarray(np.asarray(region)[:h, :w, :3], dtype=np.uint8)

    def close(self) -> None:
        close = getattr(self._reader, "close", None)
        if callable(close):
            close()
