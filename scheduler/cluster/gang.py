"""A gang's run as one run: the events of its nodes' lead workers combined into the events of a one-node run.

A job over several nodes runs one launcher per node, each in that node's lead worker, which meters the node's
GPUs and CPU and reports its own ``Started``, ``Progress`` and ``Finished``. The daemon records one run with one
energy record, so the controller passes each node's events through a ``GangRun``:

- ``Started``: one, once every node has started (rank 0's pid, every node's pids, every GPU);
- ``Progress``: the gang's power samples, each the sum over the nodes of their latest cumulative sample (a node's
  energies are cumulative since its start, so a sum of latest values is the gang's energy so far);
- ``Finished``: one, once every node has finished: the first node that failed while no stop was asked names the
  gang's failure (its rank, node and cause); else a stop asked is reported as asked; else succeeded. Energy is
  the sum over the nodes; the result is rank 0's with ``nodes``, the per-node breakdown (node, node rank, GPUs,
  energy, samples, how it ended), which ``wattsched status`` shows.

Plain Python, no Ray: the controller calls it under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workers.events import ExitStatus, Finished, Progress, Started
from workers.meters.recorder import EnergyTotals, PowerSample

#: The result's key for the per-node breakdown of a gang's run.
NODES_KEY = "nodes"


@dataclass
class GangNode:
    """One node of a gang as the controller follows it."""

    node_id: str
    node_rank: int
    lead: str  # the worker that runs the node's launcher
    worker_ids: list[str]
    ranks: list[int]  # the global ranks of its processes
    started: Started | None = None
    finished: Finished | None = None
    last_sample: PowerSample | None = None
    samples: int = 0  # power samples it reported
    progress: dict = field(default_factory=dict)


class GangRun:
    """Combines the per-node events of one run of a gang (see the module docstring)."""

    def __init__(self, job_id: str, run_id: Any, nodes: list[GangNode]):
        self.job_id, self.run_id, self.nodes = job_id, run_id, nodes
        self._by_worker = {n.lead: n for n in nodes}
        self.started: Started | None = None
        self.first_failure: GangNode | None = None
        self.stop_asked = False  # a stop the scheduler asked (cancel, suspend): failures that follow are its doing
        self.peak_power_w = 0.0

    def node_of(self, worker_id: str) -> GangNode | None:
        return self._by_worker.get(worker_id)

    def on_started(self, event: Started) -> Started | None:
        """The gang's Started once every node has reported its own; None before."""
        node = self._by_worker.get(event.worker_id)
        if node is None or node.started is not None:
            return None
        node.started = event
        if self.started is not None or any(n.started is None for n in self.nodes):
            return None
        rank0 = self.nodes[0].started
        self.started = Started(
            job_id=self.job_id, run_id=self.run_id, worker_id=rank0.worker_id, node_id=rank0.node_id,
            gpu_ids=tuple(g for n in self.nodes for g in n.started.gpu_ids), pid=rank0.pid,
            at=min(n.started.at for n in self.nodes), gpu_method=rank0.gpu_method, cpu_method=rank0.cpu_method,
            power_cap=rank0.power_cap, pids=tuple(p for n in self.nodes for p in (n.started.pids or (n.started.pid,))))
        return self.started

    def on_progress(self, event: Progress) -> Progress | None:
        """The gang's progress: rank 0's latest line (or any node's while rank 0 has none) and the gang's samples."""
        node = self._by_worker.get(event.worker_id)
        if node is None:
            return None
        if event.progress:
            node.progress = dict(event.progress)
        combined = []
        for sample in event.samples:
            node.last_sample = sample
            node.samples += 1
            total = self._sum_latest()
            if total is not None:
                combined.append(total)
                self.peak_power_w = max(self.peak_power_w, total.gpu_power_w + total.cpu_power_w)
        return Progress(job_id=self.job_id, run_id=self.run_id, at=event.at, progress=self.progress,
                        samples=tuple(combined), worker_id=self.nodes[0].lead)

    @property
    def progress(self) -> dict:
        return next((dict(n.progress) for n in self.nodes if n.progress), {})

    @property
    def last_sample(self) -> PowerSample | None:
        """The gang's latest combined sample (None until every node has one)."""
        return self._sum_latest()

    def _sum_latest(self) -> PowerSample | None:
        latest = [n.last_sample for n in self.nodes]
        if any(s is None for s in latest):
            return None
        return PowerSample(max(s.timestamp_s for s in latest), *(sum(s[i] for s in latest) for i in range(1, 5)))

    def on_finished(self, event: Finished) -> tuple[GangNode | None, Finished | None]:
        """(the node whose failure must stop the others, or None; the gang's Finished once every node has ended)."""
        node = self._by_worker.get(event.worker_id)
        if node is None or node.finished is not None:
            return None, None
        node.finished = event
        for sample in event.samples:
            node.last_sample, node.samples = sample, node.samples + 1
        stop_others = None
        if event.exit_status is ExitStatus.FAILED and self.first_failure is None and not self.stop_asked:
            self.first_failure = stop_others = node
        if any(n.finished is None for n in self.nodes):
            return stop_others, None
        return stop_others, self._combined_finish()

    def _combined_finish(self) -> Finished:
        ends = [n.finished for n in self.nodes]
        rank0 = ends[0]
        if self.first_failure is not None:
            status, error = ExitStatus.FAILED, self.failure_reason(self.first_failure)
            exit_code = self.first_failure.finished.exit_code
        else:
            statuses = {e.exit_status for e in ends}
            if statuses == {ExitStatus.SUCCEEDED}:
                status = ExitStatus.SUCCEEDED
            else:  # a stop asked: reported as asked (a cancel overrides a suspension)
                stopped = [s for s in (ExitStatus.CANCELLED, ExitStatus.SUSPENDED, ExitStatus.FAILED) if s in statuses]
                status = stopped[0] if stopped else rank0.exit_status
            error = next((f"node {n.node_id[:12]}: {n.finished.error}" for n in self.nodes if n.finished.error),
                         None) if status is ExitStatus.FAILED else None
            exit_code = rank0.exit_code
        result = dict(rank0.result or {})
        result[NODES_KEY] = self.breakdown()
        return Finished(job_id=self.job_id, run_id=self.run_id, worker_id=rank0.worker_id, at=max(e.at for e in ends),
                        exit_status=status, exit_code=exit_code, result=result, error=error,
                        energy=sum_energy([e.energy for e in ends]), samples=self._final_samples(),
                        power_cap=rank0.power_cap)

    def _final_samples(self) -> tuple[PowerSample, ...]:
        last = self._sum_latest()
        return (last,) if last is not None else ()

    def failure_reason(self, node: GangNode) -> str:
        """Why the gang failed, naming the node's ranks, the node and the cause.

        The node's error is its stderr's last lines above its cause; the cause stays last, now naming rank and
        node, since the last line is what the job's reason shows.
        """
        lines = (node.finished.error or "").strip().splitlines()
        tail, cause = lines[:-1], (lines[-1] if lines else "failed")
        ranks = ", ".join(str(r) for r in node.ranks)
        named = (f"node {node.node_id[:12]} (node rank {node.node_rank} of {len(self.nodes)}, rank {ranks}): "
                 f"{cause}; the other nodes were stopped")
        return "\n".join([*tail, named])

    def breakdown(self) -> list[dict[str, Any]]:
        """Per node: node id, node rank, GPUs, ranks, how it ended, its energy (J) and samples."""
        rows = []
        for n in self.nodes:
            energy = n.finished.energy if n.finished else None
            last = n.last_sample
            rows.append({
                "node_id": n.node_id, "node_rank": n.node_rank, "worker_id": n.lead, "ranks": list(n.ranks),
                "gpu_ids": list(n.started.gpu_ids) if n.started else list(n.worker_ids),
                "exit_status": n.finished.exit_status.value if n.finished else None,
                "gpu_energy_j": energy.gpu_energy_j if energy else (last.gpu_energy_j if last else None),
                "cpu_energy_j": energy.cpu_energy_j if energy else (last.cpu_energy_j if last else None),
                "samples": n.samples,
            })
        return rows

    def lost_energy(self) -> EnergyTotals | None:
        """The gang's energy up to the last samples the controller saw (its node was lost)."""
        started, last = self.started, self._sum_latest()
        if started is None or last is None:
            return None
        duration_s = max(0.0, last.timestamp_s - started.at)
        energy_j = last.gpu_energy_j + last.cpu_energy_j
        return EnergyTotals(gpu_energy_j=last.gpu_energy_j, cpu_energy_j=last.cpu_energy_j,
                            gpu_method=started.gpu_method, cpu_method=started.cpu_method,
                            avg_power_w=energy_j / duration_s if duration_s > 0 else 0.0,
                            peak_power_w=self.peak_power_w, duration_s=duration_s, started_s=started.at,
                            ended_s=last.timestamp_s)


def sum_energy(totals: list[EnergyTotals | None]) -> EnergyTotals | None:
    """The gang's energy: the nodes' energies summed, over the span from the first start to the last end.

    Methods are joined when the nodes metered differently (``nvml+simulated``). None when no node has totals.
    """
    known = [t for t in totals if t is not None]
    if not known:
        return None
    started_s, ended_s = min(t.started_s for t in known), max(t.ended_s for t in known)
    duration_s = max(0.0, ended_s - started_s)
    gpu_j, cpu_j = sum(t.gpu_energy_j for t in known), sum(t.cpu_energy_j for t in known)
    return EnergyTotals(
        gpu_energy_j=gpu_j, cpu_energy_j=cpu_j, gpu_method=_joined(t.gpu_method for t in known),
        cpu_method=_joined(t.cpu_method for t in known),
        avg_power_w=(gpu_j + cpu_j) / duration_s if duration_s > 0 else sum(t.avg_power_w for t in known),
        # the nodes' peaks need not coincide: their sum bounds the gang's peak from above
        peak_power_w=sum(t.peak_power_w for t in known), duration_s=duration_s, started_s=started_s,
        ended_s=ended_s)


def _joined(methods) -> str:
    return "+".join(dict.fromkeys(methods))

