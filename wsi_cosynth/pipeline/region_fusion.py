"""One joint sampling over a canvas larger than the model's tile: the predictions of windows are
fused at every step (MultiDiffusion, Bar-Tal et al. 2023), so the whole canvas is one state of
the chain and nuclei, glands and stroma continue across window borders.

At each step the fused model function cuts the canvas state into windows (:class:`WindowPlan`),
runs the denoiser on them in batches, each with its crop of the canvas's point features and a
prompt naming the classes of its points, and averages with the windows' weights:

- the image noise (in the autoencoder's latent for a latent model) and the distance noise,
- the label's x0 log-probabilities, then renormalised with a log-softmax (a weighted geometric
  mean of the windows' distributions, the fusion of categorical predictions in log space).

Pixels that an earlier chunk already fixed (``Known``) get the prediction that points at their
fixed clean value (image and distance: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t); label: its
one-hot), so the chain lands exactly on them while windows that straddle them see them, noised
to the current step, as context: the new chunk continues the old one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..diffusion.categorical import index_to_log_onehot
from ..diffusion.joint import JointPrediction, JointState
from ..diffusion.samplers import sample_steps
from ..diffusion.schedules import strided_timesteps
from ..models.config import SampleConfig
from ..models.denoiser import unknown_class_id
from ..models.text import UNCLASSIFIED_WORD, build_prompt
from .window_plan import WindowPlan, axis_starts, window_index, window_weight


def _window_indices(shape_hw: tuple[int, int], y: int, x: int, size: int) -> tuple[slice | np.ndarray, slice | np.ndarray]:
    """Row and column positions of a ``size`` px window at (``y``, ``x``) on a grid of ``shape_hw``
    (a wrapped window's positions continue at the opposite edge: ``"wrap"`` plans)."""
    return window_index(y, size, shape_hw[0]), window_index(x, size, shape_hw[1])


def crop_window(t: torch.Tensor, y: int, x: int, size: int) -> torch.Tensor:
    """The (..., size, size) window of ``t`` at (``y``, ``x``) in its own grid, wrapped at the edges."""
    iy, ix = _window_indices(t.shape[-2:], y, x, size)
    rows = t[..., iy, :] if isinstance(iy, slice) else t.index_select(-2, torch.as_tensor(iy, device=t.device))
    return rows[..., ix] if isinstance(ix, slice) else rows.index_select(-1, torch.as_tensor(ix, device=t.device))


def add_window(acc: torch.Tensor, y: int, x: int, value: torch.Tensor) -> None:
    """``acc[..., window] += value`` for the window of ``value``'s size at (``y``, ``x``), wrapped."""
    size = value.shape[-1]
    iy, ix = _window_indices(acc.shape[-2:], y, x, size)
    if isinstance(iy, slice) and isinstance(ix, slice):
        acc[..., iy, ix] += value
        return
    ry = np.arange(iy.start, iy.stop) if isinstance(iy, slice) else iy
    rx = np.arange(ix.start, ix.stop) if isinstance(ix, slice) else ix
    # Positions within one window are distinct (size <= the canvas side), so += adds each once.
    acc[..., torch.as_tensor(ry, device=acc.device)[:, None], torch.as_tensor(rx, device=acc.device)[None, :]] += value


@dataclass(frozen=True)
class Known:
    """Clean values an earlier chunk fixed on this canvas, in the model's spaces.

    image : (1, C, h, w) float32, the latent (or the pixels in [-1, 1] for a pixel model)
    distance : (1, 1, H, W) float32 in [-1, 1]
    label : (1, H, W) int64
    mask : (H, W) bool numpy, True where fixed; whole cells of the image grid (the cores of
        chunks are cell-aligned)
    """

    image: torch.Tensor
    distance: torch.Tensor
    label: torch.Tensor
    mask: np.ndarray


class FusedPrediction:
    """The model function of a whole canvas: ``(x_t, t) -> JointPrediction`` with batch 1.

    Parameters
    ----------
    model : a CosynthModel.
    points : (H, W) int64 point map of the canvas (0 none, k a class-k centroid).
    tissue : the tissue word of the prompts.
    plan : where the windows lie at each step.
    settings : the sampling settings (guidance, guidance_interval are used here).
    window_generator : draws the windows' offsets (kept apart from the sampler's noise, so the
        noise of a seed does not depend on the window scheme).
    prompt_generator : shuffles the class names of each distinct prompt once.
    known : clean values fixed by earlier chunks, or None.
    batch_size : windows per network batch (the memory bound of a step, with the canvas state).
    """

    def __init__(self, model, points: np.ndarray, tissue: str | None, plan: WindowPlan, settings: SampleConfig, *,
                 window_generator: torch.Generator, prompt_generator: torch.Generator, known: Known | None = None,
                 batch_size: int = 8) -> None:
        self.model = model
        self.device = model.device
        self.points = np.asarray(points, dtype=np.int64)
        self.plan = plan
        self.settings = settings
        self.window_generator = window_generator
        self.prompt_generator = prompt_generator
        self.tissue = tissue
        self.batch_size = int(batch_size)
        self.known = known
        self.unshuffle = int(model.config.model.unshuffle)
        with torch.no_grad():
            # Once per canvas: the point encoder is convolutional, so a window's crop of the
            # canvas features is its own features, with its neighbours' points as context.
            self.features = model.denoiser.encode_points(torch.as_tensor(self.points, device=self.device)[None])
        self._text: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        s = plan.window
        self._weight_pixels = torch.as_tensor(window_weight(s, plan.weights), device=self.device)
        self._weights_by_factor: dict[int, torch.Tensor] = {}
        self.n_windows = 0  # network windows evaluated so far (conditional passes)
        self.last_starts: list[tuple[int, int]] = []  # the windows of the latest step (its output is the sample's)

    def _weight(self, factor: int) -> torch.Tensor:
        """The window weights on a grid ``factor`` times coarser than pixels."""
        if factor not in self._weights_by_factor:
            self._weights_by_factor[factor] = torch.as_tensor(window_weight(self.plan.window // factor, self.plan.weights),
                                                              device=self.device)
        return self._weights_by_factor[factor]

    def _text_for(self, classes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, D) conditional and null text of the prompt naming ``classes``, encoded once."""
        if classes not in self._text:
            unknown = unknown_class_id(self.model.taxonomy.n_classes)
            names = [UNCLASSIFIED_WORD if c == unknown else self.model.taxonomy.name_of(c) for c in classes]
            prompt = build_prompt(self.tissue, names, self.prompt_generator)
            keep = torch.ones(1, dtype=torch.bool)
            self._text[classes] = (self.model.encode_text([prompt], keep), self.model.encode_text([prompt], ~keep))
        return self._text[classes]

    def _window_classes(self, y: int, x: int, size: int) -> tuple[int, ...]:
        """The classes of the points in a window (wrapped at the canvas edges)."""
        rows, cols = (np.arange(i.start, i.stop) if isinstance(i, slice) else i
                      for i in _window_indices(self.points.shape, y, x, size))
        return tuple(int(c) for c in np.unique(self.points[np.ix_(rows, cols)]) if c > 0)

    def __call__(self, x_t: JointState, t: torch.Tensor) -> JointPrediction:
        h, w = x_t.label.shape[-2:]
        f_img = h // x_t.image.shape[-2]
        f_pts = self.unshuffle
        s = self.plan.window
        acc_img = torch.zeros_like(x_t.image, dtype=torch.float32)
        acc_dist = torch.zeros_like(x_t.distance, dtype=torch.float32)
        k = self.model.process.num_classes
        acc_label = torch.zeros((1, k, h, w), dtype=torch.float32, device=x_t.label.device)
        sum_img = torch.zeros((1, 1, *x_t.image.shape[-2:]), dtype=torch.float32, device=x_t.image.device)
        sum_pix = torch.zeros((1, 1, h, w), dtype=torch.float32, device=x_t.label.device)
        w_img, w_pix = self._weight(f_img), self._weight_pixels
        starts = self.plan.starts((h, w), self.window_generator)
        self.last_starts = starts
        for i in range(0, len(starts), self.batch_size):
            batch = starts[i:i + self.batch_size]
            si = s // f_img
            xw = JointState(
                torch.cat([crop_window(x_t.image, y // f_img, x // f_img, si) for y, x in batch]),
                torch.cat([crop_window(x_t.distance, y, x, s) for y, x in batch]),
                torch.cat([crop_window(x_t.label, y, x, s) for y, x in batch]),
            )
            sp = s // f_pts
            feats = torch.cat([crop_window(self.features, y // f_pts, x // f_pts, sp) for y, x in batch])
            texts = [self._text_for(self._window_classes(y, x, s)) for y, x in batch]
            text = torch.cat([c for c, _ in texts])
            null = torch.cat([u for _, u in texts])
            tb = t[:1].expand(len(batch))
            pred = self.model.window_prediction(xw, tb, feats, text, null, guidance=self.settings.guidance,
                                                guidance_interval=self.settings.guidance_interval)
            self.n_windows += len(batch)
            for j, (y, x) in enumerate(batch):
                yi, xi = y // f_img, x // f_img
                add_window(acc_img, yi, xi, pred.eps_image[j].float() * w_img)
                add_window(sum_img, yi, xi, w_img[None, None].expand(1, 1, si, si))
                add_window(acc_dist, y, x, pred.eps_distance[j].float() * w_pix)
                add_window(acc_label, y, x, pred.log_x0_label[j].float() * w_pix)
                add_window(sum_pix, y, x, w_pix[None, None].expand(1, 1, s, s))
        eps_image = acc_img / sum_img
        eps_distance = acc_dist / sum_pix
        log_x0 = torch.log_softmax(acc_label / sum_pix, dim=1)
        if self.known is not None:
            eps_image, eps_distance, log_x0 = self._pin_known(x_t, t, eps_image, eps_distance, log_x0)
        return JointPrediction(eps_image, eps_distance, log_x0)

    def _pin_known(self, x_t: JointState, t: torch.Tensor, eps_image: torch.Tensor, eps_distance: torch.Tensor,
                   log_x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predictions that lead the chain exactly to the known clean values where they are fixed."""
        kn = self.known
        process = self.model.process
        f_img = x_t.label.shape[-1] // x_t.image.shape[-1]
        mask = torch.as_tensor(kn.mask, device=x_t.label.device)[None, None]
        mask_img = mask[..., ::f_img, ::f_img]
        t1 = t[:1]
        eps_image = torch.where(mask_img, process.image.predict_eps(x_t.image.float(), t1, kn.image), eps_image)
        eps_distance = torch.where(mask, process.distance.predict_eps(x_t.distance.float(), t1, kn.distance), eps_distance)
        log_x0 = torch.where(mask, index_to_log_onehot(kn.label, process.num_classes), log_x0)
        return eps_image, eps_distance, log_x0


@dataclass(frozen=True)
class CanvasSample:
    """A sampled canvas in the model's spaces: image (1, C, h, w) latent or pixels, distance
    (1, 1, H, W) in [-1, 1], label (1, H, W) int64; ``n_windows`` network windows it took;
    ``last_starts`` the (y, x) corners of the last step's windows (where a seam would show)."""

    state: JointState
    n_windows: int
    last_starts: tuple[tuple[int, int], ...] = ()


def sample_canvas(
    model,
    points: np.ndarray,
    tissue: str | None,
    plan: WindowPlan,
    settings: SampleConfig,
    *,
    seed: tuple[int, ...],
    known: Known | None = None,
    batch_size: int = 8,
    callback: Callable[[int, int, JointState], None] | None = None,
) -> CanvasSample:
    """Run the model's sampler over a whole (H, W) canvas with fused windows.

    ``points`` (H, W) int64 point map; ``seed``: integers that fix the canvas's noise, window
    offsets and prompt order (e.g. (run seed, chunk index)). H and W must be multiples of the
    model's cell and at least one window.
    """
    device = model.device
    h, w = points.shape
    base = np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in seed]).generate_state(3)
    noise_gen = torch.Generator(device="cpu").manual_seed(int(base[0]))
    window_gen = torch.Generator(device="cpu").manual_seed(int(base[1]))
    prompt_gen = torch.Generator(device="cpu").manual_seed(int(base[2]))
    model.eval()
    ae = model.autoencoder
    image_shape = None if ae is None else (ae.latent_channels, h // ae.factor, w // ae.factor)
    timesteps = strided_timesteps(model.process.num_steps, settings.steps, settings.spacing)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        fused = FusedPrediction(model, points, tissue, plan, settings, window_generator=window_gen,
                                prompt_generator=prompt_gen, known=known, batch_size=batch_size)
        state = sample_steps(fused, (1, h, w), model.process, timesteps=timesteps, method=settings.sampler,
                             eta=settings.eta, generator=noise_gen, device=device, callback=callback,
                             image_shape=image_shape)
    return CanvasSample(state=state, n_windows=fused.n_windows, last_starts=tuple(fused.last_starts))


def decode_image(model, image: torch.Tensor, *, tile: int = 1024, overlap: int = 64) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a sampled canvas image (1, C, h, w): the autoencoder's decode for a
    latent model, in overlapping tiles of ``tile`` px blended with cosine weights (the decoder's
    GroupNorm statistics differ a little per tile; the blend leaves no edge), or the pixels as
    they are for a pixel model."""
    ae = model.autoencoder
    if ae is None:
        return ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    f = ae.factor
    h, w = image.shape[-2] * f, image.shape[-1] * f
    tile = min(tile, h, w) // f * f
    acc = np.zeros((h, w, 3), dtype=np.float32)
    total = np.zeros((h, w, 1), dtype=np.float32)
    weight = window_weight(tile, "cosine")[:, :, None]
    stride = max(f, (tile - overlap) // f * f)
    with torch.no_grad():
        for y in axis_starts(h, tile, stride):
            for x in axis_starts(w, tile, stride):
                crop = image[..., y // f:(y + tile) // f, x // f:(x + tile) // f].float()
                rgb = ae.decode(crop)[0].clamp(-1, 1).permute(1, 2, 0).cpu().numpy()
                acc[y:y + tile, x:x + tile] += rgb * weight
                total[y:y + tile, x:x + tile] += weight
    return np.clip(np.round((acc / total + 1) * 127.5), 0, 255).astype(np.uint8)
