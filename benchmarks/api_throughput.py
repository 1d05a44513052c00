"""Sustained submissions per second through the Python client, with p50/p99 latency, on PostgreSQL.

::

    .venv/bin/python benchmarks/api_throughput.py [--db URL] [--threads 8] [--seconds 20]

The daemon runs in its own process with its REST API only (``Daemon.start_api_only``: no Ray, no scheduling,
so every submission stays queued; this measures the API, authentication, validation, idempotency check and
the database insert, which is the submission path). Client threads each hold one ``Client`` (its own
connection pool) and submit ``diffusion-train`` jobs back to back, every one with its idempotency key; each
latency is one ``Client.submit`` call as the user sees it. A fresh PostgreSQL schema is made and dropped.
Not a test: it prints figures, it asserts nothing but that every job exists once.
"""

from __future__ import annotations

import argparse
import json
import os
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


def serve(db_url: str, data_dir: str) -> None:
    """The daemon process: API only, until stdin closes."""
    from dataclasses import replace

    from scheduler.config import Settings
    from scheduler.daemon.daemon import Daemon

    settings = replace(Settings.from_env(environ={}), data_dir=Path(data_dir), database_url=db_url, port=0)
    daemon = Daemon(settings).start_api_only()
    print(json.dumps({"url": daemon.url, "token": daemon.token}), flush=True)
    sys.stdin.read()
    daemon.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=DEFAULT_DB, help="PostgreSQL URL (a fresh schema is used in it)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to submit (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted at the start")
    parser.add_argument("--serve", nargs=2, metavar=("DB", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0

    from sqlalchemy import create_engine, text

    from scheduler.client import Client

    schema = f"wattsched_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.db)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{args.db}{'&' if '?' in args.db else '?'}options=-csearch_path%3D{schema}"
    data_dir = tempfile.mkdtemp(prefix="wattsched-bench-")
    server = subprocess.Popen([sys.executable, __file__, "--serve", url, data_dir], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        address = json.loads(server.stdout.readline())
        latencies: list[tuple[float, float]] = []  # (finished at, seconds)
        errors: list[str] = []
        lock = threading.Lock()
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
        for t in threads:
            t.join()
        counted = [lat for at, lat in latencies if at >= started + args.warmup]
        with Client(address["url"], address["token"]) as client:
            total = client._request("GET", "/v1/jobs", params={"limit": 1})["total"]
        rate = len(counted) / args.seconds
        print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; daemon: API only (no Ray), "
              f"PostgreSQL; {args.threads} client threads in another process")
        print(f"submissions: {len(counted)} in {args.seconds:g} s after {args.warmup:g} s warm-up = {rate:.0f}/s")
        print(f"latency per submit: p50 {percentile(counted, 50) * 1000:.1f} ms, "
              f"p99 {percentile(counted, 99) * 1000:.1f} ms, mean {statistics.mean(counted) * 1000:.1f} ms")
        print(f"jobs in the database: {total} (submitted {len(latencies)}), errors: {len(errors)}"
              + (f" e.g. {errors[0]}" if errors else ""))
        assert total == len(latencies), "a submission was lost or duplicated"
    finally:
        server.stdin.close()
        server.wait(timeout=30)
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
