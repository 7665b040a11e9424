"""The Aperio .svs writer's old import path; the slide writers live in :mod:`wsi_cosynth.slide.writer`."""

from .writer import block_mean, write_aperio_svs

__all__ = ["block_mean", "write_aperio_svs"]
