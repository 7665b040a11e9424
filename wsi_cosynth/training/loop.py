"""The training loop: AdamW, EMA, gradient clipping, bf16 autocast on CUDA, periodic atomic
checkpoints, resume from the latest one, a progress bar and a JSONL loss log.

Run directory layout::

    OUT/model/                                 EMA model of the latest checkpoint (bundle this)
    OUT/checkpoints/step-000200/               EMA model + trainer.pt (raw weights, optimiser, RNG)
    OUT/loss.jsonl                             one record per ``log_every`` steps
    OUT/validation.jsonl                       held-out loss of the EMA model at every checkpoint
                                               (when a validation set is given)
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from ..atomic import write_text_atomic
from ..errors import CosynthError
from ..models.config import CosynthConfig, DiffusionConfig, ModelConfig
from ..models.cosynth import CosynthModel
from ..models.full_res import FullResolutionPath
from ..taxonomy import Taxonomy
from .checkpoint import read_metadata, save_checkpoint
from .dataset import TileDataset
from .sources import data_name
from .validation import validation_losses

TRAINER_STATE = "trainer.pt"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete ``checkpoints/step-*`` directory (with trainer state), or None."""
    root = out_dir / "checkpoints"
    found = sorted(p for p in root.glob("step-*") if (p / TRAINER_STATE).is_file()) if root.is_dir() else []
    return found[-1] if found else None


class EMA:
    """Exponential moving average of all floating-point weights; decay warms up as
    min(decay, (1 + n) / (10 + n)) so early averages are not dominated by the random init."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v.detach().float(), 1 - d)
            else:
                self.shadow[k].copy_(v)


def _trim_log(path: Path, step: int) -> None:
    """Drop JSONL records past ``step`` (written after the checkpoint a run resumes from, or by a
    run that died before its first checkpoint), so a resumed log has each step once."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))


def _initial_weights(path: str | Path, model: CosynthModel) -> dict[str, torch.Tensor]:
    """The weights of checkpoint ``path``, checked to fit ``model`` parameter by parameter."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .checkpoint import WEIGHTS

    weights = Path(path) / WEIGHTS if Path(path).is_dir() else Path(path)
    if not weights.is_file():
        raise CosynthError(f"--init-from: no model weights at {weights}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CosynthError(f"--init-from: {weights} is not a readable weights file ({exc})") from None
    from .unknown_init import add_unknown_class, lacks_unknown_class

    if lacks_unknown_class(state, model):  # e.g. the bundled model, for a multi-organ model with unclassified sources
        state = add_unknown_class(state, model)
    expected = model.state_dict()
    if model.autoencoder is not None and not _holds_autoencoder(state):
        return state  # a pixel-space model for a latent one: checked and mapped by _latent_from_pixel
    # A full-resolution path the checkpoint lacks keeps its fresh weights: it joins the network
    # through zero-initialised convs, so the warm-started model starts as the checkpoint's.
    paths = tuple(f"{name}." for name, m in model.named_modules() if isinstance(m, FullResolutionPath))
    added = {k for k in expected if k.startswith(paths) and k not in state} if paths else set()
    wrong = sorted(k for k in expected
                   if k not in added and (k not in state or tuple(state[k].shape) != tuple(expected[k].shape)))
    extra = sorted(set(state) - set(expected))
    if wrong or extra:
        raise CosynthError(f"--init-from: {weights} does not fit this model config "
                           f"(missing or reshaped {wrong[:3]}, unexpected {extra[:3]})")
    return {k: (expected[k] if k in added else state[k].to(expected[k].dtype)) for k in expected}


AUTOENCODER = "autoencoder."  # key prefix of a latent model's autoencoder weights


def _holds_autoencoder(state: dict | None) -> bool:
    return state is not None and any(k.startswith(AUTOENCODER) for k in state)


def _prepare_autoencoder(model: CosynthModel, dataset: TileDataset, out: Path, config: CosynthConfig,
                         autoencoder_from: str | Path | None, init_state: dict | None) -> None:
    """Give a latent model its trained, frozen autoencoder: from ``autoencoder_from`` (a stage-one
    directory or a latent model checkpoint), from the ``init_from`` checkpoint's weights if they
    hold one, or by training stage one now into ``out/autoencoder`` (resumable)."""
    from .autoencoder import STATE, train_autoencoder

    ae = model.autoencoder
    assert ae is not None
    if autoencoder_from is not None:
        src = Path(autoencoder_from)
        if (src / STATE).is_file():
            weights = torch.load(src / STATE, map_location="cpu", weights_only=False)["weights"]
        else:
            state = _initial_weights(src, model) if src.exists() else None
            if not _holds_autoencoder(state):
                raise CosynthError(f"--autoencoder-from: {src} holds no autoencoder ({STATE} or a latent model)")
            weights = {k[len(AUTOENCODER):]: v for k, v in state.items() if k.startswith(AUTOENCODER)}
        try:
            ae.load_state_dict(weights)
        except RuntimeError as exc:
            raise CosynthError(f"--autoencoder-from: {src} does not fit model.image_latent ({str(exc)[:200]})") from None
        return
    if _holds_autoencoder(init_state):
        return  # loaded with the rest of the initial weights
    tc = config.train
    ae.requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tc.seed + 3)
        train_autoencoder(ae, dataset, out / "autoencoder", steps=tc.autoencoder_steps, batch_size=2 * tc.batch_size,
                          lr=tc.autoencoder_lr, seed=tc.seed)
    ae.requires_grad_(False)


def _latent_from_pixel(pixel: dict[str, torch.Tensor], model: CosynthModel, dataset: TileDataset) -> dict[str, torch.Tensor]:
    """The latent model's initial weights from a pixel-space model's (training/latent_init.py)."""
    from .latent_init import adapt_pixel_state, linear_maps

    ae = model.autoencoder
    assert ae is not None
    expected = model.state_dict()
    pixels = 3 * ae.factor ** 2
    want = {k for k in expected if not k.startswith(AUTOENCODER)}
    if set(pixel) != want:
        raise CosynthError(f"--init-from: the checkpoint is not a pixel-space model of this config's sizes "
                           f"(missing {sorted(want - set(pixel))[:3]}, unexpected {sorted(set(pixel) - want)[:3]})")
    try:
        return adapt_pixel_state(pixel, expected, linear_maps(ae, dataset), pixel_channels=pixels)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CosynthError(f"--init-from: the checkpoint does not map onto this latent model ({exc})") from None


def _check_resume(meta: dict, config: CosynthConfig, taxonomy: Taxonomy, mpp: float | None, ckpt: Path) -> None:
    # Compared as validated configs, so a checkpoint written before an option existed (its
    # config lacks the key, which then takes its default) still resumes.
    try:
        saved_model = ModelConfig.model_validate(meta["config"]["model"]).model_dump(mode="json")
        saved_diffusion = DiffusionConfig.model_validate(meta["config"]["diffusion"]).model_dump(mode="json")
    except (ValidationError, KeyError, TypeError) as exc:
        raise CosynthError(f"cannot resume from {ckpt}: its model/diffusion config does not validate ({exc})") from None
    if saved_model != config.model.model_dump(mode="json") or saved_diffusion != config.diffusion.model_dump(mode="json"):
        raise CosynthError(f"cannot resume from {ckpt}: its model/diffusion config differs from config {config.name!r}")
    if list(meta["taxonomy"]["names"]) != list(taxonomy.names):
        raise CosynthError(f"cannot resume from {ckpt}: trained on classes {meta['taxonomy']['names']}, data has {list(taxonomy.names)}")
    if int(meta["tile_size"]) != config.train.tile_size:
        raise CosynthError(f"cannot resume from {ckpt}: trained on {meta['tile_size']} px tiles, config asks for {config.train.tile_size}")
    if meta.get("mpp") is not None and mpp is not None and abs(float(meta["mpp"]) - float(mpp)) > 1e-6:
        raise CosynthError(f"cannot resume from {ckpt}: trained at {meta['mpp']} um/px, this data is at {mpp} um/px (--mpp)")


def train(
    config: CosynthConfig,
    dataset: TileDataset,
    out_dir: str | Path,
    *,
    mpp: float | None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    data_summary: dict | None = None,
    progress: bool = True,
    validation: TileDataset | None = None,
    wall_seconds: float | None = None,
    checkpoint_seconds: float | None = None,
    cpu_seconds: float | None = None,
    init_from: str | Path | None = None,
    autoencoder_from: str | Path | None = None,
) -> CosynthModel:
    """Train for ``config.train.steps`` steps in total (counting resumed ones); returns the model
    with its EMA weights loaded. With a ``validation`` set (held-out tiles), every checkpoint also
    scores the EMA model on it (:func:`validation_losses`), logs that to ``validation.jsonl`` and
    records it in the checkpoint's data summary.

    ``wall_seconds``: stop earlier, once this much wall time has passed since the first step of
    this call (checked after every step), with a log record and a checkpoint at the step reached.
    ``checkpoint_seconds``: also checkpoint whenever this much wall time has passed since the last
    checkpoint (or the first step). ``cpu_seconds``: stop likewise once this process has used
    this much CPU time (all threads) in this call: equal budgets for runs on a shared machine.
    ``init_from``: a checkpoint whose weights (its EMA) start a new run (fine-tuning; the model
    config must build the same parameters, or be a pixel-space model of the same sizes when the
    config is a latent one (training/latent_init.py); ignored when resuming).
    ``autoencoder_from``: for a latent config, its trained autoencoder (see
    :func:`_prepare_autoencoder`; without it one is trained first). The dataset may return its batch tensors on ``device``
    already (:class:`~wsi_cosynth.training.device_data.DeviceTileDataset`)."""
    from tqdm import tqdm

    tc = config.train
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CosynthError(f"device {str(device)!r} requested but torch sees no CUDA GPU here (use --device cpu)")
    out = Path(out_dir)
    if tc.num_threads and device.type == "cpu":
        torch.set_num_threads(tc.num_threads)
    ckpt = latest_checkpoint(out) if resume else None
    if not resume and latest_checkpoint(out) is not None:
        raise CosynthError(f"{out} already holds checkpoints; pass --resume to continue or choose a new --out")
    # Initial weights from the config seed, without touching the global RNG stream of the caller.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tc.seed)
        model = CosynthModel(config, dataset.taxonomy, mpp=mpp, tile_size=tc.tile_size).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
    ema = EMA(model, tc.ema_decay)
    rng = np.random.default_rng(tc.seed)
    gen = torch.Generator(device=device).manual_seed(tc.seed + 1)
    step = 0
    state: dict = {}
    if ckpt is not None:
        _check_resume(read_metadata(ckpt), config, dataset.taxonomy, mpp, ckpt)
        # Loaded on the CPU: generator states must be CPU byte tensors; weights move on loading.
        state = torch.load(ckpt / TRAINER_STATE, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ema.shadow = {k: v.to(device) for k, v in state["ema"].items()}
        rng.bit_generator.state = state["numpy_rng"]
        gen.set_state(state["torch_rng"])
        step = int(state["step"])
    elif init_from is not None or model.autoencoder is not None:
        init = _initial_weights(init_from, model) if init_from is not None else None
        if model.autoencoder is not None:
            _prepare_autoencoder(model, dataset, out, config, autoencoder_from, init)
            if init is not None and not _holds_autoencoder(init):
                init = _latent_from_pixel(init, model, dataset)
            elif init is not None and autoencoder_from is not None:  # the given autoencoder wins
                init = {**init, **{f"{AUTOENCODER}{k}": v for k, v in model.autoencoder.state_dict().items()}}
        if init is not None:
            model.load_state_dict(init)
        ema.shadow = {k: v.detach().clone().float().to(device) for k, v in model.state_dict().items()}
    summary = {**(data_summary or {}), **dataset.summary(),
               **({"initialised_from": data_name(init_from)} if init_from is not None and ckpt is None else {})}
    out.mkdir(parents=True, exist_ok=True)
    _trim_log(out / "loss.jsonl", step)
    _trim_log(out / "validation.jsonl", step)
    log = (out / "loss.jsonl").open("a")

    def validate() -> dict[str, float]:
        ema_model = copy.deepcopy(model)
        ema_model.load_state_dict({k: v.to(ema_model.state_dict()[k].dtype) for k, v in ema.shadow.items()})
        scores = validation_losses(ema_model, validation, n_examples=tc.validation_examples,  # type: ignore[arg-type]
                                   batch_size=tc.batch_size, seed=tc.seed)
        with (out / "validation.jsonl").open("a") as fh:
            fh.write(json.dumps({"step": step, **scores, "time": time.time()}) + "\n")
        return scores

    def checkpoint() -> None:
        if validation is not None:
            summary["validation"] = {"step": step, "n_examples": tc.validation_examples, **validate()}
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "ema": ema.shadow, "step": step,
                    "numpy_rng": rng.bit_generator.state, "torch_rng": gen.get_state(),
                    "global_rng": torch.get_rng_state(),
                    **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})}, buf)
        target = out / "checkpoints" / f"step-{step:07d}"
        save_checkpoint(target, model, steps=step, data=summary, state_dict=ema.shadow, extra_files={TRAINER_STATE: buf.getvalue()})
        save_checkpoint(out / "model", model, steps=step, data=summary, state_dict=ema.shadow)
        for old in sorted((out / "checkpoints").glob("step-*"))[:-tc.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    # Dropout draws from torch's global RNG: seed it from the config (restored on resume) so the
    # seed and a resumed run determine the masks too, inside a fork that leaves the caller's RNG as it was.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(tc.seed + 2)
        if "global_rng" in state:
            torch.set_rng_state(state["global_rng"])
        if "cuda_rng" in state and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
        model.train()
        bar = tqdm(total=tc.steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True)
        t_last, running = time.perf_counter(), []
        t_begin = t_checkpoint = t_last
        cpu_begin = time.process_time()
        while step < tc.steps:
            batch = dataset.batch(tc.batch_size, rng)
            x0 = type(batch.x0)(batch.x0.image.to(device), batch.x0.distance.to(device), batch.x0.label.to(device))
            lr = tc.lr * min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps else tc.lr
            for group in opt.param_groups:
                group["lr"] = lr
            with autocast:
                losses = model.training_losses(x0, batch.points.to(device), batch.prompts, batch.keep_text, gen)
            if not torch.isfinite(losses["total"]):
                raise CosynthError(f"training diverged at step {step}: loss {losses['total'].item()} (lower train.lr?)")
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            opt.step()
            step += 1
            ema.update(model, step)
            running.append({k: float(v.detach()) for k, v in losses.items()})
            bar.update(1)
            bar.set_postfix(loss=f"{running[-1]['total']:.4f}")
            now = time.perf_counter()
            out_of_time = (wall_seconds is not None and now - t_begin >= wall_seconds) or (
                cpu_seconds is not None and time.process_time() - cpu_begin >= cpu_seconds)
            if step % tc.log_every == 0 or step == tc.steps or out_of_time:
                now = time.perf_counter()
                rec = {"step": step, **{k: float(np.mean([r[k] for r in running])) for k in running[0]},
                       "grad_norm": float(grad_norm), "lr": lr, "s_per_step": (now - t_last) / len(running), "time": time.time()}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                t_last, running = now, []
            due = checkpoint_seconds is not None and now - t_checkpoint >= checkpoint_seconds
            if step % tc.checkpoint_every == 0 or step == tc.steps or out_of_time or due:
                checkpoint()
                t_checkpoint = time.perf_counter()
            if out_of_time:
                break
    bar.close()
    log.close()
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in ema.shadow.items()})
    return model.eval()
