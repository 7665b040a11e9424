"""Does a synthesised tile depend on torch's thread count, and what would the other cures cost?

Samples the same batch (``--tiles`` resampled CoNSeP layouts, ``--steps`` steps, the model's
other settings; the bundled model unless ``--model``) with 1, 2, 4 and 8 torch intra-op threads:
1. as torch runs by default (oneDNN convolutions): pixels that differ from the 1-thread images;
2. through ``synthesize_batch``, which pins the thread count per task (the cure in use);
3. with oneDNN switched off (torch's own convolutions), with the CPU seconds of one batch at 1
   thread against oneDNN's, the price of that other cure.
Also names the first module whose output differs between 1 and 2 threads (forward hooks).

    .venv/bin/python benchmarks/thread_determinism.py [--model DIR] [--tiles 2] [--steps 4]

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

import numpy as np


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--tiles", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    import torch

    from wsi_cosynth.api import load_model
    from wsi_cosynth.layouts.point_process import load_layout_model, sample_layout
    from wsi_cosynth.pipeline.jobs import make_batches, plan_jobs
    from wsi_cosynth.pipeline.layouts_for_slide import default_layout_model_path
    from wsi_cosynth.pipeline.synthetic import default_model_path
    from wsi_cosynth.pipeline.worker import SamplingSpec, sample_tiles, synthesize_batch
    from wsi_cosynth.records import Layout, Provenance

    path = Path(args.model) if args.model else default_model_path()
    model = load_model(path, device="cpu")
    size, tax = model.tile_size, model.taxonomy
    layout_model = load_layout_model(default_layout_model_path())
    rng = np.random.default_rng(0)
    layouts = []
    for i in range(args.tiles):
        drawn = sample_layout(layout_model, (size, size), rng, name=f"t{i}")
        layouts.append(Layout(xy_tile=drawn.xy_tile, classes=np.clip(drawn.classes, 1, tax.n_classes), size=(size, size),
                              taxonomy=tax, provenance=Provenance(name=f"t{i}", tissue="colon")))
    batch = make_batches(plan_jobs(layouts, 1), args.tiles, seed=0)[0]
    spec = SamplingSpec(model_path=str(path), steps=args.steps, device="cpu")

    def images(fn, threads: int, onednn: bool = True) -> tuple[np.ndarray, float]:
        torch.set_num_threads(threads)
        start = cpu_seconds()
        with torch.backends.mkldnn.flags(enabled=onednn):
            out = np.stack([t.image for t in fn()])
        return out, cpu_seconds() - start

    rows, results = [], {"steps": args.steps, "tiles": args.tiles, "threads": [1, 2, 4, 8]}
    for label, fn, onednn in (("default (oneDNN)", lambda: sample_tiles(model, batch, spec, "cpu"), True),
                              ("pinned per task", lambda: synthesize_batch(spec, batch), True),
                              ("oneDNN off", lambda: sample_tiles(model, batch, spec, "cpu"), False)):
        ref, cpu1 = images(fn, 1, onednn)
        diffs = []
        for threads in (2, 4, 8):
            other, _ = images(fn, threads, onednn)
            diffs.append(int((other != ref).any(axis=-1).sum()))
        rows.append((label, diffs, cpu1))
        results[label] = {"pixels_differing_vs_1_thread": diffs, "cpu_s_1_thread": round(cpu1, 2)}
        print(f"{label:18s} pixels differing from 1 thread at 2/4/8 threads: {diffs}; CPU s at 1 thread {cpu1:.2f}",
              flush=True)
    results["onednn_off_cpu_ratio"] = round(rows[2][2] / rows[0][2], 2)

    # The first module whose output differs between 1 and 2 threads.
    seen: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.append((name, out.detach().clone()))
                                     if isinstance(out, torch.Tensor) and out.is_floating_point() else None)
             for name, m in model.named_modules() if name]
    runs = []
    for threads in (1, 2):
        seen.clear()
        torch.set_num_threads(threads)
        model.sample(layouts, steps=2, generator=torch.Generator().manual_seed(5), device="cpu")
        runs.append(list(seen))
    for h in hooks:
        h.remove()
    modules = dict(model.named_modules())
    first = next(((n, type(modules[n]).__name__, str(getattr(modules[n], "kernel_size", "")), float((a - b).abs().max()))
                  for (n, a), (_, b) in zip(*runs) if a.shape == b.shape and not torch.equal(a, b)), None)
    results["first_differing_module"] = first
    print(f"first module whose output differs (1 vs 2 threads): {first}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
