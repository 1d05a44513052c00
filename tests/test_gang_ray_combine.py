"""A gang's per-node events combined into one run's (scheduler.cluster.gang): no Ray needed."""

from __future__ import annotations

from scheduler.cluster.gang import NODES_KEY, GangNode, GangRun, sum_energy
from workers.events import ExitStatus, Finished, Progress, Started
from workers.meters.recorder import EnergyTotals, PowerSample


def gang() -> GangRun:
    return GangRun("j", 1, [GangNode("node-a", 0, "a-gpu0", ["a-gpu0"], [0]),
                            GangNode("node-b", 1, "b-gpu0", ["b-gpu0"], [1])])


def started(worker: str, node: str, pid: int, at: float) -> Started:
    return Started(job_id="j", run_id=1, worker_id=worker, node_id=node, gpu_ids=(worker,), pid=pid, at=at,
                   gpu_method="simulated", cpu_method="rapl", pids=(pid,))


def totals(gpu_j: float, cpu_j: float, start: float, end: float) -> EnergyTotals:
    return EnergyTotals(gpu_energy_j=gpu_j, cpu_energy_j=cpu_j, gpu_method="simulated", cpu_method="rapl",
                        avg_power_w=(gpu_j + cpu_j) / (end - start), peak_power_w=10.0, duration_s=end - start,
                        started_s=start, ended_s=end)


def finished(worker: str, status: ExitStatus, energy: EnergyTotals | None, error: str | None = None) -> Finished:
    return Finished(job_id="j", run_id=1, worker_id=worker, at=20.0, exit_status=status, error=error,
                    energy=energy, result={"stopped": False, "who": worker})


def test_one_started_once_every_node_has_started():
    g = gang()
    assert g.on_started(started("b-gpu0", "node-b", 22, 1.5)) is None
    combined = g.on_started(started("a-gpu0", "node-a", 11, 1.0))
    assert combined.pid == 11 and combined.pids == (11, 22) and combined.node_id == "node-a"
    assert combined.gpu_ids == ("a-gpu0", "b-gpu0") and combined.at == 1.0


def test_samples_are_the_sum_of_each_nodes_latest_and_energy_the_sum_of_the_nodes():
    g = gang()
    first = g.on_progress(Progress("j", 1, 2.0, {"step": 1}, (PowerSample(2.0, 100, 10, 100, 10),), "a-gpu0"))
    assert first.samples == ()  # node b has no sample yet: no gang-wide figure
    both = g.on_progress(Progress("j", 1, 2.1, {}, (PowerSample(2.1, 50, 5, 60, 6),), "b-gpu0"))
    assert both.samples == (PowerSample(2.1, 150, 15, 160, 16),) and both.progress == {"step": 1}

    failed, done = g.on_finished(finished("a-gpu0", ExitStatus.SUCCEEDED, totals(300, 30, 1.0, 20.0)))
    assert failed is None and done is None
    _, done = g.on_finished(finished("b-gpu0", ExitStatus.SUCCEEDED, totals(200, 20, 1.5, 19.0)))
    assert done.exit_status is ExitStatus.SUCCEEDED and done.error is None
    assert done.energy.gpu_energy_j == 500 and done.energy.cpu_energy_j == 50
    assert done.energy.started_s == 1.0 and done.energy.ended_s == 20.0
    assert done.result["who"] == "a-gpu0"  # rank 0's result
    nodes = {n["node_id"]: n for n in done.result[NODES_KEY]}
    assert nodes["node-a"]["gpu_energy_j"] == 300 and nodes["node-b"]["gpu_energy_j"] == 200
    assert nodes["node-a"]["samples"] == 1 and nodes["node-b"]["samples"] == 1


def test_the_first_failure_names_rank_and_node_and_stops_the_others():
    g = gang()
    failed, done = g.on_finished(finished("b-gpu0", ExitStatus.FAILED, None, "the command was killed by SIGKILL"))
    assert failed is g.nodes[1] and done is None
    # the other node, stopped because of it, reports a stop (or a failure of its own): the first one names the gang's
    failed, done = g.on_finished(finished("a-gpu0", ExitStatus.FAILED, totals(1, 1, 0, 1), "gloo: connection reset"))
    assert failed is None
    assert done.exit_status is ExitStatus.FAILED
    assert "rank 1" in done.error and "node-b" in done.error and "SIGKILL" in done.error
    assert "gloo" not in done.error


def test_a_stop_asked_is_reported_as_asked():
    g = gang()
    g.stop_asked = True
    g.on_finished(finished("a-gpu0", ExitStatus.SUSPENDED, None))
    failed, done = g.on_finished(finished("b-gpu0", ExitStatus.FAILED, None, "peer went away"))
    assert failed is None and done.exit_status is ExitStatus.SUSPENDED and done.error is None


def test_sum_energy_of_no_node_is_none():
    assert sum_energy([None, None]) is None


def test_status_shows_each_nodes_energy():
    from scheduler.cli.tables import _node_energy_lines

    g = gang()
    g.on_finished(finished("a-gpu0", ExitStatus.SUCCEEDED, totals(300, 30, 1.0, 20.0)))
    _, done = g.on_finished(finished("b-gpu0", ExitStatus.SUCCEEDED, totals(200, 20, 1.5, 19.0)))
    lines = dict(_node_energy_lines(done.result))
    assert "330 J" in lines["  node 0"] and "ranks 0" in lines["  node 0"] and "succeeded" in lines["  node 0"]
    assert "220 J" in lines["  node 1"] and "ranks 1" in lines["  node 1"]
    assert _node_energy_lines({"stopped": False}) == [] and _node_energy_lines(None) == []
