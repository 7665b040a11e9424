"""CosynthModel: denoiser + text encoder + joint diffusion process + what the model was trained on
(taxonomy, mpp, tile size), with the sampling entry point used by the pipeline."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..diffusion.guidance import combine_guidance
from ..diffusion.joint import JointDiffusion, JointPrediction, JointState, LossWeights
from ..diffusion.samplers import sample_steps
from ..diffusion.schedules import CosineSchedule, strided_timesteps
from ..errors import CosynthError
from ..records import UNCLASSIFIED, Layout
from ..taxonomy import Taxonomy, normalise_name
from .autoencoder import ImageAutoencoder
from .config import CosynthConfig
from .denoiser import Denoiser, unknown_class_id
from .text import (UNCLASSIFIED_WORD, TissuePromptWarning, build_prompt, build_text_encoder, prompt_class_names,
                   prompt_tissue, tissue_prompt_note)


@dataclass(frozen=True)
class SampleOutput:
    """One co-synthesised tile.

    image : (H, W, 3) uint8 RGB
    semantic : (H, W) int64, 0 background, 1..K classes of the model's taxonomy
    distance : (H, W) float32 in [0, 1]
    prompt : the text the sample was conditioned on
    """

    image: np.ndarray
    semantic: np.ndarray
    distance: np.ndarray
    prompt: str


def build_process(config: CosynthConfig, n_classes: int) -> JointDiffusion:
    d = config.diffusion

    def sched(c):  # one cosine schedule per modality
        return CosineSchedule(d.num_steps, offset=c.offset, max_beta=c.max_beta)

    return JointDiffusion(image=sched(d.image), distance=sched(d.distance), label=sched(d.label),
                          num_classes=n_classes + 1, weights=LossWeights(*d.loss_weights, label_ce=d.label_ce_weight),
                          prediction=d.prediction, min_snr_gamma=d.min_snr_gamma,
                          clip_image_x0=config.model.image_latent is None)


class CosynthModel(nn.Module):
    """The joint diffusion model for one taxonomy, resolution and tile size."""

    def __init__(self, config: CosynthConfig, taxonomy: Taxonomy, *, mpp: float | None, tile_size: int | None = None,
                 text_encoder=None) -> None:
        """``text_encoder``: one already built from ``config.model.text`` (e.g. to share a frozen
        pretrained encoder between models); None builds it."""
        super().__init__()
        self.config = config
        self.taxonomy = taxonomy
        self.mpp = mpp
        self.tile_size = int(tile_size or config.train.tile_size)
        encoder = text_encoder if text_encoder is not None else build_text_encoder(
            config.model.text, prompt_class_names(list(taxonomy.names), unknown_class=config.model.unknown_class))
        if isinstance(encoder, nn.Module):
            self.text_encoder = encoder  # trainable: its weights are part of the checkpoint
        else:
            object.__setattr__(self, "text_encoder", encoder)  # frozen: kept out of state_dict
        self.denoiser = Denoiser(config.model, n_classes=taxonomy.n_classes, tile_size=self.tile_size, text_dim=encoder.dim)
        self.process = build_process(config, taxonomy.n_classes)
        # A latent model's image autoencoder: trained first (training/autoencoder.py), then frozen;
        # its weights are part of the checkpoint, so a bundled model is one file as before.
        self.autoencoder: ImageAutoencoder | None = None
        if config.model.image_latent is not None:
            self.autoencoder = ImageAutoencoder(config.model.image_latent).requires_grad_(False)
        # The tissue words of the training prompts (from the checkpoint's data summary; None: not
        # recorded), and the tissues already warned about (once each per model).
        self.trained_tissues: set[str] | None = None
        self._noted_tissues: set[str] = set()

    @property
    def supports_unknown_class(self) -> bool:
        """Whether layouts may hold nuclei of unknown class (``records.UNCLASSIFIED``)."""
        return self.config.model.unknown_class

    @property
    def text_encoder_id(self) -> str:
        return self.text_encoder.encoder_id

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def encode_text(self, prompts: list[str], keep: torch.Tensor) -> torch.Tensor:
        """(B, D) text condition; rows where ``keep`` is False are the learned null text."""
        emb = self.text_encoder.encode(prompts, self.device)
        return self.denoiser.text_condition(emb, keep.to(self.device))

    def training_losses(
        self, x0: JointState, points: torch.Tensor, prompts: list[str], keep_text: torch.Tensor,
        generator: torch.Generator, t: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The joint loss for one batch at steps ``t`` (default: drawn uniformly; see JointDiffusion.losses)."""
        b = x0.label.shape[0]
        if t is None:
            t = torch.randint(0, self.process.num_steps, (b,), generator=generator, device=generator.device)
        t = t.to(self.device)
        if self.autoencoder is not None:
            with torch.no_grad():
                x0 = JointState(self.autoencoder.encode(x0.image), x0.distance, x0.label)
        text = self.encode_text(prompts, keep_text)
        feats = self.denoiser.encode_points(points)
        return self.process.losses(lambda x_t, tt: self.denoiser(x_t, tt, text, feats), x0, t, generator)

    # ---------------------------------------------------------------- sampling
    def _check_layouts(self, layouts: list[Layout]) -> None:
        names = tuple(normalise_name(n) for n in self.taxonomy.names)
        for lay in layouts:
            where = f"layout {lay.provenance.name!r}"
            if not self.supports_unknown_class and lay.unclassified.any():
                raise CosynthError(
                    f"{where}: {int(lay.unclassified.sum())} nuclei have no class, and this model "
                    f"(classes {', '.join(self.taxonomy.names)}) has no unknown class: give them one of its classes "
                    "(--default-class NAME)")
            if tuple(normalise_name(n) for n in lay.taxonomy.names) != names:
                raise CosynthError(
                    f"{where}: taxonomy {lay.taxonomy.key!r} ({', '.join(lay.taxonomy.names)}) differs from the model's "
                    f"{self.taxonomy.key!r} ({', '.join(self.taxonomy.names)}); map the classes by name first"
                )
            if tuple(lay.size) != (self.tile_size, self.tile_size):
                raise CosynthError(f"{where}: tile size {lay.size} but the model makes {self.tile_size}x{self.tile_size} tiles")

    def tissue_note(self, tissue: str | None) -> str | None:
        """What embedding a prompt for ``tissue`` gets when this model did not train on the word
        (:func:`~wsi_cosynth.models.text.tissue_prompt_note`); None when it did."""
        vocabulary = getattr(self.text_encoder, "index", None)
        return tissue_prompt_note(tissue, encoder_id=self.text_encoder_id,
                                  vocabulary=set(vocabulary) if vocabulary is not None else None,
                                  trained_tissues=self.trained_tissues)

    def _warn_untrained_tissues(self, layouts: list[Layout]) -> None:
        for tissue in dict.fromkeys(prompt_tissue(lay.tissue) for lay in layouts):
            if tissue not in self._noted_tissues:
                self._noted_tissues.add(tissue)
                note = self.tissue_note(tissue)
                if note is not None:
                    warnings.warn(note, TissuePromptWarning, stacklevel=3)

    def prompts_for(self, layouts: list[Layout], generator: torch.Generator) -> list[str]:
        """The prompt of each layout: its tissue and the classes of its nuclei (nuclei of unknown
        class as the word ``unclassified``), shuffled with ``generator``."""
        self._warn_untrained_tissues(layouts)
        prompts = []
        for lay in layouts:
            present = [UNCLASSIFIED_WORD if c == UNCLASSIFIED else self.taxonomy.name_of(c)
                       for c in sorted(set(int(c) for c in lay.classes))]
            prompts.append(build_prompt(lay.tissue, present, generator))
        return prompts

    def point_map(self, layout: Layout) -> np.ndarray:
        """(S, S) int64 point map of a layout: class ids, nuclei of unknown class as K + 1."""
        from ..layouts import rasterize_points

        classes = np.where(layout.unclassified, unknown_class_id(self.taxonomy.n_classes), layout.classes)
        return rasterize_points(layout.xy_tile, classes, (self.tile_size, self.tile_size))

    @torch.no_grad()
    def sample(
        self,
        layouts: list[Layout],
        *,
        steps: int | None = None,
        guidance: float | None = None,
        sampler: str | None = None,
        eta: float | None = None,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        callback=None,
        guidance_interval: tuple[float, float] | None = None,
        spacing: str | None = None,
        final_label: str | None = None,
    ) -> list[SampleOutput]:
        """Co-synthesise image, semantic label and distance map for each layout (one batch).

        ``steps`` < T uses the strided sampler (``sampler`` "ddpm", "ddim" with ``eta``, "dpmpp_2m" or
        "dpmpp_2m_sde"; ``spacing`` "linspace" or "trailing" places the steps; ``final_label`` "sample" or
        "mode": the label's last step draws from its x_0 prediction or takes the most likely class);
        ``guidance`` is the classifier-free scale w (1 = conditional only, no extra pass), applied
        at the steps whose t / (T - 1) lies in ``guidance_interval``. Each setting left None is
        the model's own (its config's ``sample`` section, chosen for it by measurement).
        """
        settings = self.config.sample.with_overrides(steps=steps, guidance=guidance, sampler=sampler, eta=eta,
                                                     guidance_interval=guidance_interval, spacing=spacing,
                                                     final_label=final_label)
        if not layouts:
            return []
        self._check_layouts(layouts)
        device = torch.device(device) if device is not None else self.device
        if self.device != device:
            self.to(device)
        self.eval()
        b, s = len(layouts), self.tile_size
        points = torch.stack([torch.as_tensor(self.point_map(lay), dtype=torch.long) for lay in layouts]).to(device)
        prompts = self.prompts_for(layouts, generator)
        ones = torch.ones(b, dtype=torch.bool)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
        with autocast:
            feats = self.denoiser.encode_points(points)  # once per sample, reused at every step
            cond = self.encode_text(prompts, ones)
            to_eps = self.process.to_eps  # the samplers take noise predictions, whatever the network predicts
            if settings.guidance == 1.0:
                def model_fn(x_t: JointState, t: torch.Tensor) -> JointPrediction:
                    return to_eps(self.denoiser(x_t, t, cond, feats), x_t, t)
            else:
                text2 = torch.cat([cond, self.encode_text(prompts, ~ones)])
                feats2 = torch.cat([feats, feats])

                lo, hi = settings.guidance_interval
                last = self.process.num_steps - 1

                def model_fn(x_t: JointState, t: torch.Tensor) -> JointPrediction:
                    if not lo <= int(t[0]) / last <= hi:
                        return to_eps(self.denoiser(x_t, t, cond, feats), x_t, t)
                    # conditional and unconditional halves as ONE batched forward
                    c, u = self.denoiser(x_t, t.repeat(2), text2, feats2, repeats=2).chunk(2)
                    return to_eps(combine_guidance(c, u, settings.guidance), x_t, t)

            timesteps = strided_timesteps(self.process.num_steps, settings.steps, settings.spacing)
            ae = self.autoencoder
            image_shape = None if ae is None else (ae.latent_channels, s // ae.factor, s // ae.factor)
            x = sample_steps(model_fn, (b, s, s), self.process, timesteps=timesteps, method=settings.sampler, eta=settings.eta,
                             generator=generator, device=device, callback=callback, image_shape=image_shape,
                             final_label=settings.final_label)
            if ae is not None:
                x = JointState(ae.decode(x.image.float()), x.distance, x.label)
        image = ((x.image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        dist = ((x.distance.float().clamp(-1, 1) + 1) / 2)[:, 0].cpu().numpy().astype(np.float32)
        sem = x.label.long().cpu().numpy()
        return [SampleOutput(image[i], sem[i], dist[i], prompts[i]) for i in range(b)]

    # ------------------------------------------------- windows of a larger canvas (pipeline/region.py)
    def window_prediction(
        self,
        x_t: JointState,
        t: torch.Tensor,
        point_features: torch.Tensor,
        text: torch.Tensor,
        null_text: torch.Tensor,
        *,
        guidance: float,
        guidance_interval: tuple[float, float],
    ) -> JointPrediction:
        """The samplers' prediction (noise for image and distance, log x0 for the label) for a batch
        of windows cut from one larger canvas, each with its own conditions.

        ``x_t``: (B, ...) window states at the steps ``t`` (B,) (one shared step); ``point_features``
        (B, C, s/f, s/f) from :meth:`Denoiser.encode_points`; ``text`` and ``null_text`` (B, D) from
        :meth:`encode_text` with keep True and False. Guidance as in :meth:`sample`: scale
        ``guidance`` at the steps whose t / (T - 1) lies in ``guidance_interval``, both passes
        as one batched forward.
        """
        lo, hi = guidance_interval
        to_eps = self.process.to_eps
        if guidance == 1.0 or not lo <= int(t[0]) / (self.process.num_steps - 1) <= hi:
            return to_eps(self.denoiser(x_t, t, text, point_features), x_t, t)
        c, u = self.denoiser(x_t, t.repeat(2), torch.cat([text, null_text]), torch.cat([point_features, point_features]),
                             repeats=2).chunk(2)
        return to_eps(combine_guidance(c, u, guidance), x_t, t)
