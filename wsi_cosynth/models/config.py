"""Typed, frozen configuration of a model and its training, read from YAML presets.

A config file has three sections: ``model`` (network sizes), ``diffusion`` (steps, schedules,
loss weights) and ``train`` (optimiser and data settings). Unknown keys are errors, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import CosynthError, require_file

TextKind = Literal["learned", "minilm", "clip"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextConfig(_Frozen):
    """Text encoder: ``learned`` (embedding over the prompt vocabulary, no weights needed),
    ``minilm`` (the bundled all-MiniLM-L6-v2, 384-d) or ``clip`` (a CLIP/PLIP text tower loaded
    from the local directory ``path``)."""

    kind: TextKind = "learned"
    path: str | None = None
    dim: int = Field(64, ge=1, description="embedding size of the learned encoder")
    tissues: tuple[str, ...] = ("colon", "colorectal", "breast", "ovary", "lung", "kidney", "liver",
                                "prostate", "stomach", "skin", "bladder", "pancreas", "unknown")

    @model_validator(mode="after")
    def _check_path(self) -> "TextConfig":
        if self.kind == "clip" and not self.path:
            raise ValueError("text.kind 'clip' needs text.path (a local CLIP/PLIP directory)")
        return self


class AutoencoderConfig(_Frozen):
    """The image autoencoder of a latent model (models/autoencoder.py): ``factor`` must equal the
    denoiser's ``unshuffle`` so the latent sits on the U-Net's grid."""

    latent_channels: int = Field(4, ge=1)
    factor: int = Field(4, ge=1)
    channels: int = Field(64, ge=8, description="width at latent resolution")
    blocks: int = Field(2, ge=0)
    full_res_channels: int = Field(32, ge=4, description="width of the decoder's full-resolution block")
    groups: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _check_groups(self) -> "AutoencoderConfig":
        for width in (self.channels, self.full_res_channels):
            if width % self.groups:
                raise ValueError(f"autoencoder width {width} is not divisible by groups = {self.groups}")
        return self


class ModelConfig(_Frozen):
    """Denoiser sizes. ``unshuffle`` is the pixel-unshuffle factor of the stem: the U-Net works
    at tile_size / unshuffle. ``attn_resolutions`` are U-Net feature sizes (pixels) with
    self-attention."""

    unshuffle: int = Field(1, ge=1)
    # A per-pixel linear path from the noisy input to the output, gated by the timestep: at high
    # noise eps ~ x_t, an identity the unshuffled stem (e.g. 144 -> 32 channels) cannot carry.
    input_skip: bool = True
    # Width of an optional shallow path at full tile resolution around the unshuffled U-Net (0:
    # none): one conv in, one residual block out, joined to the body by 1x1 convs. It gives the
    # sub-patch detail (nuclear boundaries, chromatin) a path that does not go through the
    # unshuffle squeeze. Zero-initialised where it joins, so adding it to a trained model
    # changes nothing until it is trained.
    full_res_channels: int = Field(0, ge=0)
    channels: int = Field(32, ge=8)
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = Field(1, ge=1)
    attn_resolutions: tuple[int, ...] = (16,)
    num_heads: int = Field(4, ge=1)
    groups: int = Field(8, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    rrdb_blocks: int = Field(1, ge=1)
    rrdb_channels: int = Field(32, ge=4)
    rrdb_growth: int = Field(16, ge=4)
    text: TextConfig = TextConfig()
    # Nuclei of unknown class (unclassified annotations such as MoNuSeg's): the point map gets an
    # explicit unknown-class value (an extra input channel of the point encoder) and the label loss
    # counts such a nucleus as "some nucleus class" (diffusion/categorical.py). False builds the
    # network exactly as before the option existed, so older models load and sample unchanged.
    unknown_class: bool = False
    # Latent image (None: the image is diffused in pixel space, as the paper): the joint
    # diffusion runs on this autoencoder's latent + the pixel-space label and distance map.
    image_latent: AutoencoderConfig | None = None

    @model_validator(mode="after")
    def _check_groups(self) -> "ModelConfig":
        if self.image_latent is not None:
            if self.image_latent.factor != self.unshuffle:
                raise ValueError(f"image_latent.factor {self.image_latent.factor} must equal unshuffle {self.unshuffle}")
            if self.full_res_channels:
                raise ValueError("full_res_channels needs a pixel-space image (image_latent is set)")
        if self.full_res_channels % self.groups:
            raise ValueError(f"full_res_channels {self.full_res_channels} is not divisible by groups = {self.groups}")
        # Every width the U-Net uses (the stem's and each level's) meets a GroupNorm, and an
        # attention block at any level (the middle block always has one) splits it into heads.
        for width in (self.channels, *(self.channels * m for m in self.channel_mults)):
            if width % self.groups:
                raise ValueError(f"channel width {width} (channels x mult) is not divisible by groups = {self.groups}")
            if width % self.num_heads:
                raise ValueError(f"channel width {width} (channels x mult) is not divisible by num_heads = {self.num_heads}")
        return self


class ScheduleConfig(_Frozen):
    offset: float = Field(0.008, gt=0.0)
    max_beta: float = Field(0.999, gt=0.0, lt=1.0)


class DiffusionConfig(_Frozen):
    num_steps: int = Field(1000, ge=2)
    image: ScheduleConfig = ScheduleConfig()
    distance: ScheduleConfig = ScheduleConfig()
    label: ScheduleConfig = ScheduleConfig()
    loss_weights: tuple[float, float, float] = (9.0, 1.0, 3.0)
    label_ce_weight: float = Field(1.0, ge=0.0, description="auxiliary x0 cross-entropy in the label loss")
    # What the network predicts for image and distance: the noise (the paper) or the velocity v.
    prediction: Literal["eps", "v"] = "eps"
    # Min-SNR loss weighting min(SNR, gamma) / SNR (Hang et al. 2023); None: unweighted.
    min_snr_gamma: float | None = Field(None, gt=0.0)


class TrainConfig(_Frozen):
    tile_size: int = Field(256, ge=8)
    # Train on random crops of this size (the networks are fully convolutional and sample whole
    # tiles): a 128-px crop costs a quarter of a 256-px one. None: crops of tile_size.
    crop_size: int | None = Field(None, ge=8)
    batch_size: int = Field(8, ge=1)
    steps: int = Field(10000, ge=1)
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    text_drop_prob: float = Field(0.1, ge=0, le=1)
    checkpoint_every: int = Field(200, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    log_every: int = Field(10, ge=1)
    validation_examples: int = Field(64, ge=1, description="held-out examples scored at every checkpoint")
    seed: int = 0
    num_threads: int | None = Field(2, ge=1)
    # Stage one of a latent model (model.image_latent): its autoencoder's training, on crops of
    # crop_size (or tile_size), batch 2 x batch_size. Skipped when its weights are given.
    autoencoder_steps: int = Field(1300, ge=1)
    autoencoder_lr: float = Field(1e-3, gt=0)
    # How several training sources share the batches (training/mixture.py): "sqrt": a source is
    # drawn with probability proportional to the square root of its tile count (a large source
    # still counts more, a small one is not drowned); "equal": every source alike; "tiles": every
    # tile alike (sources in proportion to their size). Within a source, tiles are uniform; one
    # source trains exactly as before the option existed.
    source_balance: Literal["sqrt", "equal", "tiles"] = "sqrt"


class SampleConfig(_Frozen):
    steps: int = Field(50, ge=1)
    guidance: float = 2.0
    sampler: Literal["ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_sde"] = "ddim"
    eta: float = Field(0.0, ge=0)
    # Where the strided steps fall in 0..T-1 (diffusion/schedules.py: strided_timesteps).
    spacing: Literal["linspace", "trailing"] = "linspace"
    # The label's last step: a draw from the predicted x_0 ("sample") or its most likely class ("mode").
    final_label: Literal["sample", "mode"] = "sample"
    # Noise levels t / (T - 1) at which classifier-free guidance is applied; the other steps take
    # the conditional prediction alone, one network pass instead of two (guidance in a limited
    # interval, Kynkaanniemi et al. 2024). (0, 1): every step, as the paper.
    guidance_interval: tuple[float, float] = (0.0, 1.0)

    @model_validator(mode="after")
    def _check_interval(self) -> "SampleConfig":
        lo, hi = self.guidance_interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"guidance_interval {list(self.guidance_interval)} must be [lo, hi] with 0 <= lo <= hi <= 1")
        return self

    def with_overrides(self, **given) -> "SampleConfig":
        """These settings with the given ones that are not None in their place (validated): a
        model's own settings are the default of every sampling entry point."""
        chosen = {k: v for k, v in given.items() if v is not None}
        unknown = set(chosen) - set(type(self).model_fields)
        if unknown:
            raise TypeError(f"unknown sampling settings {sorted(unknown)}")
        try:
            return type(self).model_validate({**self.model_dump(), **chosen})
        except ValidationError as exc:
            raise CosynthError(f"sampling settings: {exc.errors()[0]['msg']} ({chosen})") from None


class CosynthConfig(_Frozen):
    name: str
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()

    @model_validator(mode="after")
    def _check_sizes(self) -> "CosynthConfig":
        down = 2 ** (len(self.model.channel_mults) - 1)
        for key, size in (("tile_size", self.train.tile_size), ("crop_size", self.train.crop_size)):
            if size is not None and (size % self.model.unshuffle or (size // self.model.unshuffle) % down):
                raise ValueError(
                    f"{key} {size} must be divisible by unshuffle {self.model.unshuffle} times 2^(levels-1) = {down}"
                )
        if self.train.crop_size is not None and self.train.crop_size > self.train.tile_size:
            raise ValueError(f"crop_size {self.train.crop_size} exceeds tile_size {self.train.tile_size}")
        return self

    def with_overrides(self, **train_overrides: object) -> "CosynthConfig":
        """A copy with some ``train`` fields replaced (None values are ignored)."""
        given = {k: v for k, v in train_overrides.items() if v is not None}
        if not given:
            return self
        try:
            train = TrainConfig(**{**self.train.model_dump(), **given})
        except ValidationError as exc:
            raise CosynthError(f"invalid training option ({_problems(exc)})") from None
        return self.model_copy(update={"train": train})

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "config") -> "CosynthConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise CosynthError(f"{where}: invalid model config ({_problems(exc)})") from None


def _problems(exc: ValidationError, limit: int = 4) -> str:
    """pydantic's errors as one line: 'model.widths.2: Input should be a valid integer; ...'."""
    errors = exc.errors()
    parts = [f"{'.'.join(str(x) for x in e['loc']) or 'config'}: {e['msg']}" for e in errors[:limit]]
    more = f"; and {len(errors) - limit} more" if len(errors) > limit else ""
    return "; ".join(parts) + more


PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"


def load_config(path_or_name: str | Path) -> CosynthConfig:
    """A config from a YAML file, or a preset by name (``tiny``, ``cpu-small``, ``cpu-small-v``, ``paper-256``)."""
    import yaml

    p = Path(path_or_name)
    if not p.is_file() and not p.suffix:
        p = PRESETS_DIR / f"{path_or_name}.yaml"
    if not p.is_file():
        presets = sorted(q.stem for q in PRESETS_DIR.glob("*.yaml"))
        raise CosynthError(f"config not found: {path_or_name} (a YAML file or a preset: {', '.join(presets)})")
    try:
        data = yaml.safe_load(require_file(p, "config").read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise CosynthError(f"config {p} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise CosynthError(f"config {p} is not readable YAML text: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise CosynthError(f"config {p} must be a mapping with sections model/diffusion/train")
    data.setdefault("name", p.stem)
    return CosynthConfig.from_dict(data, where=f"config {p}")
