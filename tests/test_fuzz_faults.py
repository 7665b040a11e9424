"""Faults around the export: a concurrent run on the same output, a damaged batch file in the
resume work directory, a Dask worker killed mid-export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from fuzzing import assert_clean, run_cli
from slide_fixtures import synthetic_he, write_svs

from wsi_cosynth.models.config import load_config
from wsi_cosynth.models.cosynth import CosynthModel
from wsi_cosynth.taxonomy import get_taxonomy
from wsi_cosynth.training.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = CosynthModel(load_config("tiny"), get_taxonomy("consep"), mpp=0.5, tile_size=32)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny", model, steps=0)


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    return write_svs(tmp_path_factory.mktemp("slide") / "s.svs", synthetic_he(384, 384, seed=1, tissue_fraction=0.6),
                     mpp=0.25)


def _export(slide: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return ["export", "--slide", str(slide), "--out", str(out), "--model", str(model), "--format", "lizard",
            "--tissue", "colon", "--steps", "6", "--batch-size", "1", "--max-tiles", "6", "--seed", "3",
            "--no-progress", "--threads", "1", *extra]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, slide, tiny_model) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "full"
    res = run_cli(_export(slide, out, tiny_model))
    assert res.rc == 0, res.stderr
    return _files(out)


def _hold_lock(out: Path) -> subprocess.Popen:
    """A separate process that takes the output lock of ``out`` and sleeps."""
    code = textwrap.dedent(f"""
        import sys, time
        from wsi_cosynth.atomic import output_lock
        with output_lock({str(out)!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_export_to_the_same_out_refuses_at_once_and_a_killed_lock_is_not_stuck(slide, tmp_path):
    out = tmp_path / "out"
    holder = _hold_lock(out)
    try:
        start = time.perf_counter()
        res = run_cli(["export", "--source", "real", "--slide", str(slide), "--format", "coco", "--mpp", "0.25", "--tile-size", "128", "--min-tissue", "0.2",
                       "--out", str(out), "--no-progress"])
        assert time.perf_counter() - start < 10
        assert_clean(res, names=out)
        assert f"pid {holder.pid}" in res.stderr and not out.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / ".out.lock").exists()  # the killed holder could not clean up ...
    res = run_cli(["export", "--source", "real", "--slide", str(slide), "--format", "coco", "--mpp", "0.25", "--tile-size", "128", "--min-tissue", "0.2",
                   "--out", str(out), "--no-progress"])
    assert res.rc == 0, res.stderr  # ... yet its lock died with it
    assert not (tmp_path / ".out.lock").exists()


def test_synthetic_export_takes_the_lock_too(slide, tiny_model, tmp_path):
    out = tmp_path / "out"
    holder = _hold_lock(out)
    try:
        assert_clean(run_cli(_export(slide, out, tiny_model)), names=out)
        assert not (tmp_path / ".out.cosynth-work").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_damaged_batch_file_is_detected_and_redone_on_resume(slide, tiny_model, reference, tmp_path, monkeypatch):
    import wsi_cosynth.pipeline.synthetic as synthetic

    real_run = synthetic.run_batches

    def interrupted(batches, spec, on_result, **kw):
        def stop_after_three(batch, tiles):
            on_result(batch, tiles)
            if batch.index == 2:
                raise KeyboardInterrupt

        real_run(batches, spec, stop_after_three, **kw)

    out = tmp_path / "out"
    monkeypatch.setattr(synthetic, "run_batches", interrupted)
    assert run_cli(_export(slide, out, tiny_model)).rc == 130
    work = tmp_path / ".out.cosynth-work"
    first = work / "batch_000000.npz"
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the compressed arrays
    first.write_bytes(bytes(data))

    redone: list[int] = []

    def counting(batches, spec, on_result, **kw):
        redone.extend(b.index for b in batches)
        real_run(batches, spec, on_result, **kw)

    monkeypatch.setattr(synthetic, "run_batches", counting)
    res = run_cli(_export(slide, out, tiny_model))
    assert res.rc == 0, res.stderr
    assert redone == [0, 3, 4, 5]  # the damaged batch again, the finished ones not
    assert _files(out) == reference


@pytest.mark.slow
def test_dask_worker_killed_mid_export_completes_identically(slide, tiny_model, reference, tmp_path, monkeypatch):
    import psutil

    import wsi_cosynth.pipeline.workdir as workdir

    real_save = workdir.WorkDir.save
    killed: list[int] = []

    def save_then_kill(self, batch, tiles):
        real_save(self, batch, tiles)
        if not killed:  # after the first finished batch, while the others are in flight
            workers = [p for p in psutil.Process().children(recursive=True)
                       if any("distributed" in part or "multiprocessing" in part for part in p.cmdline())]
            assert workers, "no Dask worker processes found"
            victim = workers[-1]
            killed.append(victim.pid)
            victim.send_signal(signal.SIGKILL)

    monkeypatch.setattr(workdir.WorkDir, "save", save_then_kill)
    out = tmp_path / "out"
    res = run_cli(_export(slide, out, tiny_model, "--workers", "2"))
    assert killed
    if res.rc == 0:  # Dask re-ran the lost batch on the restarted worker
        assert _files(out) == reference
    else:  # or gave up with one clear line; the rerun resumes to the same files
        assert_clean(res)
        monkeypatch.setattr(workdir.WorkDir, "save", real_save)
        again = run_cli(_export(slide, out, tiny_model))
        assert again.rc == 0, again.stderr
        assert _files(out) == reference
