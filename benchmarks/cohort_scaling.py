"""Cohort export at scale: local workers, a real Dask cluster on loopback, and a projection.

1. ``wsi-cosynth export --cohort`` on a synthetic cohort of ``--slides`` copies of the demo slide
   (``--tiles-per-slide`` tiles each, the bundled model unless ``--model``): in-process, then on a
   local cluster of 1 and 2 workers (``--workers N --threads 1``), each timed whole (process
   start, model loads, planning, synthesis, writing).
2. A real cluster: ``dask scheduler`` + 2 ``dask worker --nthreads 1`` processes on 127.0.0.1
   (this venv's ``dask`` command, as a user starts them):
   - the same cohort through ``--scheduler``: its time against the 2-worker local run, per task;
   - trivial tasks: the round trip of one task at a time (latency), the rate of
     :class:`~wsi_cosynth.pipeline.execution.TaskRunner` (a bounded window of tasks ahead), and
     the rate the scheduler sustains when every task is submitted at once;
   - peak memory (max RSS) of fresh workers after the cohort, and of other fresh workers after a
     cohort of twice as many slides: it must not grow with the number of slides.
3. A projection of tiles/s for N GPU workers: min(N x per-worker rate, scheduler rate x batch
   size, client rate). The client rate is measured: what the client does per tile (keep a task's
   result in the work directory, read it back, write it into the COCO dataset), timed on the
   in-process run's tiles; the per-GPU-worker rate is an input (``--gpu-tiles-per-s``, not
   measured here: no GPU).

    .venv/bin/python benchmarks/cohort_scaling.py [--model DIR] [--slides 4] [--tiles-per-slide 8]
        [--steps 25] [--trivial-tasks 2000] [--gpu-tiles-per-s 4] [--skip-local] [--skip-cluster]

Prints a table per part, then one JSON line. The load (``uptime``) is printed before and after.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the loopback cluster of the tests

BATCH_SIZE = 4


def build_cohort(root: Path, n_slides: int, name: str = "cohort") -> Path:
    """``n_slides`` copies of the demo slide (each with its annotations), two per patient."""
    from wsi_cosynth.demo import build_demo_slide

    demo = build_demo_slide(root / "demo") if not (root / "demo" / "demo.svs").is_file() else root / "demo" / "demo.svs"
    rows = []
    for i in range(n_slides):
        slide = root / f"slide{i}.svs"
        shutil.copyfile(demo, slide)
        shutil.copyfile(demo.with_suffix(".geojson"), slide.with_suffix(".geojson"))
        rows.append([slide.name, f"patient{i // 2}", "colon"])
    path = root / f"{name}-{n_slides}.csv"
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["slide", "patient", "tissue"])
        out.writerows(rows[:n_slides])
    return path


def export(cohort: Path, out: Path, args: argparse.Namespace, *extra: str, steps: int | None = None) -> tuple[float, int]:
    """(seconds, tiles written) of one CLI cohort export."""
    cmd = [sys.executable, "-m", "wsi_cosynth", "export", "--cohort", str(cohort), "--out", str(out), "--format", "coco",
           "--steps", str(steps or args.steps), "--max-tiles", str(args.tiles_per_slide), "--batch-size",
           str(BATCH_SIZE), "--no-progress", "--split", "0.5,0.5,0", *(["--model", args.model] if args.model else []),
           *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - start
    tiles = sum(len(json.loads((out / split / "annotations.json").read_text())["images"])
                for split in ("train", "val") if (out / split).is_dir())
    return seconds, tiles


def _noop(i: int) -> int:
    return i


def trivial_rates(address: str, n: int) -> dict[str, float]:
    """Round-trip latency (ms), TaskRunner tasks/s and all-at-once tasks/s of trivial tasks."""
    from distributed import Client, wait

    from wsi_cosynth.pipeline.execution import Task, TaskRunner

    with Client(address, timeout="30s") as client:
        client.submit(_noop, -1, pure=False).result()  # warm the connection
        start = time.perf_counter()
        for i in range(200):
            client.submit(_noop, i, pure=False).result()
        latency_ms = (time.perf_counter() - start) / 200 * 1000
        start = time.perf_counter()
        futures = client.map(_noop, range(n), pure=False)
        wait(futures)
        all_at_once = n / (time.perf_counter() - start)
        del futures
    done = []
    with TaskRunner(scheduler=address) as runner:
        start = time.perf_counter()
        runner.run((Task(f"noop-{i}", _noop, (i,)) for i in range(n)), lambda task, result: done.append(result))
        runner_rate = n / (time.perf_counter() - start)
    assert len(done) == n
    return {"latency_ms": round(latency_ms, 2), "runner_tasks_per_s": round(runner_rate, 1),
            "scheduler_tasks_per_s": round(all_at_once, 1)}


def worker_peaks_mib(address: str) -> dict[str, float]:
    """Max RSS (MiB) of every worker process so far."""
    import resource

    from distributed import Client

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    with Client(address, timeout="30s") as client:
        by_address = client.run(peak)
        names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
    return {str(names[a]): round(v, 1) for a, v in sorted(by_address.items())}


def client_seconds_per_tile(dataset: Path, tmp: Path) -> float:
    """Seconds the client spends per tile besides sampling: keep a batch's result (compressed,
    digested), read it back, write it into a COCO dataset; on the tiles of ``dataset``."""
    from wsi_cosynth.exporters import open_writer, read_dataset
    from wsi_cosynth.pipeline.cohort_store import SlideStore

    tiles = list(read_dataset(dataset, "coco"))
    store = SlideStore(tmp / "store")
    start = time.perf_counter()
    parts = [tiles[i:i + BATCH_SIZE] for i in range(0, len(tiles), BATCH_SIZE)]
    for index, part in enumerate(parts):
        store.save_part(index, part)
    with open_writer("coco", tmp / "written", tiles[0].taxonomy) as writer:
        for index in range(len(parts)):
            for tile in store.load_part(index):
                writer.add(tile)
    return (time.perf_counter() - start) / len(tiles)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--slides", type=int, default=4)
    parser.add_argument("--tiles-per-slide", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--trivial-tasks", type=int, default=2000)
    parser.add_argument("--gpu-tiles-per-s", type=float, default=4.0,
                        help="assumed tiles/s of one GPU worker for the projection (not measured here)")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args()
    results: dict = {"load_before": uptime(), "slides": args.slides, "tiles_per_slide": args.tiles_per_slide,
                     "steps": args.steps, "batch_size": BATCH_SIZE}
    print(results["load_before"], flush=True)
    n_tiles = args.slides * args.tiles_per_slide
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cohort = build_cohort(tmp / "cohort", args.slides)
        if not args.skip_local:
            runs = {}
            for label, extra in (("in-process", []), ("1 worker", ["--workers", "1", "--threads", "1"]),
                                 ("2 workers", ["--workers", "2", "--threads", "1"])):
                seconds, tiles = export(cohort, tmp / label.replace(" ", "-"), args, *extra)
                runs[label] = {"seconds": round(seconds, 1), "tiles": tiles, "tiles_per_s": round(tiles / seconds, 3)}
                print(f"{label:12s} {tiles} tiles {seconds:7.1f} s {tiles / seconds:.3f} tiles/s", flush=True)
            results["local"] = runs
            results["speedup_2_vs_1_workers"] = round(runs["1 worker"]["seconds"] / runs["2 workers"]["seconds"], 2)
            print(f"2 vs 1 workers: {results['speedup_2_vs_1_workers']}x", flush=True)
            for split in ("train", "val"):
                if (tmp / "in-process" / split).is_dir():
                    per_tile = client_seconds_per_tile(tmp / "in-process" / split, tmp / f"client-{split}")
                    results["client_s_per_tile"] = round(per_tile, 4)
                    print(f"client work per tile (keep, read back, write COCO): {per_tile * 1000:.1f} ms", flush=True)
                    break
        if not args.skip_cluster:
            from dask_cluster import loopback_cluster

            with loopback_cluster(tmp / "cluster") as cluster:
                trivial = trivial_rates(cluster.address, args.trivial_tasks)
                print(f"trivial tasks: {trivial}", flush=True)
                results["trivial"] = trivial
            with loopback_cluster(tmp / "cluster-cohort") as cluster:
                seconds, tiles = export(cohort, tmp / "cluster-full", args, "--scheduler", cluster.address,
                                        "--threads", "1")
                peaks = worker_peaks_mib(cluster.address)
            double = build_cohort(tmp / "cohort", 2 * args.slides, name="double")
            with loopback_cluster(tmp / "cluster-double") as cluster:
                seconds_double, _ = export(double, tmp / "cluster-double-out", args, "--scheduler", cluster.address,
                                           "--threads", "1")
                peaks_double = worker_peaks_mib(cluster.address)
            n_tasks = args.slides * (1 + -(-args.tiles_per_slide // BATCH_SIZE))
            results["cluster"] = {"seconds": round(seconds, 1), "tiles": tiles, "tiles_per_s": round(tiles / seconds, 3),
                                  "tasks": n_tasks, "seconds_double": round(seconds_double, 1),
                                  "worker_peak_mib": peaks, "worker_peak_mib_double_slides": peaks_double}
            print(f"real cluster, 2 workers: {tiles} tiles {seconds:.1f} s ({tiles / seconds:.3f} tiles/s; twice the "
                  f"slides on fresh workers: {seconds_double:.1f} s); worker peak MiB {peaks}, with twice the slides "
                  f"{peaks_double}", flush=True)
            if "local" in results:
                local = results["local"]["2 workers"]["seconds"]
                results["cluster"]["overhead_s_per_task_vs_local"] = round((seconds - local) / n_tasks, 3)
                print(f"real cluster vs local 2 workers: {(seconds - local) / n_tasks:+.3f} s per task "
                      f"({n_tasks} tasks; both load the model in every worker, the local run also starts "
                      f"its cluster)", flush=True)
    projection = []
    # The caps measured in this run (a part skipped leaves its cap out).
    caps = {}
    if "trivial" in results:
        caps["scheduler"] = round(results["trivial"]["scheduler_tasks_per_s"] * BATCH_SIZE, 1)
    if "client_s_per_tile" in results:
        caps["client"] = round(1 / results["client_s_per_tile"], 1)
    for n in (1, 2, 4, 8, 16, 32, 64, 128):
        rate = min([n * args.gpu_tiles_per_s, *caps.values()])
        projection.append({"gpu_workers": n, "tiles_per_s": round(rate, 1)})
    results["projection"] = {"gpu_tiles_per_s_assumed": args.gpu_tiles_per_s, "caps_tiles_per_s": caps,
                             "rows": projection}
    print("projection (tiles/s):", ", ".join(f"{r['gpu_workers']} GPUs {r['tiles_per_s']}" for r in projection),
          f"(caps, tiles/s: {caps})", flush=True)
    results["load_after"] = uptime()
    print(results["load_after"])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
