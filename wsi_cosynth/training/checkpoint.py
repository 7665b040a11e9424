"""Model checkpoints: ``model.safetensors`` (weights) + ``model.json`` (everything needed to
rebuild and use the model: config, taxonomy, text encoder id, training mpp and tile size, data
summary, steps). Both are written atomically into one directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import CosynthError
from ..models.config import CosynthConfig
from ..models.cosynth import CosynthModel
from ..taxonomy import Taxonomy

FORMAT = "wsi-cosynth-model"
VERSION = 1
WEIGHTS = "model.safetensors"
META = "model.json"


def save_checkpoint(
    directory: str | Path,
    model: CosynthModel,
    *,
    steps: int,
    data: dict | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write ``directory`` with the model's weights (or ``state_dict``, e.g. the EMA) and metadata.

    ``extra_files`` (name -> bytes) are written into the same directory, inside the same atomic
    rename (the trainer's optimiser state goes there).
    """
    from safetensors.torch import save_file

    weights = state_dict if state_dict is not None else model.state_dict()
    weights = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
               for k, v in weights.items()}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "taxonomy": model.taxonomy.to_dict(),
        "text_encoder": model.text_encoder_id,
        "mpp": model.mpp,
        "tile_size": model.tile_size,
        "steps": int(steps),
        "data": data or {},
    }
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / META).write_text(json.dumps(meta, indent=2))
        for name, blob in (extra_files or {}).items():
            (tmp / name).write_bytes(blob)
    return Path(directory)


def _resolve(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS
    elif p.name == META:
        p = p.with_name(WEIGHTS)
    meta = p.with_name(META)
    for f in (p, meta):
        if not f.is_file():
            raise CosynthError(f"model checkpoint file not found: {f} (a checkpoint is a directory with {WEIGHTS} and {META})")
    return p, meta


def read_metadata(path: str | Path) -> dict:
    """The parsed ``model.json`` of a checkpoint (directory, weights file or json file)."""
    _, meta_path = _resolve(path)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CosynthError(f"model metadata {meta_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CosynthError(f"{meta_path} is not a wsi-cosynth model file (expected \"format\": \"{FORMAT}\")")
    for key in ("config", "taxonomy", "text_encoder", "tile_size"):
        if key not in meta:
            raise CosynthError(f"model metadata {meta_path} lacks {key!r}")
    tile, mpp = meta["tile_size"], meta.get("mpp")
    if not (isinstance(tile, int) and not isinstance(tile, bool) and 8 <= tile <= 8192):
        raise CosynthError(f"model metadata {meta_path}: tile_size must be an integer in 8..8192, got {tile!r:.40}")
    if mpp is not None and not (isinstance(mpp, (int, float)) and not isinstance(mpp, bool) and 0 < mpp < 1e3):
        raise CosynthError(f"model metadata {meta_path}: mpp must be a positive number of microns, got {mpp!r:.40}")
    if not isinstance(meta["text_encoder"], str):
        raise CosynthError(f"model metadata {meta_path}: text_encoder must be a string")
    return meta


def trained_tissues(meta: dict) -> set[str] | None:
    """The tissue words of a checkpoint's training prompts, from its data summary: ``tissues``
    (recorded since multi-source training), else the single ``tissue`` of older checkpoints;
    None when neither is recorded."""
    from ..models.text import prompt_tissue

    data = meta.get("data")
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("tissues"), list):
        return {prompt_tissue(str(t)) for t in data["tissues"]}
    if isinstance(data.get("tissue"), str):
        return {prompt_tissue(data["tissue"])}
    return None


def _check_weights_fit(config: CosynthConfig, taxonomy: Taxonomy, meta: dict, meta_path: Path,
                       weights_path: Path, text_encoder) -> None:
    """Build the recorded network on torch's meta device (no memory) and compare its tensor
    shapes with the weights file's header, before anything is allocated: a damaged config that
    asks for a gigantic network is refused here instead of exhausting memory. A pretrained text
    encoder is built beforehand, on the CPU: its loader cannot run on the meta device."""
    from safetensors import SafetensorError, safe_open

    m = config.model
    if m.num_res_blocks > 64 or m.rrdb_blocks > 64 or len(m.channel_mults) > 16:
        raise CosynthError(f"model metadata {meta_path}: implausible network depth in its config")
    try:
        with torch.device("meta"):
            skeleton = CosynthModel(config, taxonomy, mpp=meta.get("mpp"), tile_size=int(meta["tile_size"]),
                                    text_encoder=None if isinstance(text_encoder, torch.nn.Module) else text_encoder)
    except (RuntimeError, ValueError) as exc:
        raise CosynthError(f"model metadata {meta_path}: its config does not build a network ({exc})") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    try:
        with safe_open(str(weights_path), framework="pt") as fh:
            found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CosynthError(f"model weights {weights_path} are unreadable or corrupt: {exc}") from None
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CosynthError(
            f"model weights {weights_path} do not fit the model in {meta_path} (text encoder "
            f"{meta['text_encoder']!r}): missing {missing[:3]}, unexpected {unexpected[:3]}")
    for k, shape in expected.items():
        if found[k] != shape:
            raise CosynthError(
                f"model weights {weights_path}: {k} has shape {found[k]} but a model with {taxonomy.n_classes} "
                f"classes and this config needs {shape} (class count or config mismatch)")


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    expect_taxonomy: Taxonomy | None = None,
    expect_text_encoder: str | None = None,
) -> CosynthModel:
    """Rebuild a :class:`CosynthModel` from a checkpoint, in eval mode on ``device``.

    Raises CosynthError naming the file when a file is missing or corrupt, when the weights do not
    fit the recorded config (e.g. another class count or text encoder), or when the model's
    taxonomy or text encoder differs from ``expect_taxonomy`` / ``expect_text_encoder``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, meta_path = _resolve(path)
    meta = read_metadata(meta_path)
    config = CosynthConfig.from_dict(meta["config"], where=str(meta_path))
    taxonomy = Taxonomy.from_dict(meta["taxonomy"], where=f"model metadata {meta_path}")
    if expect_taxonomy is not None and tuple(expect_taxonomy.names) != tuple(taxonomy.names):
        raise CosynthError(
            f"model {meta_path}: trained on classes {list(taxonomy.names)} ({taxonomy.n_classes}), "
            f"but {list(expect_taxonomy.names)} ({expect_taxonomy.n_classes}) were requested"
        )
    if expect_text_encoder is not None and expect_text_encoder != meta["text_encoder"]:
        raise CosynthError(
            f"model {meta_path}: uses text encoder {meta['text_encoder']!r}, but {expect_text_encoder!r} was requested"
        )
    from ..models.text import build_text_encoder, prompt_class_names

    # A trainable (learned) encoder is rebuilt with the network; a frozen pretrained one is shared.
    encoder = build_text_encoder(config.model.text,
                                 prompt_class_names(list(taxonomy.names), unknown_class=config.model.unknown_class))
    _check_weights_fit(config, taxonomy, meta, meta_path, weights_path, encoder)
    model = CosynthModel(config, taxonomy, mpp=meta.get("mpp"), tile_size=int(meta["tile_size"]),
                         text_encoder=None if isinstance(encoder, torch.nn.Module) else encoder)
    if model.text_encoder_id != meta["text_encoder"]:
        raise CosynthError(
            f"model {meta_path}: records text encoder {meta['text_encoder']!r} but its config builds "
            f"{model.text_encoder_id!r}"
        )
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CosynthError(f"model weights {weights_path} are unreadable or corrupt: {exc}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CosynthError(
            f"model weights {weights_path} do not fit the model in {meta_path} (text encoder "
            f"{meta['text_encoder']!r}): missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CosynthError(
                f"model weights {weights_path}: {k} has shape {tuple(state[k].shape)} but a model with "
                f"{taxonomy.n_classes} classes and this config needs {tuple(v.shape)} (class count or config mismatch)"
            )
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise CosynthError(f"model weights {weights_path}: {bad} holds NaN or infinite values (a damaged checkpoint)")
    model.load_state_dict(state)
    model.meta = meta  # type: ignore[attr-defined]
    model.trained_tissues = trained_tissues(meta)
    return model.to(device).eval()
