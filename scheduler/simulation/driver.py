"""One simulation from files to RESULT.json: load, pick the policy and forecast, run, account, write."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from policies.builtin import create_policy
from scheduler.simulation.engine import Simulation
from scheduler.simulation.forecasts import make_forecast
from scheduler.simulation.inputs import Cluster, Job, load_cluster, load_jobs, load_profiles
from scheduler.simulation.result import build_result, write_result
from policies.snapshot import PowerProfile


def simulate(cluster: Cluster, jobs: list[Job], policy: str, forecast: str = "perfect", seed: int = 0,
             profiles: dict[str, PowerProfile] | None = None, **policy_config: Any) -> dict[str, Any]:
    """The RESULT.json document of one run (``summary.wall_s`` is this call's wall time, loading excluded);
    ``policy_config`` goes to the policy's factory."""
    began = time.perf_counter()
    sim = Simulation(cluster, jobs, profiles or {}, create_policy(policy, **policy_config),
                     make_forecast(forecast, cluster, seed))
    runs = sim.run()
    return build_result(runs, cluster, policy, forecast, seed, time.perf_counter() - began, sim.decision_rounds)


def simulate_files(cluster_path: Path | str, jobs_path: Path | str, policy: str, forecast: str = "perfect",
                   seed: int = 0, profiles_path: Path | str | None = None,
                   out_path: Path | str | None = None) -> dict[str, Any]:
    cluster = load_cluster(cluster_path)
    profiles = load_profiles(profiles_path)
    jobs = load_jobs(jobs_path, cluster, profiles)
    create_policy(policy)  # an unknown name fails before the run, listing the valid ones
    make_forecast(forecast, cluster, seed)
    result = simulate(cluster, jobs, policy, forecast, seed, profiles)
    if out_path is not None:
        write_result(result, out_path)
    return result
