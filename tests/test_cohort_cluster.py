"""A cohort export on a REAL Dask cluster: a `dask scheduler` and two `dask worker --nthreads 1`
processes started from this venv's `dask` command on loopback (tests/dask_cluster.py).

The model is the tiny config at 64 px tiles, large enough for oneDNN to split its 1 x 1
convolutions over threads: before synthesis tasks pinned their torch thread count, an in-process
run (torch on every core) and these workers (one thread, as the nanny sets OMP_NUM_THREADS=1)
wrote PNGs that differed by one grey level on a few pixels.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import pytest
import torch
from dask_cluster import loopback_cluster
from slide_fixtures import synthetic_he, write_svs

from wsi_cosynth.cli import main
from wsi_cosynth.models.config import load_config
from wsi_cosynth.models.cosynth import CosynthModel
from wsi_cosynth.taxonomy import get_taxonomy
from wsi_cosynth.training.checkpoint import save_checkpoint

N_SLIDES, TILES_PER_SLIDE = 3, 2


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Path]:
    """(cohort CSV, model): three generated slides of two patients and an untrained 64 px tiny model."""
    root = tmp_path_factory.mktemp("cluster-cohort")
    torch.manual_seed(0)
    model = save_checkpoint(root / "tiny64", CosynthModel(load_config("tiny"), get_taxonomy("consep"), mpp=0.5,
                                                          tile_size=64), steps=0)
    with open(root / "cohort.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["slide", "patient", "tissue"])
        for i in range(N_SLIDES):
            write_svs(root / f"s{i}.svs", synthetic_he(384, 384, seed=20 + i, tissue_fraction=0.7), mpp=0.25,
                      downsamples=(1,))
            out.writerow([f"s{i}.svs", f"p{i // 2}", "colon"])
    return root / "cohort.csv", model


def _export(cohort: tuple[Path, Path], out: Path, *extra: str) -> int:
    csv_path, model = cohort
    return main(["export", "--cohort", str(csv_path), "--model", str(model), "--format", "coco", "--out", str(out),
                 "--steps", "10", "--max-tiles", str(TILES_PER_SLIDE), "--batch-size", "1", "--seed", "2",
                 "--split", "0.5,0.5,0", "--no-progress", *extra])


def _executed(cluster, worker_address: str) -> set[str]:
    """Keys of the tasks a worker has run to the end (executing -> memory), from its own log."""
    from distributed import Client

    def keys(dask_worker) -> list[str]:
        return [str(e[0]) for e in dask_worker.state.log
                if len(e) >= 3 and e[1] == "executing" and e[2] == "memory"]

    with Client(cluster.address, timeout="30s") as client:
        return set(client.run(keys, workers=[worker_address])[worker_address])


def _address_of(cluster, name: str) -> str:
    from distributed import Client

    with Client(cluster.address, timeout="30s") as client:
        return next(addr for addr, w in client.scheduler_info()["workers"].items() if w["name"] == name)


def test_real_cluster_gives_the_in_process_files_and_a_killed_worker_costs_only_its_tasks(cohort, tmp_path):
    reference = tmp_path / "in-process"
    assert _export(cohort, reference) == 0  # torch threads left at their default here
    expected = _files(reference)
    assert sum(k.endswith(".png") for k in expected) == N_SLIDES * TILES_PER_SLIDE + 2  # + one preview per split

    with loopback_cluster(tmp_path / "cluster") as cluster:
        on_cluster = tmp_path / "cluster-run"
        assert _export(cohort, on_cluster, "--scheduler", cluster.address) == 0, cluster.log_tail()
        assert _files(on_cluster) == expected  # byte-identical images and annotations

        survivor = _address_of(cluster, "w0")
        before = _executed(cluster, survivor)
        killed_run = tmp_path / "killed-run"
        work = tmp_path / ".killed-run.cosynth-cohort"
        result: list[int] = []
        runner = threading.Thread(target=lambda: result.append(_export(cohort, killed_run, "--scheduler",
                                                                       cluster.address)))
        runner.start()
        deadline = time.monotonic() + 120
        while len(list(work.glob("slides/*/part_*.sha256"))) < 2 and time.monotonic() < deadline and runner.is_alive():
            time.sleep(0.01)
        parts_at_kill = len(list(work.glob("slides/*/part_*.sha256")))
        cluster.kill_worker("w1")
        runner.join(timeout=300)
        assert not runner.is_alive() and result == [0], cluster.log_tail()
        assert 2 <= parts_at_kill < N_SLIDES * TILES_PER_SLIDE, "the worker was not killed mid-run"
        assert _files(killed_run) == expected
        # Every task of the run (3 plans + 6 batches) ran somewhere; the survivor did not redo the
        # ones the killed worker had finished: killing it cost only its own tasks.
        run_by_survivor = _executed(cluster, survivor) - before
        n_tasks = N_SLIDES + N_SLIDES * TILES_PER_SLIDE
        assert 0 < len(run_by_survivor) < n_tasks, (len(run_by_survivor), cluster.log_tail())
