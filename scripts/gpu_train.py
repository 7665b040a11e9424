"""Train the default model's architecture on a GPU for a fixed wall time, then time synthesis
there, in one time-boxed call (``scripts/gpu_train.sh`` installs the carried wheels first).

    scripts/gpu_train.sh                       # on the GPU machine: everything, outputs in $OUT
    scripts/gpu_train.sh --dry-run --out DIR   # here: the same stages, tiny config, CPU, ~1 min

Stages, each in its own process under a hard time limit, so that one that fails or hangs keeps
what the earlier ones wrote:

1. ``train``: the tiles of ``gpu-pack/train-pack.npz`` (``scripts/pack_training_data.py``) minus
   its held-out source images, with the project's training loop (bf16 autocast on CUDA, batches
   built on the device), for ``--wall-seconds``; a checkpoint every ``--checkpoint-seconds``
   and at the end. The latest checkpoint's EMA weights are bundled in float16
   (``scripts/bundle_model.py``) into ``OUT/model`` even when the stage is cut short.
2. ``bench``: synthesis time at ``--bench-steps`` guided DDIM steps per model (the bundled
   default model, ``paper-256`` with random weights, and the trained model when its
   architecture differs from the default's) and batch size, CUDA synchronised: network
   tiles/s and end to end (with the point-guided watershed).
3. ``export``: ``wsi-cosynth export --device cuda`` of the demo slide with the trained model,
   timed, its preview copied back.

OUT (flat, at most 7 files): ``report.json`` (environment, per-stage status, seconds and
results, rewritten after every stage), ``log.txt``, ``model/model.safetensors`` +
``model/model.json``, ``loss.jsonl``, ``validation.jsonl``, ``export-preview.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
DEFAULT_MODEL = REPO / "wsi_cosynth" / "assets" / "default-model"
MAX_FILE = 16 * 2**20  # the largest file that comes back from the device machine
T0 = time.monotonic()
# The driver's start (epoch seconds), shared with the stage processes for the log's time stamps.
START = float(os.environ.setdefault("WSI_COSYNTH_GPU_START", str(time.time())))
LOG = []  # the driver's log.txt, once open

REAL = dict(config=str(DEFAULT_MODEL / "model.json"), device="auto", wall_seconds=420.0, checkpoint_seconds=60.0,
            budget_seconds=575.0, bench_models="default,paper-256", bench_batches="1,16,64", bench_steps=25,
            bench_seconds=75.0, export_seconds=50.0, export_steps=25, export_batch_size=16, export_max_tiles=None)
DRY = dict(config="tiny", device="cpu", wall_seconds=15.0, checkpoint_seconds=8.0, budget_seconds=180.0,
           bench_models="default", bench_batches="1,2", bench_steps=2, bench_seconds=40.0, export_seconds=40.0,
           export_steps=2, export_batch_size=2, export_max_tiles=2, batch_size=8, threads=1)


def say(msg: str) -> None:
    line = f"[gpu_train {time.time() - START:6.1f} s] {msg}"
    print(line, flush=True)
    for log in LOG:
        log.write(line + "\n")
        log.flush()


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def resolve_config(spec: str):
    """A CosynthConfig from a model.json (its ``config``), a YAML file or a preset name."""
    from wsi_cosynth.models.config import CosynthConfig, load_config

    p = Path(spec)
    if p.is_dir() and (p / "model.json").is_file():
        p = p / "model.json"
    if p.suffix == ".json" and p.is_file():
        data = json.loads(p.read_text())
        return CosynthConfig.from_dict(data.get("config", data), where=str(p))
    return load_config(spec)


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def environment() -> dict:
    import platform

    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
            info["cuda"] = torch.version.cuda
    except Exception as exc:  # noqa: BLE001 - the report says what is missing
        info["torch_error"] = repr(exc)
    for name in ("numpy", "pydantic", "shapely", "openslide", "pycocotools", "safetensors", "skimage"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "yes")
        except Exception as exc:  # noqa: BLE001
            info[name] = f"missing: {exc}"
    return info


# ---------------------------------------------------------------- stages (each in a child process)

def stage_train(a: dict, work: Path, result: Path) -> None:
    import numpy as np
    import torch

    from pack_training_data import read_pack
    from wsi_cosynth.training.dataset import TileDataset, source_image_of
    from wsi_cosynth.training.device_data import DeviceTileDataset
    from wsi_cosynth.training.loop import train
    from wsi_cosynth.training.validation import validation_set

    device = pick_device(a["device"])
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tiles, meta = read_pack(a["pack"])
    holdout = set(meta.get("holdout_images", []))
    train_tiles = [t for t in tiles if source_image_of(t.provenance.name) not in holdout]
    held = [t for t in tiles if source_image_of(t.provenance.name) in holdout]
    base = resolve_config(a["config"])
    batch = a["batch_size"] or (128 if device.startswith("cuda") else base.train.batch_size)
    config = base.with_overrides(steps=a["max_steps"] or 10**7, batch_size=batch, lr=a["lr"],
                                 checkpoint_every=10**7, keep_checkpoints=1, num_threads=a["threads"])
    info = {"status": "started", "device": device, "config": config.name, "batch_size": batch, "lr": config.train.lr,
            "train_tiles": len(train_tiles), "held_out_tiles": len(held), "pixel_mismatches": meta["pixel_mismatches"],
            "wall_seconds": a["wall_seconds"]}
    write_json(result, info)
    say(f"train: {config.name} on {device}, batch {batch}, lr {config.train.lr:g}, {len(train_tiles)} tiles "
        f"({len(held)} held out), wall {a['wall_seconds']:.0f} s")
    t = time.perf_counter()
    crop = config.train.crop_size or config.train.tile_size  # the network samples whole tiles either way
    dataset = TileDataset(train_tiles, taxonomy=train_tiles[0].taxonomy, tile_size=crop,
                          tissue=meta.get("tissue"), text_drop_prob=config.train.text_drop_prob)
    validation = validation_set(held, taxonomy=dataset.taxonomy, tile_size=config.train.tile_size,
                                tissue=meta.get("tissue")) if held else None
    if a["device_data"]:
        dataset = DeviceTileDataset(dataset, device)
    info["prepare_seconds"] = round(time.perf_counter() - t, 1)
    summary = {"path": meta.get("data"), "format": meta.get("reader_format"), "holdout_images": sorted(holdout),
               "mpp": meta.get("mpp"), "tissue": meta.get("tissue"),
               "trained_with": {"script": "scripts/gpu_train.py", "device": torch.cuda.get_device_name(0)
                                if device.startswith("cuda") else device, "batch_size": batch, "lr": config.train.lr,
                                "wall_seconds": a["wall_seconds"], "bf16_autocast": device.startswith("cuda")}}
    run = work / "run"
    extra = {}
    if a["init_from"]:  # fine-tune from a checkpoint's weights instead of the config seed's
        extra["init_from"] = str(DEFAULT_MODEL) if a["init_from"] == "default" else a["init_from"]
        summary["trained_with"]["init_from"] = extra["init_from"]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    train(config, dataset, run, mpp=meta.get("mpp"), device=device, data_summary=summary, progress=False,
          validation=validation, wall_seconds=a["wall_seconds"], checkpoint_seconds=a["checkpoint_seconds"], **extra)
    info["train_seconds"] = round(time.perf_counter() - t, 1)
    records = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines() if line.strip()]
    steps = records[-1]["step"] if records else 0
    # Throughput from the log, leaving out the first records (CUDA/cuDNN warm-up).
    tail = records[len(records) // 5:] if len(records) >= 5 else records
    if len(tail) >= 2:
        dt = tail[-1]["time"] - tail[0]["time"]
        rate = (tail[-1]["step"] - tail[0]["step"]) / dt if dt > 0 else None
    else:
        rate = steps / info["train_seconds"] if info["train_seconds"] else None
    # The median interval between log records leaves out the checkpoints' time (and validation's).
    median = float(np.median([r["s_per_step"] for r in tail])) if tail else None
    info.update(status="ok", steps=steps, steps_per_s=rate and round(rate, 3),
                samples_per_s=rate and round(rate * batch, 1),
                steps_per_s_between_checkpoints=median and round(1 / median, 3),
                last_loss=records[-1] if records else None)
    if (run / "validation.jsonl").is_file():
        lines = (run / "validation.jsonl").read_text().splitlines()
        info["last_validation"] = json.loads(lines[-1]) if lines else None
    if device.startswith("cuda"):
        info["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    write_json(result, info)
    say(f"train: {steps} steps in {info['train_seconds']} s ({info['steps_per_s']} steps/s, "
        f"{info['samples_per_s']} samples/s)")


def _bench_layouts(tiles, size: int, n: int):
    """``n`` layouts of ``size`` px: the packed tiles' nuclei, cropped at the top left."""
    from wsi_cosynth.layouts import layout_from_tile
    from wsi_cosynth.records import Layout

    out = []
    for tile in tiles:
        lay = layout_from_tile(tile)
        if lay.size[0] < size or lay.size[1] < size:
            continue
        keep = (lay.xy_tile[:, 0] < size) & (lay.xy_tile[:, 1] < size)
        out.append(Layout(xy_tile=lay.xy_tile[keep], classes=lay.classes[keep], size=(size, size),
                          taxonomy=lay.taxonomy, provenance=lay.provenance))
        if len(out) >= n:
            break
    if not out:
        raise RuntimeError(f"no packed tile is at least {size} px")
    return [out[i % len(out)] for i in range(n)]


def _bench_model(name: str, device: str, work: Path, taxonomy, mpp):
    import torch

    from wsi_cosynth.models.cosynth import CosynthModel
    from wsi_cosynth.training.checkpoint import load_model

    if name == "default":
        return load_model(DEFAULT_MODEL, device=device), "bundled default model"
    if name == "trained":
        return load_model(work / "run" / "model", device=device), "trained in this call"
    config = resolve_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CosynthModel(config, taxonomy, mpp=mpp, tile_size=config.train.tile_size)
    return model.to(device).eval(), "random weights"


def stage_bench(a: dict, work: Path, result: Path) -> None:
    import torch

    from pack_training_data import read_pack
    from wsi_cosynth.instances import separate_instances

    device = pick_device(a["device"])
    deadline = time.monotonic() + a["stage_seconds"]
    if a["threads"]:
        torch.set_num_threads(a["threads"])
    tiles, meta = read_pack(a["pack"], verify=False)
    tiles = tiles[:64]
    names = [m.strip() for m in a["bench_models"].split(",") if m.strip()]
    if (work / "run" / "model" / "model.json").is_file() and "trained" not in names:
        trained = json.loads((work / "run" / "model" / "model.json").read_text())["config"]
        default = json.loads((DEFAULT_MODEL / "model.json").read_text())["config"]
        if (trained["model"], trained["train"]["tile_size"]) != (default["model"], default["train"]["tile_size"]):
            names.append("trained")  # another architecture than the default's: time it too
    batches = [int(b) for b in a["bench_batches"].split(",")]
    info = {"status": "started", "device": device, "steps": a["bench_steps"], "guidance": a["guidance"],
            "sampler": "ddim", "runs": []}
    write_json(result, info)
    for name in names:
        try:
            model, what = _bench_model(name, device, work, tiles[0].taxonomy, meta.get("mpp"))
        except Exception as exc:  # noqa: BLE001 - the next model may still run
            info["runs"].append({"model": name, "error": repr(exc)})
            write_json(result, info)
            say(f"bench: {name}: {exc!r}")
            continue
        params = sum(p.numel() for p in model.parameters())
        for b in batches:
            if time.monotonic() > deadline:
                info["runs"].append({"model": name, "batch": b, "skipped": "stage time used up"})
                continue
            layouts = _bench_layouts(tiles, model.tile_size, b)
            try:
                gen = torch.Generator().manual_seed(0)
                model.sample(layouts, steps=2, guidance=a["guidance"], generator=gen, device=device)  # warm-up
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                sync(device)
                t = time.perf_counter()
                out = model.sample(layouts, steps=a["bench_steps"], guidance=a["guidance"], sampler="ddim",
                                   generator=torch.Generator().manual_seed(1), device=device)
                sync(device)
                net = time.perf_counter() - t
                t = time.perf_counter()
                for lay, s in zip(layouts, out):
                    separate_instances(s.distance, s.semantic, lay.xy_tile, lay.classes, unmarked="drop")
                sep = time.perf_counter() - t
                run = {"model": name, "config": model.config.name, "weights": what, "params": params,
                       "tile_size": model.tile_size, "batch": b, "network_s": round(net, 4),
                       "network_tiles_per_s": round(b / net, 3), "watershed_s": round(sep, 4),
                       "end_to_end_tiles_per_s": round(b / (net + sep), 3)}
                if device.startswith("cuda"):
                    run["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory at the largest batch
                run = {"model": name, "batch": b, "error": repr(exc)}
            info["runs"].append(run)
            write_json(result, info)
            say(f"bench: {json.dumps(run)}")
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    info["status"] = "ok"
    write_json(result, info)


def stage_export(a: dict, work: Path, result: Path) -> int:
    device = pick_device(a["device"])
    demo = Path(a["demo"]) if a["demo"] else None
    if demo is None or not (demo / "demo.svs").is_file():
        from wsi_cosynth.demo import build_demo_slide

        demo = work / "demo"
        build_demo_slide(demo)
    trained = work / "run" / "model"
    model = trained if (trained / "model.json").is_file() else None
    out = work / "export"
    cmd = [sys.executable, "-m", "wsi_cosynth", "export", "--slide", str(demo / "demo.svs"), "--format", "coco",
           "--out", str(out), "--tissue", "ovarian", "--steps", str(a["export_steps"]), "--device", device,
           "--batch-size", str(a["export_batch_size"]), "--overwrite", "--restart", "--no-progress"]
    if model is not None:
        cmd += ["--model", str(model)]
    if a["threads"]:
        cmd += ["--threads", str(a["threads"])]
    if a["export_max_tiles"]:
        cmd += ["--max-tiles", str(a["export_max_tiles"])]
    info = {"status": "started", "command": " ".join(cmd[1:]), "model": str(model or "bundled default")}
    write_json(result, info)
    t = time.perf_counter()
    proc = subprocess.run(cmd, timeout=max(5.0, a["stage_seconds"] - 5))
    seconds = time.perf_counter() - t
    info.update(returncode=proc.returncode, seconds=round(seconds, 2))
    if proc.returncode == 0 and (out / "annotations.json").is_file():
        n = len(json.loads((out / "annotations.json").read_text())["images"])
        info.update(status="ok", tiles=n, tiles_per_s=round(n / seconds, 3))
        if (out / "preview.png").is_file():
            shutil.copyfile(out / "preview.png", Path(a["out"]) / "export-preview.png")
    else:
        info["status"] = "failed"
    write_json(result, info)
    say(f"export: {info}")
    return 0 if info["status"] == "ok" else 1


STAGES = {"train": stage_train, "bench": stage_bench, "export": stage_export}


# ---------------------------------------------------------------- driver

def bundle(work: Path, out: Path) -> dict:
    """The latest checkpoint's EMA model in float16 -> OUT/model, and the logs -> OUT."""
    src = work / "run" / "model"
    info: dict = {}
    for name in ("loss.jsonl", "validation.jsonl"):
        if (work / "run" / name).is_file():
            shutil.copyfile(work / "run" / name, out / name)
    if not (src / "model.json").is_file():
        return {"bundled": False}
    from bundle_model import bundle

    bundle(src, out / "model")
    weights = out / "model" / "model.safetensors"
    size = weights.stat().st_size
    info.update(bundled=True, steps=json.loads((src / "model.json").read_text())["steps"],
                weights_mib=round(size / 2**20, 2))
    if size > MAX_FILE:  # too big to come back in one file: parts to join with cat
        blob = weights.read_bytes()
        parts = [blob[i:i + MAX_FILE - 2**20] for i in range(0, len(blob), MAX_FILE - 2**20)]
        for i, part in enumerate(parts):
            (out / "model" / f"model.safetensors.part{i}").write_bytes(part)
        weights.unlink()
        info["parts"] = len(parts)
    return info


def _pump(stream, sinks) -> None:
    for line in iter(stream.readline, ""):
        for s in sinks:
            s.write(line)
            s.flush()


def run_stage(name: str, a: dict, work: Path, limit: float, log) -> dict:
    """Run one stage in a child process for at most ``limit`` seconds; its result and status."""
    result = work / f"stage-{name}.json"
    result.unlink(missing_ok=True)
    args_file = work / f"args-{name}.json"
    write_json(args_file, {**a, "stage_seconds": limit})
    cmd = [sys.executable, "-u", __file__, "--stage", name, "--args-file", str(args_file)]
    t = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pump = threading.Thread(target=_pump, args=(proc.stdout, [sys.stdout, log]), daemon=True)
    pump.start()
    try:
        rc = proc.wait(timeout=limit)
        status = "ok" if rc == 0 else "failed"
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
        status = "timeout"
    pump.join(timeout=5)
    out = {"status": status, "returncode": rc, "seconds": round(time.monotonic() - t, 1), "limit_s": round(limit, 1)}
    if result.is_file():
        try:
            out["result"] = json.loads(result.read_text())
        except json.JSONDecodeError:
            pass
    if status == "ok" and out.get("result", {}).get("status") != "ok":
        out["status"] = "failed"  # the stage ended without finishing its work
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true",
                   help="the same stages on the CPU with the tiny config and short times (defaults below change)")
    p.add_argument("--pack", default=str(REPO / "gpu-pack" / "train-pack.npz"), help="tile pack (default %(default)s)")
    p.add_argument("--out", default=None, help="output folder (default $OUT, else gpu-out)")
    p.add_argument("--work", default=None, help="scratch folder (default: a new folder under /tmp)")
    p.add_argument("--stages", default="train,bench,export", help="comma-separated stages (default %(default)s)")
    p.add_argument("--config", default=None, help="model.json, YAML or preset (default: the bundled model's config)")
    p.add_argument("--device", default=None, help="auto, cuda, cpu (default auto)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default 128 on CUDA, else the config's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the config's)")
    p.add_argument("--init-from", default=None,
                   help="start from these weights (a checkpoint directory, or 'default': the bundled model) "
                        "instead of the config seed's; the config must build the same parameters")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (default: wall time only)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for CPU training (default: the config's)")
    p.add_argument("--no-device-data", dest="device_data", action="store_false",
                   help="build batches on the CPU (TileDataset) instead of on the training device")
    p.add_argument("--wall-seconds", type=float, default=None, help="training wall time (default 420)")
    p.add_argument("--checkpoint-seconds", type=float, default=None, help="checkpoint interval (default 60)")
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="the whole call ends within this (default 575); training is shortened to fit the later stages")
    p.add_argument("--bench-models", default=None,
                   help="default, trained, or a config (preset/YAML); default 'default,paper-256'")
    p.add_argument("--bench-batches", default=None, help="batch sizes to time (default 1,16,64)")
    p.add_argument("--bench-steps", type=int, default=None, help="sampling steps to time (default 25)")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance (default 2)")
    p.add_argument("--bench-seconds", type=float, default=None, help="time limit of the bench stage (default 75)")
    p.add_argument("--export-seconds", type=float, default=None, help="time limit of the export stage (default 50)")
    p.add_argument("--export-steps", type=int, default=None, help="sampling steps of the export (default 25)")
    p.add_argument("--export-batch-size", type=int, default=None, help="export batch size (default 16)")
    p.add_argument("--export-max-tiles", type=int, default=None, help="at most this many demo tiles (default all)")
    p.add_argument("--demo", default=str(REPO / "gpu-pack" / "demo"),
                   help="folder with demo.svs + demo.geojson (default %(default)s; built when absent)")
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    p.add_argument("--args-file", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, value in {**REAL, **(DRY if args.dry_run else {})}.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.stage:  # a child: one stage
        a = json.loads(Path(args.args_file).read_text())
        return int(STAGES[args.stage](a, Path(a["work"]), Path(a["work"]) / f"stage-{args.stage}.json") or 0)
    import tempfile

    out = Path(args.out or os.environ.get("OUT") or "gpu-out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "log.txt").open("a")
    LOG.append(log)
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="wsi-cosynth-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    a = {k: v for k, v in vars(args).items() if k not in ("stage", "args_file")}
    a.update(out=str(out), work=str(work), pack=str(Path(args.pack).resolve()))
    deadline = T0 + args.budget_seconds
    report = {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "args": a,
              "environment": environment(), "stages": {}}
    write_json(out / "report.json", report)
    say(f"environment: {json.dumps(report['environment'])}")
    # Each later stage may use up to its limit, but training leaves room only for these minimums
    # (a guess at what they need on a GPU, with margin); they get whatever the budget still holds.
    limits = {"bench": args.bench_seconds, "export": args.export_seconds}
    reserve = {"bench": min(45.0, args.bench_seconds), "export": min(35.0, args.export_seconds)}
    overhead = 45.0  # the training stage's start, data preparation and last checkpoint, past its wall time
    for i, name in enumerate(stages):
        left = deadline - time.monotonic()
        later = sum(reserve.get(s, 0.0) for s in stages[i + 1:])
        if name == "train":
            wall = min(args.wall_seconds, left - later - overhead)
            if wall < min(5.0, args.wall_seconds):
                report["stages"][name] = {"status": "skipped", "reason": f"{left:.0f} s left"}
                write_json(out / "report.json", report)
                continue
            limit = wall + overhead
            a_stage = {**a, "wall_seconds": wall}
        else:
            limit = min(limits[name], left)
            a_stage = a
        if limit < 5:
            report["stages"][name] = {"status": "skipped", "reason": f"{left:.0f} s left"}
            write_json(out / "report.json", report)
            continue
        say(f"stage {name}: up to {limit:.0f} s")
        report["stages"][name] = run_stage(name, a_stage, work, limit, log)
        if name == "train":
            try:
                report["stages"][name]["bundle"] = bundle(work, out)
            except Exception as exc:  # noqa: BLE001 - keep going: the later stages still time things
                report["stages"][name]["bundle"] = {"error": repr(exc)}
        report["seconds"] = round(time.monotonic() - T0, 1)
        write_json(out / "report.json", report)
        say(f"stage {name}: {report['stages'][name]['status']} in {report['stages'][name]['seconds']} s")
    report["seconds"] = round(time.monotonic() - T0, 1)
    write_json(out / "report.json", report)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    say(f"done in {report['seconds']} s; {out}: {files}")
    return 0 if all(s.get("status") == "ok" for s in report["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
