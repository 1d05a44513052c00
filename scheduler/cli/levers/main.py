"""``wattsched levers``: run the study's grid on a daemon and write its report.

::

    wattsched levers --out levers-report                       # the embedded daemon on this machine
    wattsched levers --url http://head:8765 --token T --out r  # a cluster's daemon (real GPUs: NVML, measured)
    wattsched levers --data /path/to/reference-data            # also the simulated scheduling levers
    wattsched levers --out levers-report --report-only         # the report again from records.json

Without ``--url`` (or WATTSCHED_URL) the jobs run on an embedded daemon: a local Ray with logical GPUs in this
process, its database in ``OUT/daemon``, so that running the command again reuses the jobs already done there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from scheduler.cli.levers.grid import GRIDS

RECORDS_FILE = "records.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("wattsched-levers"),
                        help="folder for report.md, the charts, records.json and the embedded daemon's data "
                             "(default ./wattsched-levers)")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default",
                        help="default: about ten minutes of jobs on a 2-core CPU, 8x8 digits; gpu: larger models "
                             "for a GPU per job; tiny: seconds per job (tests)")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="reference data (carbon/lets-wait-awhile-2020, jobs/gaia, power/zeus-power-limit-"
                             "sweeps) for the simulated scheduling levers; skipped without it")
    parser.add_argument("--sim-jobs", type=int, default=300, help="jobs in the simulated workload (default 300)")
    parser.add_argument("--fid-target", type=float,
                        help="the FID-lite the families' training must reach (default: the worst final one)")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report again from OUT/records.json, submitting nothing")


def main(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    grid = GRIDS[args.grid]()
    if args.report_only:
        saved = json.loads((out / RECORDS_FILE).read_text(encoding="utf-8"))
        return _report(args, saved["records"], saved["context"])
    url = getattr(args, "url", None) or os.environ.get("WATTSCHED_URL")
    began = time.monotonic()
    if url:
        from scheduler.client import Client

        client = Client(url=url, token=getattr(args, "token", None))
        where = f"the daemon at {client.url}"
        records = _run(client, grid, began)
    else:
        records, where = _run_embedded(out / "daemon", grid, began)
    wall_s = time.monotonic() - began
    context = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"wattsched levers --grid {args.grid}" + (f" --data {args.data}" if args.data else "")
                   + (" --url URL" if url else ""),
        "commit": _commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "daemon": where,
        "grid": f"{grid.name} ({len(grid.jobs)} jobs; {sum(r['reused'] for r in records)} reused from an earlier "
                f"run)",
        "wall time": f"{wall_s:.0f} s (from the command's start, daemon start included, to the last job's end)",
    }
    (out / RECORDS_FILE).write_text(json.dumps({"context": context, "records": records}, indent=1, default=str),
                                    encoding="utf-8")
    return _report(args, records, context)


def _report(args: argparse.Namespace, records: list[dict], context: dict) -> int:
    from scheduler.cli.levers.report import write_report

    scheduling, note = None, "pass --data with the reference traces"
    if args.data is not None:
        from scheduler.cli.levers import scheduling as sim

        absent = sim.missing(args.data)
        if absent:
            note = f"the reference data under {args.data} lacks {', '.join(absent)}"
        else:
            print(f"simulating the scheduling levers on {args.sim_jobs} jobs ...", flush=True)
            scheduling = sim.scheduling_rows(args.data, args.sim_jobs)
            note = f"{args.sim_jobs} jobs sampled (seed 0); each lever against fifo on the same jobs."
    path = write_report(args.out, records, context, scheduling, note, args.fid_target)
    print(f"report: {path}")
    failed = [r["name"] for r in records if (r.get("job") or {}).get("state") != "succeeded"]
    if failed:
        print(f"wattsched levers: error: {len(failed)} jobs did not succeed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _run(client, grid, began: float) -> list[dict]:
    from scheduler.cli.demo import ProgressLine
    from scheduler.cli.levers.runner import submit_grid, wait_for

    records = submit_grid(client, grid)
    line = ProgressLine()
    wait_for(client, records, lambda text: line.show(time.monotonic() - began, text))
    line.done()
    return [record.to_dict() for record in records]


def _run_embedded(data_dir: Path, grid, began: float) -> tuple[list[dict], str]:
    """The grid on a daemon started in this process (local Ray with logical GPUs), its data in ``data_dir``."""
    import ray

    from scheduler.client import Client
    from scheduler.cluster.controller import shutdown_controller
    from scheduler.config import Settings
    from scheduler.daemon.daemon import Daemon

    settings = replace(Settings.from_env(), data_dir=data_dir, database_url="", port=0, ray_address="",
                       policy="fifo", carbon_config="")
    where = (f"embedded (local Ray, {settings.logical_gpus} logical GPUs: no GPU hardware, so GPU energy comes "
             f"from the simulated meter as a {settings.logical_gpu_type}; CPU energy from RAPL or an estimate)")
    print(f"wattsched levers: {grid.name} grid on an {where}; data in {data_dir}", flush=True)
    daemon = Daemon(settings).start()
    try:
        return _run(Client(url=daemon.url, token=daemon.token), grid, began), where
    finally:
        daemon.stop()
        shutdown_controller()
        ray.shutdown()


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
