"""A busy daemon: submit to running of a new job, and the idle daemon's CPU, with thousands of jobs waiting.

::

    .venv/bin/python benchmarks/busy_daemon.py [--sizes 0 1000 10000] [--repeats 3] [--idle-s 20]
        [--backends sqlite postgresql] [--big-gpus 200] [--big-nodes 25]

Each row is a real daemon in this process (its REST API, ticks, event thread, leader lease) on a fresh database:
SQLite in a temporary folder, and PostgreSQL at 127.0.0.1:5432 (database ``test``, a schema of its own, dropped
afterwards) when it answers. Before the daemon starts, ``N`` jobs waiting for a begin time a day ahead are
inserted straight into the jobs table, as many rows as submissions would make; the daemon then finds them when it
begins to lead. Once every one of them says it waits for its begin time:

- idle CPU: the daemon process's CPU time (all its threads: ticks, events, lease, API, Ray's driver) over
  ``--idle-s`` seconds in which nothing is submitted, as a fraction of one core;
- submit -> running: a ``synthetic`` job submitted through the client, polled with ``GET /v1/jobs/ID`` until it
  is ``running``; cancelled and waited for before the next one (median and max of ``--repeats``).

The main rows run on a local Ray with 2 logical GPUs and real workers (fifo). The last row has ``--big-gpus``
logical GPUs over ``--big-nodes`` nodes of two zones: 200 worker processes do not fit a small machine, so there
the controller is a stand-in Ray actor that answers the controller's calls (inventory, start, cancel, events)
without processes; the daemon's side is the real one. Not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import load_average, until  # noqa: E402  (beside this script)

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: A synthetic job far longer than a measurement: it is cancelled once seen running.
ENDLESS = {"steps": 100000, "step_s": 0.05, "checkpoint_every": 100000}
INSERT_BATCH = 1000


def insert_waiting(engine, jobs_dir: Path, count: int, now) -> None:
    """``count`` jobs waiting for a begin time a day ahead, as rows like those a submission makes."""
    from sqlalchemy import insert

    from scheduler.store.launch import DEFAULT_LAUNCH
    from scheduler.store.models import Job, JobEvent

    begin = now + timedelta(days=1)
    for first in range(0, count, INSERT_BATCH):
        jobs, events = [], []
        for _ in range(min(INSERT_BATCH, count - first)):
            job_id = uuid.uuid4().hex[:12]
            jobs.append(dict(id=job_id, user_id=None, kind="synthetic", spec=ENDLESS, gpus=1, zones=[],
                             deadline_at=None, interruptible=False, priority=0, state="pending", reason="queued",
                             cancel_requested=False, submitted_at=now, workdir=str(jobs_dir / job_id),
                             not_before_at=begin, time_limit_s=None, held=False, depends_on=[],
                             idempotency_key=None, request_hash=None, **DEFAULT_LAUNCH.to_dict()))
            events.append(dict(job_id=job_id, at=now, from_state=None, to_state="pending", reason="submitted"))
        with engine.begin() as connection:
            connection.execute(insert(Job), jobs)
            connection.execute(insert(JobEvent), events)


def parked(engine) -> int:
    """How many jobs say they wait for their begin time."""
    from sqlalchemy import func, select

    from scheduler.store.models import Job

    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(Job).where(
            Job.reason.like("waiting for its begin time%")))


class StandInController:
    """Answers the controller's calls for ``gpus`` logical GPUs over ``nodes`` nodes (half in DE, half in FR),
    without worker processes: a start marks its GPUs busy, a cancel frees them and reports the run cancelled."""

    def __init__(self, gpus: int, nodes: int):
        per_node = gpus // nodes
        self.epoch = uuid.uuid4().hex
        self.workers = {}
        for n in range(nodes):
            node_id = f"{n:08x}" + "0" * 48
            for k in range(per_node):
                worker_id = f"{node_id[:8]}-gpu{k}"
                self.workers[worker_id] = {"worker_id": worker_id, "node_id": node_id, "zone": "DE" if n % 2 else "FR",
                                           "max_power_w": 400.0, "name": "logical", "logical": True}
        self.busy: dict[str, str] = {}  # worker -> job
        self.runs: dict[str, tuple[int, list[str]]] = {}  # job -> (run, workers)
        self.events: list = []
        self.seq = 0
        self.changed = threading.Condition()

    def info(self):
        return {"epoch": self.epoch, "workers": len(self.workers), "running": len(self.runs)}

    def configure(self, options=None):
        return {"changed": {}, "workers_keeping_old": 0}

    def sync_workers(self):
        return self.inventory()

    def inventory(self):
        return [{**w, "busy_job": self.busy.get(w["worker_id"])} for w in self.workers.values()]

    def start_job(self, job_id, run_id, kind, spec, worker_ids, *args):
        if any(w in self.busy for w in worker_ids):
            raise RuntimeError("a worker is busy")
        for w in worker_ids:
            self.busy[w] = job_id
        self.runs[job_id] = (int(run_id), list(worker_ids))

    def cancel_job(self, job_id, outcome="cancelled"):
        from workers.events import ExitStatus, Finished

        if job_id not in self.runs:
            return False
        run_id, worker_ids = self.runs.pop(job_id)
        for w in worker_ids:
            self.busy.pop(w, None)
        with self.changed:
            self.seq += 1
            self.events.append((self.seq, Finished(job_id=job_id, run_id=run_id, worker_id=worker_ids[0],
                                                   at=time.time(), exit_status=ExitStatus(outcome))))
            self.changed.notify_all()
        return True

    def running(self):
        return [{"run_id": run_id, "job_id": job_id} for job_id, (run_id, _) in self.runs.items()]

    def fetch_events(self, after_seq, timeout_s=0.0, limit=1000):
        with self.changed:
            self.changed.wait_for(lambda: any(s > after_seq for s, _ in self.events), timeout=timeout_s)
            return [(s, e) for s, e in self.events if s > after_seq][:limit]

    def ack_events(self, upto_seq):
        with self.changed:
            before = len(self.events)
            self.events = [(s, e) for s, e in self.events if s > upto_seq]
            return before - len(self.events)


def measure(settings, waiting: int, repeats: int, idle_s: float, stand_in=None) -> dict:
    """One row: a daemon on a fresh database with ``waiting`` jobs parked; its idle CPU and submit -> running."""
    from scheduler.client import Client
    from scheduler.clock import utc_now
    from scheduler.cluster.link import ControllerLink
    from scheduler.daemon.daemon import Daemon
    from scheduler.store.engine import make_engine, upgrade

    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    t0 = time.perf_counter()
    insert_waiting(engine, settings.jobs_dir, waiting, utc_now())
    insert_s = time.perf_counter() - t0
    daemon = Daemon(settings)
    if stand_in is not None:
        daemon.controller = ControllerLink(lambda: stand_in)
    t0 = time.perf_counter()
    daemon.start()
    try:
        until(lambda: daemon.role == "leader" and parked(engine) == waiting, timeout_s=600.0)
        ready_s = time.perf_counter() - t0
        time.sleep(2.0)  # the ticks the start asked for are over
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(idle_s)
        idle_core = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        client = Client(daemon.url, daemon.token)
        latencies = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            job = client.submit("synthetic", ENDLESS)
            until(lambda: client.get(job.id).state == "running", timeout_s=600.0)
            latencies.append(time.perf_counter() - t0)
            client.cancel(job.id)
            until(lambda: client.get(job.id).state == "cancelled", timeout_s=600.0)
    finally:
        daemon.stop()
        # stop() waits a few seconds for the tick and event threads; a long tick outlives that, and its CPU would
        # count in the next row's idle window
        for thread in (daemon._tick_thread, daemon._event_thread):
            if thread is not None:
                thread.join()
        engine.dispose()
    return {"insert_s": insert_s, "ready_s": ready_s, "idle_core": idle_core,
            "median_s": statistics.median(latencies), "max_s": max(latencies)}


def postgres_schema() -> tuple[str, object] | None:
    """A fresh schema on the local PostgreSQL and the admin engine that drops it (None: not reachable)."""
    from sqlalchemy import create_engine, text

    try:
        admin = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        schema = f"wattsched_bench_{uuid.uuid4().hex[:10]}"
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # no server, no driver
        print(f"PostgreSQL skipped: {str(exc).splitlines()[0]}")
        return None
    return schema, admin


def drop_schema(schema: str, admin) -> None:
    from sqlalchemy import text

    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--big-gpus", type=int, default=200, help="0: no row on many GPUs")
    parser.add_argument("--big-nodes", type=int, default=25)
    parser.add_argument("--big-waiting", type=int, default=10000)
    args = parser.parse_args()

    import logging

    import ray

    from scheduler.cluster.controller import shutdown_controller
    from scheduler.config import Settings

    logging.basicConfig(level=logging.WARNING)
    base = replace(Settings.from_env(environ={}), port=0, logical_gpus=2, policy="fifo")
    rows = []

    def row(label: str, backend: str, waiting: int, stand_in=None, **overrides) -> None:
        data_dir = Path(tempfile.mkdtemp(prefix="wattsched-busy-"))
        settings = replace(base, data_dir=data_dir, **overrides)
        dropped = None
        if backend == "postgresql":
            made = postgres_schema()
            if made is None:
                return
            dropped = made
            settings = replace(settings, database_url=f"{POSTGRES_URL}?options=-csearch_path%3D{made[0]}")
        load_before = load_average()
        try:
            result = measure(settings, waiting, args.repeats, args.idle_s, stand_in)
        finally:
            if dropped is not None:
                drop_schema(*dropped)
        result["load"] = f"{load_before} -> {load_average()}"
        rows.append((label, backend, waiting, result))
        print(f"{label:<28} {backend:<10} {waiting:>6} waiting: {result}", flush=True)

    # address="local": always a new instance, never another one running on this machine
    ray.init(address="local", num_gpus=2, namespace="wattsched", include_dashboard=False, log_to_driver=False)
    try:
        for backend in args.backends:
            for waiting in args.sizes:
                row("2 logical GPUs", backend, waiting)
    finally:
        shutdown_controller()
        ray.shutdown()
    if args.big_gpus:
        ray.init(address="local", num_gpus=0, namespace="wattsched", include_dashboard=False, log_to_driver=False)
        try:
            stand_in = ray.remote(StandInController).options(max_concurrency=16).remote(args.big_gpus,
                                                                                        args.big_nodes)
            row(f"{args.big_gpus} GPUs, {args.big_nodes} nodes*", args.backends[0], args.big_waiting, stand_in)
        finally:
            ray.shutdown()

    print(f"\nmachine: {os.cpu_count()} CPUs, Ray {ray.__version__}, policy fifo; idle window {args.idle_s:g} s, "
          f"{args.repeats} submissions a row")
    print(f"{'cluster':<28} {'database':<10} {'waiting':>7} {'ready (s)':>9} {'idle CPU (cores)':>16} "
          f"{'submit->running median (s)':>26} {'max (s)':>8}  load average")
    for label, backend, waiting, r in rows:
        print(f"{label:<28} {backend:<10} {waiting:>7} {r['ready_s']:>9.1f} {r['idle_core']:>16.3f} "
              f"{r['median_s']:>26.3f} {r['max_s']:>8.3f}  {r['load']}")
    if args.big_gpus:
        print("* the controller is a stand-in actor without worker processes (see the docstring)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
