"""Copy a trained checkpoint into the package as the bundled default model, weights in float16.

float16 halves the file (the default model must stay <= 20 MB); ``load_model`` casts the weights
back into the float32 parameters, so nothing else changes.

    .venv/bin/python scripts/bundle_model.py runs/default-cpu-small/model wsi_cosynth/assets/default-model
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file


def main(src: str, dst: str) -> None:
    source, target = Path(src), Path(dst)
    weights = load_file(str(source / "model.safetensors"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    meta = json.loads((source / "model.json").read_text())
    target.mkdir(parents=True, exist_ok=True)
    save_file(half, str(target / "model.safetensors"), metadata={"format": meta["format"]})
    shutil.copyfile(source / "model.json", target / "model.json")
    size = (target / "model.safetensors").stat().st_size / 2**20
    print(f"{target}: {size:.1f} MiB, {meta['steps']} steps")


if __name__ == "__main__":
    main(*sys.argv[1:3])
