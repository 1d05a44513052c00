"""Sustained submissions per second through the Python client, with p50/p99 latency, on SQLite and PostgreSQL.

::

    .venv/bin/python benchmarks/api_throughput.py [--backend both|sqlite|postgres] [--db URL] [--threads 8]
        [--seconds 20] [--busy] [--profile FILE [--profile-clock cpu|wall]]

The daemon runs in its own process with its REST API only (``Daemon.start_api_only``: no Ray, no scheduling,
so every submission stays queued; this measures the API, authentication, validation, idempotency check and
the database insert, which is the submission path). Client threads each hold one ``Client`` (its own
connection pool) and submit ``diffusion-train`` jobs back to back, every one with its idempotency key; each
latency is one ``Client.submit`` call as the user sees it. PostgreSQL: a fresh schema is made and dropped;
SQLite: a database file in a fresh temporary directory.

``--busy``: a separate process spins on one core for the whole measurement (started here, ended by its PID),
as another program on the same machine would. ``--profile FILE``: every thread of the daemon process runs
under cProfile, counting CPU time (or wall time), and the merged statistics go to FILE (one per backend: the
backend's name is added before the suffix; read them with ``python -m pstats``).

Besides the rate and latencies, it reports per submission between the end of the warm-up and the end: the
SQL statements and commits the daemon's engine sent (a batch of submissions shares them), and the CPU time of
the daemon's process and of the client process; on a shared machine these say more than the rate, which
depends on what else runs.

Not a test: it prints figures, it asserts nothing but that every job exists once.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DB = os.environ.get("WATTSCHED_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SPEC = {"steps": 10, "image_size": 8, "batch_size": 8}
SPIN = "while True:\n    pass\n"  # the --busy process: one core, nothing else


def serve(db_url: str, data_dir: str, profile: str, clock: str) -> None:
    """The daemon process: API only, until stdin closes. It prints its address, then, between the lines "start"
    and "stop" on its stdin, counts the SQL statements and commits its engine sends (not the check of a pooled
    connection, made below SQLAlchemy's events) and its CPU time, and prints them as one JSON line."""
    import cProfile
    from dataclasses import replace

    from sqlalchemy import event

    from scheduler.config import Settings
    from scheduler.daemon.daemon import Daemon

    # cProfile follows one thread: each thread the daemon starts (the server's event loop, the request
    # threads) gets its own profiler, merged at the end.
    profilers: list[cProfile.Profile] = []

    def profile_this_thread(*_args) -> None:
        profiler = cProfile.Profile(time.thread_time) if clock == "cpu" else cProfile.Profile()
        profilers.append(profiler)
        profiler.enable()

    if profile:
        threading.setprofile(profile_this_thread)
    settings = replace(Settings.from_env(environ={}), data_dir=Path(data_dir), database_url=db_url, port=0)
    daemon = Daemon(settings).start_api_only()
    counts = {"statements": 0, "commits": 0}
    lock = threading.Lock()

    def count(key: str):
        def bump(*_args, **_kwargs) -> None:
            with lock:
                counts[key] += 1
        return bump

    # Counted from here: the schema upgrade and the local token are not submissions.
    event.listen(daemon.engine, "before_cursor_execute", count("statements"))
    event.listen(daemon.engine, "commit", count("commits"))
    print(json.dumps({"url": daemon.url, "token": daemon.token}), flush=True)
    sys.stdin.readline()  # "start": counting from the end of the warm-up
    with lock:
        counts.update(statements=0, commits=0)
    cpu_s = time.process_time()
    sys.stdin.readline()  # "stop"
    with lock:
        print(json.dumps({**counts, "cpu_s": time.process_time() - cpu_s}), flush=True)
    sys.stdin.read()
    daemon.stop()
    if profilers:
        threading.setprofile(None)
        stats = pstats.Stats(profilers[0])
        for profiler in profilers[1:]:
            stats.add(profiler)
        stats.dump_stats(profile)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(backend: str, args) -> None:
    """One run against one database; prints its figures."""
    from sqlalchemy import create_engine, text

    from scheduler.client import Client

    schema = f"wattsched_bench_{uuid.uuid4().hex[:8]}"
    data_dir = tempfile.mkdtemp(prefix="wattsched-bench-")
    admin = None
    if backend == "postgres":
        admin = create_engine(args.db)
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{args.db}{'&' if '?' in args.db else '?'}options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{data_dir}/wattsched.db"
    profile = ""
    if args.profile:
        stem, suffix = os.path.splitext(args.profile)
        profile = f"{stem}-{backend}{suffix or '.prof'}"
    server = subprocess.Popen([sys.executable, __file__, "--serve", url, data_dir, profile, args.profile_clock],
                              stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    spinner = None
    try:
        address = json.loads(server.stdout.readline())
        latencies: list[tuple[float, float]] = []  # (finished at, seconds)
        errors: list[str] = []
        lock = threading.Lock()
        if args.busy:
            spinner = subprocess.Popen([sys.executable, "-c", SPIN])
        load_before = load_average()
        started = time.monotonic()
        stop_at = started + args.warmup + args.seconds

        def submitter() -> None:
            with Client(address["url"], address["token"], timeout_s=30) as client:
                while time.monotonic() < stop_at:
                    t0 = time.perf_counter()
                    try:
                        client.submit("diffusion-train", SPEC, zones=["DE"])
                    except Exception as exc:  # counted and shown, never hidden
                        with lock:
                            errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    elapsed = time.perf_counter() - t0
                    with lock:
                        latencies.append((time.monotonic(), elapsed))

        threads = [threading.Thread(target=submitter) for _ in range(args.threads)]
        for t in threads:
            t.start()
        time.sleep(args.warmup)
        server.stdin.write("start\n")
        server.stdin.flush()
        with lock:
            at_start = len(latencies)
        client_cpu_s = time.process_time()
        for t in threads:
            t.join()
        client_cpu_s = time.process_time() - client_cpu_s
        server.stdin.write("stop\n")
        server.stdin.flush()
        sql = json.loads(server.stdout.readline())
        load_after = load_average()
        if spinner is not None:
            os.kill(spinner.pid, signal.SIGTERM)
            spinner.wait(timeout=10)
            spinner = None
        counted = [lat for at, lat in latencies if at >= started + args.warmup]
        with Client(address["url"], address["token"]) as client:
            total = client._request("GET", "/v1/jobs", params={"limit": 1})["total"]
        rate = len(counted) / args.seconds
        # statements counted between the two marks, per submission finished in between (near enough: a few
        # requests straddle each mark)
        between = max(1, len(latencies) - at_start)
        print(f"[{backend}] machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; daemon: API only "
              f"(no Ray); {args.threads} client threads in another process"
              + ("; one core kept busy by another process" if args.busy else ""))
        print(f"[{backend}] load average before {load_before}, after {load_after}")
        print(f"[{backend}] submissions: {len(counted)} in {args.seconds:g} s after {args.warmup:g} s warm-up "
              f"= {rate:.0f}/s")
        if counted:
            print(f"[{backend}] latency per submit: p50 {percentile(counted, 50) * 1000:.1f} ms, "
                  f"p99 {percentile(counted, 99) * 1000:.1f} ms, mean {statistics.mean(counted) * 1000:.1f} ms")
        print(f"[{backend}] SQL per submission: {sql['statements'] / between:.2f} statements, "
              f"{sql['commits'] / between:.2f} commits")
        print(f"[{backend}] CPU per submission: daemon {sql['cpu_s'] / between * 1000:.2f} ms, clients "
              f"{client_cpu_s / between * 1000:.2f} ms")
        print(f"[{backend}] jobs in the database: {total} (submitted {len(latencies)}), errors: {len(errors)}"
              + (f" e.g. {errors[0]}" if errors else ""))
        assert total == len(latencies), "a submission was lost or duplicated"
    finally:
        if spinner is not None:
            os.kill(spinner.pid, signal.SIGTERM)
            spinner.wait(timeout=10)
        server.stdin.close()
        server.wait(timeout=60)
        if admin is not None:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("both", "sqlite", "postgres"), default="both")
    parser.add_argument("--db", default=DEFAULT_DB, help="PostgreSQL URL (a fresh schema is used in it)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to submit (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted at the start")
    parser.add_argument("--busy", action="store_true", help="keep one core busy in another process meanwhile")
    parser.add_argument("--profile", default="", help="cProfile the daemon into this file (per backend)")
    parser.add_argument("--profile-clock", choices=("cpu", "wall"), default="cpu",
                        help="what the profile counts: each thread's CPU time (default) or wall time")
    parser.add_argument("--serve", nargs=4, metavar=("DB", "DIR", "PROFILE", "CLOCK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    for backend in (("sqlite", "postgres") if args.backend == "both" else (args.backend,)):
        measure(backend, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
