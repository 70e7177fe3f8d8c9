"""Running a sweep's runs: one run is `execute_run` (a fresh machine, its report, its metrics, one row); the
engines map it over the runs still to do.

- `LocalEngine`: N worker processes forked once from this one (each run boots its own machine with its own CPU
  processes inside its worker). Idle workers ignore SIGINT; a worker lets it interrupt the run it is doing, so
  Ctrl-C stops every run at once, and an interrupted run is not recorded.
- `RayEngine`: each run is a Ray task on a cluster (`address`: "auto", "HOST:PORT" or "ray://HOST:PORT"); the
  rows come back as from the local engine. Ray is an optional extra (`pip install 'oomemu[ray]'`).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from oomemu.errors import ScenarioError

LEAN_KEEP = ("report.json", "scenario.json", "dmesg.log")


class Interrupted(Exception):
    """The run was interrupted (Ctrl-C): it is not a result."""


def execute_run(task: dict[str, Any]) -> dict[str, Any]:
    """One run of a sweep, in whatever process the engine chose: run, measure, return its row.

    `task`: scenario (a validated oomemu.config.Scenario), run_dir, metrics, hit (verdict or None), lean, and
    the row's identity (run_id, cell, repeat, seed, the axis values)."""
    from oomemu.api import run
    from oomemu.experiment.metrics import metric_values
    from oomemu.experiment.spec import RACE_FREE
    run_dir = Path(task["run_dir"])
    if run_dir.exists():
        shutil.rmtree(run_dir)               # a half-finished run from an interrupted sweep
    t0 = time.monotonic()
    with _interruptible():
        report = run(task["scenario"], out=run_dir)
    wall = time.monotonic() - t0
    if report["exit_code"] == 130:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise Interrupted(task["run_id"])
    verdict = report["verdict"]
    hit = verdict == task["hit"] if task["hit"] else verdict not in RACE_FREE
    row = dict(task["row"])
    row.update(verdict=verdict, exit_code=report["exit_code"], ended_by=report["ended_by"], hit=hit,
               elapsed_s=report["elapsed_s"], wall_s=round(wall, 4), run_dir=str(run_dir))
    row.update(metric_values(report, task["metrics"], run_dir))
    if report.get("schedule"):                 # a controlled run: the string that replays it exactly
        row["replay"] = report["schedule"]["replay"]
    if task.get("lean"):
        for p in run_dir.iterdir():
            if p.name not in LEAN_KEEP:
                p.unlink()
    return row


class _interruptible:
    """SIGINT raises KeyboardInterrupt inside the block (the supervisor then ends the run as interrupted),
    and is ignored again afterwards; outside the main thread (a Ray worker's) it changes nothing."""

    def __enter__(self):
        self.old = None
        try:
            self.old = signal.signal(signal.SIGINT, signal.default_int_handler)
        except ValueError:
            pass
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
        return False


# --- local -----------------------------------------------------------------------------------------------------------

def default_jobs() -> int:
    """Runs side by side that fit this host: one per core (a run's CPU processes share them anyway)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _pool_worker(conn) -> None:  # pragma: no cover - runs in the forked worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            break
        if task is None:
            break
        try:
            result = ("ok", execute_run(task))
        except Interrupted:
            result = ("interrupted", task["run_id"])
        except KeyboardInterrupt:
            result = ("interrupted", task["run_id"])
        except BaseException:  # noqa: BLE001 - report anything to the parent
            result = ("error", traceback.format_exc())
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            break
    conn.close()


class LocalEngine:
    """A pool of `jobs` worker processes forked from this one; each run boots its own machine."""

    name = "local"

    def __init__(self, jobs: int | None = None):
        self.jobs = jobs or default_jobs()
        self.workers: list[tuple[Any, Any]] = []

    def start(self, n_tasks: int) -> None:
        """Fork the workers (before any thread, such as a progress bar's, exists in this process)."""
        import multiprocessing
        ctx = multiprocessing.get_context("fork")
        sys.stdout.flush()
        sys.stderr.flush()
        for _ in range(min(self.jobs, n_tasks) - len(self.workers)):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_pool_worker, args=(child,), name="oomemu-sweep-worker")
            p.start()
            child.close()
            self.workers.append((p, parent))

    def map(self, tasks, on_result):
        """Run every task; call on_result(kind, payload) as each ends ("ok" row, "error" text). Returns
        normally when all are done; on KeyboardInterrupt, interrupts the runs in flight, waits for them, and
        re-raises. The workers are gone when it returns."""
        from multiprocessing.connection import wait
        tasks = list(tasks)
        if not tasks:
            self.close()
            return
        self.start(len(tasks))
        workers = self.workers
        busy: dict[Any, Any] = {}
        queue = list(reversed(tasks))
        try:
            for p, conn in workers:
                if queue:
                    conn.send(queue.pop())
                    busy[conn] = p
            while busy:
                for conn in wait(list(busy)):
                    p = busy.pop(conn)
                    try:
                        kind, payload = conn.recv()
                    except EOFError:
                        kind, payload = "error", f"sweep worker {p.pid} died (exit {p.exitcode})"
                    on_result(kind, payload)
                    if queue and p.is_alive():
                        conn.send(queue.pop())
                        busy[conn] = p
        except KeyboardInterrupt:
            self._interrupt(busy, on_result)
            raise
        finally:
            self._close(workers)
            self.workers = []

    def close(self) -> None:
        """Stop the workers (map does at its end; this is for a sweep that never got to map)."""
        self._close(self.workers)
        self.workers = []

    @staticmethod
    def _interrupt(busy, on_result, grace=15.0):
        """Interrupt the runs in flight and collect what they send back (finished rows are kept)."""
        from multiprocessing.connection import wait
        for p in busy.values():
            try:
                os.kill(p.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while busy and time.monotonic() < deadline:
            for conn in wait(list(busy), timeout=max(0.0, deadline - time.monotonic())):
                busy.pop(conn)
                try:
                    kind, payload = conn.recv()
                except EOFError:
                    continue
                if kind == "ok":
                    on_result(kind, payload)

    @staticmethod
    def _close(workers):
        for p, conn in workers:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 5.0
        for p, conn in workers:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                _kill_tree(p.pid)
                p.join(1.0)
            conn.close()


def _kill_tree(pid):
    import psutil
    try:
        proc = psutil.Process(pid)
        procs = proc.children(recursive=True) + [proc]
    except psutil.Error:
        return
    for q in procs:
        try:
            q.kill()
        except psutil.Error:
            pass


# --- ray -------------------------------------------------------------------------------------------------------------

RAY_MISSING = "--engine ray needs Ray: pip install 'oomemu[ray]' (or pip install 'ray>=2.9')"
CONNECT_TIMEOUT_S = 5.0


def check_address(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A ScenarioError naming `address` unless something listens there (HOST:PORT or ray://HOST:PORT); "auto"
    and None are left to Ray (it finds the cluster started on this host, or says there is none)."""
    if address in (None, "auto", "local"):
        return
    text = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ScenarioError(f"--address {address}: must be auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise ScenarioError(f"--address {address}: cannot reach a Ray cluster there "
                            f"({error.strerror or error})") from None


class RayEngine:
    """Each run is a Ray task (one CPU each); rows come back as from the local engine."""

    name = "ray"

    def __init__(self, address: str | None = "auto", jobs: int | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ScenarioError(RAY_MISSING) from None
        check_address(address)
        self.address = address or "auto"
        self.jobs = jobs
        self.ray = None

    def start(self, n_tasks: int) -> None:
        """Connect to the cluster (before the progress bar starts: a bad address is one line, exit 2)."""
        if n_tasks and self.ray is None:
            self.ray = self._init()

    def _init(self):
        import ray
        pkg_root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH")) if p)
        try:
            ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False,
                     logging_level="ERROR", runtime_env={"env_vars": {"PYTHONPATH": path}})
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ScenarioError(f"--address {self.address}: cannot connect to a Ray cluster: "
                                f"{str(error).splitlines()[0]}") from None
        return ray

    def map(self, tasks, on_result):
        tasks = list(tasks)
        if not tasks:
            return
        self.start(len(tasks))
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_run)
        window = self.jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue = list(reversed(tasks))
        refs = []
        try:
            while queue or refs:
                while queue and len(refs) < 2 * window:
                    refs.append(remote.remote(queue.pop()))
                done, refs = ray.wait(refs, num_returns=1, timeout=1.0)
                for ref in done:
                    kind, payload = ray.get(ref)
                    on_result(kind, payload)
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        finally:
            ray.shutdown()
            self.ray = None


def _ray_run(task):  # pragma: no cover - runs on a Ray worker
    try:
        return "ok", execute_run(task)
    except Interrupted:
        return "interrupted", task["run_id"]
    except BaseException:  # noqa: BLE001 - report anything to the driver
        return "error", traceback.format_exc()


def make_engine(name: str, jobs: int | None = None, address: str | None = None):
    if name == "local":
        if address is not None:
            raise ScenarioError("--address goes with --engine ray")
        return LocalEngine(jobs)
    if name == "ray":
        return RayEngine(address or "auto", jobs)
    raise ScenarioError(f"--engine {name}: must be local or ray")
