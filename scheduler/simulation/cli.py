"""``wattsched simulate``: replay a job trace against carbon traces with a named policy (simulation.md).

    wattsched simulate --cluster CLUSTER.toml --jobs JOBS.csv --policy NAME
                       [--forecast perfect|persistence|noisy:REL_ERR] [--seed N]
                       [--power-profiles PROFILES.csv] [--out RESULT.json]

The lead's ``scheduler.cli.commands`` adds the sub-command with ``add_arguments`` and calls ``run``; ``python -m
scheduler.simulation`` runs it on its own.
"""

from __future__ import annotations

import argparse
import json
import sys

from policies.errors import PolicyError
from scheduler.errors import WattschedError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", required=True, help="CLUSTER.toml: zones, GPUs, carbon traces, power budget")
    parser.add_argument("--jobs", required=True, help="JOBS.csv: the job trace")
    parser.add_argument("--policy", required=True, help="a registered policy: fifo, carbon-aware, ...")
    parser.add_argument("--forecast", default="perfect", help="perfect | persistence | noisy:REL_ERR (default perfect)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noisy forecast (default 0)")
    parser.add_argument("--power-profiles", help="PROFILES.csv: speed and power per power cap")
    parser.add_argument("--out", help="where to write RESULT.json (default: print the summary only)")


def run(args: argparse.Namespace) -> int:
    """Run the simulation; print the summary as JSON. Input errors print one line and return 1."""
    # Imported here, not at the top: the driver needs numpy and numba (the simulate extra), and `wattsched
    # --help` builds this command's arguments without them.
    from scheduler.simulation.driver import simulate_files

    try:
        result = simulate_files(args.cluster, args.jobs, args.policy, forecast=args.forecast, seed=args.seed,
                                profiles_path=args.power_profiles, out_path=args.out)
    except (WattschedError, PolicyError) as exc:
        print(f"wattsched simulate: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result["summary"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wattsched simulate", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
