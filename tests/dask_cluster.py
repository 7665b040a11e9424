"""A real Dask cluster on loopback for tests: ``dask scheduler`` and ``dask worker`` processes
started from this venv's own ``dask`` command, exactly as a user would start them.

The scheduler listens on a random free port (``--port 0``) and writes its address to a scheduler
file, which the workers read; every process runs in its own session, so :meth:`kill_worker`
can kill a worker together with its nanny, and the context manager stops everything however
the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90.0


def dask_command() -> Path:
    """The ``dask`` command of the Python running the tests (skips the test when it is absent)."""
    cli = Path(sys.executable).parent / "dask"
    if not cli.is_file():
        pytest.skip(f"no dask command next to {sys.executable}")
    return cli


@dataclass
class LoopbackCluster:
    """A running scheduler and its workers; ``address`` is ``tcp://127.0.0.1:PORT``."""

    address: str
    scheduler: subprocess.Popen
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    scheduler_file: Path | None = None
    log_dir: Path | None = None
    logs: list = field(default_factory=list)  # open log files, closed with the cluster

    def start_worker(self, name: str) -> None:
        """One ``dask worker --nthreads 1`` process (with its nanny, the default) named ``name``."""
        assert self.scheduler_file is not None and self.log_dir is not None
        log = open(self.log_dir / f"worker-{name}.log", "wb")  # noqa: SIM115 - closed with the cluster
        self.logs.append(log)
        self.workers[name] = subprocess.Popen(
            [str(dask_command()), "worker", "--scheduler-file", str(self.scheduler_file), "--nthreads", "1",
             "--nworkers", "1", "--name", name, "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "4GiB",
             "--local-directory", str(self.log_dir / f"space-{name}")],
            stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=str(self.log_dir), start_new_session=True)

    def wait_for_workers(self, n: int, timeout: float = START_TIMEOUT_S) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(n, timeout=timeout)

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker and its nanny: the process group dies at once, as on a crash or an OOM kill."""
        proc = self.workers.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of every process log (for assertion messages)."""
        assert self.log_dir is not None
        logs = sorted(self.log_dir.glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in logs)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL what is left after a few seconds."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)


@contextlib.contextmanager
def loopback_cluster(tmp: Path, worker_names: tuple[str, ...] = ("w0", "w1")) -> Iterator[LoopbackCluster]:
    """Start ``dask scheduler`` and one ``dask worker`` per name on 127.0.0.1; stop them all on exit."""
    tmp.mkdir(parents=True, exist_ok=True)
    scheduler_file = tmp / "scheduler.json"
    log = open(tmp / "scheduler.log", "wb")  # noqa: SIM115 - closed below
    scheduler = subprocess.Popen(
        [str(dask_command()), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(scheduler_file)],
        stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=str(tmp), start_new_session=True)
    cluster = LoopbackCluster(address="", scheduler=scheduler, scheduler_file=scheduler_file, log_dir=tmp)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not scheduler_file.is_file() or not scheduler_file.read_text().strip():
            if scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start:\n{cluster.log_tail()}")
            time.sleep(0.1)
        time.sleep(0.05)  # the file is written in one go, but give the writer its close
        cluster.address = json.loads(scheduler_file.read_text())["address"]
        for name in worker_names:
            cluster.start_worker(name)
        cluster.wait_for_workers(len(worker_names))
        yield cluster
    finally:
        for proc in list(cluster.workers.values()):
            _stop(proc)
        _stop(scheduler)
        for handle in [log, *cluster.logs]:
            handle.close()
