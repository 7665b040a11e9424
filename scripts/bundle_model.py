"""Copy a trained checkpoint into the package as the bundled default model, weights in float16.

float16 halves the file (the default model must stay <= 20 MB); ``load_model`` casts the weights
back into the float32 parameters, so nothing else changes.

``--sample key=value`` (repeatable) sets the model's own sampling settings (its config's
``sample`` section, the default of every entry point) to what was measured best for it, e.g.
``--sample sampler=ddpm``; the values are validated like a config file's. The bundle records its
data by name, never a machine path: any absolute path in the data summary (from runs trained
before names were recorded) becomes its last two parts (``/home/x/data/consep/train`` ->
``consep/train``).

    .venv/bin/python scripts/bundle_model.py runs/default-cpu-small/model wsi_cosynth/assets/default-model \
        [--sample sampler=ddpm]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file, save_file


def sample_settings(current: dict, overrides: list[str]) -> dict:
    """``current`` with ``key=value`` overrides (values parsed as YAML), validated."""
    import yaml

    from wsi_cosynth.errors import CosynthError
    from wsi_cosynth.models.config import SampleConfig

    given = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--sample wants key=value, got {item!r}")
        given[key] = yaml.safe_load(raw)
    try:
        return SampleConfig.model_validate(current).with_overrides(**given).model_dump(mode="json")
    except (CosynthError, TypeError) as exc:
        raise SystemExit(f"--sample: {exc}") from None


def data_by_name(value: object) -> object:
    """The data summary with every absolute path replaced by its last two parts (a name)."""
    from wsi_cosynth.training.sources import data_name

    if isinstance(value, dict):
        return {k: data_by_name(v) for k, v in value.items()}
    if isinstance(value, list):
        return [data_by_name(v) for v in value]
    if isinstance(value, str) and Path(value).is_absolute():
        return data_name(value)
    return value


def bundle(src: str | Path, dst: str | Path, sample: list[str] | None = None) -> None:
    source, target = Path(src), Path(dst)
    weights = load_file(str(source / "model.safetensors"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    meta = json.loads((source / "model.json").read_text())
    meta["data"] = data_by_name(meta.get("data", {}))
    if sample:
        meta["config"]["sample"] = sample_settings(meta["config"].get("sample", {}), sample)
    target.mkdir(parents=True, exist_ok=True)
    save_file(half, str(target / "model.safetensors"), metadata={"format": meta["format"]})
    (target / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = (target / "model.safetensors").stat().st_size / 2**20
    print(f"{target}: {size:.1f} MiB, {meta['steps']} steps, sampling {meta['config'].get('sample')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="checkpoint directory (model.json + model.safetensors)")
    parser.add_argument("target", help="bundle directory, e.g. wsi_cosynth/assets/default-model")
    parser.add_argument("--sample", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    bundle(args.source, args.target, args.sample)


if __name__ == "__main__":
    main()
