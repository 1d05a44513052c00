"""One node's processes of a job: laid out as ranks, spawned, supervised and stopped by the job's protocol.

A job of several GPUs runs as a gang. On each node, ``NodeLayout`` says where the node stands in it (its GPUs,
its rank among the nodes, the rendezvous address) and gives each of its processes torchrun's environment:

- ``per-gpu``: one process per GPU, with ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``,
  ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``NODE_RANK`` and ``CUDA_VISIBLE_DEVICES`` naming that process's GPU;
- ``per-node``: one process with all the node's GPUs and ``NNODES``, ``NODE_RANK``, ``MASTER_ADDR``,
  ``MASTER_PORT``, for a script that runs ``torchrun`` or ``accelerate launch`` itself.

``Launcher`` spawns a node's processes, each in its own session (so that a signal to its process group reaches
its helpers too, and never the worker), and supervises them: when one fails while no stop was asked, the others
are stopped (the stop signal, the grace, then SIGKILL) and ``failure`` names the rank and the cause. Stopping
follows the job's protocol (Slurm's ``--signal`` habit): ``stop()`` sends the stop signal once to every process
group and SIGKILLs whatever is left after the grace.

A single-node job has one launcher, in its worker; a multi-node gang has one per node, with the layout's
``node_rank``, ``nnodes`` and the rank-0 node's ``master_addr`` and ``master_port``. Torch-free, stdlib only.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)

LAUNCH_MODES = ("per-gpu", "per-node")
#: The rendezvous address of a gang on one node.
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` now (the kernel's pick), for a gang's rendezvous on this node."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class NodeLayout:
    """Where one node's processes stand in their job's gang.

    gpu_ids: this node's GPUs, as CUDA_VISIBLE_DEVICES names them (logical ids on logical GPUs).
    mode: ``per-gpu`` (one process per GPU) or ``per-node`` (one process with all of them).
    node_rank, nnodes: this node's rank among the gang's nodes, and how many there are.
    master_addr, master_port: the rank-0 process's rendezvous (MASTER_ADDR, MASTER_PORT).
    """

    gpu_ids: tuple[Any, ...]
    mode: str = "per-gpu"
    node_rank: int = 0
    nnodes: int = 1
    master_addr: str = LOOPBACK
    master_port: int = 0

    def __post_init__(self) -> None:
        if self.mode not in LAUNCH_MODES:
            raise ValueError(f"mode must be one of {', '.join(LAUNCH_MODES)}, got {self.mode!r}")
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} does not fit nnodes {self.nnodes}")

    @property
    def processes(self) -> int:
        """Processes on this node."""
        return max(1, len(self.gpu_ids)) if self.mode == "per-gpu" else 1

    @property
    def world_size(self) -> int:
        """Processes of the whole gang (every node runs as many)."""
        return self.nnodes * self.processes

    def rank_envs(self) -> list[tuple[int, dict[str, str]]]:
        """(rank, the variables that place it in the gang) for each process of this node, lowest rank first.

        A per-node process's rank is its node's rank.
        """
        common = {"MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port),
                  "NODE_RANK": str(self.node_rank)}
        every_gpu = ",".join(str(g) for g in self.gpu_ids)
        if self.mode == "per-node":
            return [(self.node_rank, {**common, "NNODES": str(self.nnodes), "CUDA_VISIBLE_DEVICES": every_gpu})]
        envs = []
        for local_rank in range(self.processes):
            rank = self.node_rank * self.processes + local_rank
            gpu = str(self.gpu_ids[local_rank]) if self.gpu_ids else ""
            envs.append((rank, {**common, "WORLD_SIZE": str(self.world_size), "RANK": str(rank),
                                "LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": str(self.processes),
                                "GROUP_RANK": str(self.node_rank), "CUDA_VISIBLE_DEVICES": gpu}))
        return envs


@dataclass(frozen=True)
class ProcessSpec:
    """One process to spawn: its rank in the gang, its command line, its whole environment, where it runs."""

    rank: int
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str


@dataclass(frozen=True)
class RankFailure:
    """The first process of a node that failed while no stop was asked: its rank and why it ended."""

    rank: int
    returncode: int
    cause: str  # "exited with code 3", "was killed by SIGSEGV", "was killed by SIGKILL (killed: out of memory?)"


def describe_returncode(returncode: int | None, killed_by_us: bool = False) -> str:
    """How a process ended, in words: its exit code or the name of the signal that ended it.

    A SIGKILL the launcher did not send is most often the kernel's OOM killer (the kernel's log, which would
    tell, is usually not readable by a worker): the words say so as a hint.
    """
    if returncode is None:
        return "did not start"
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    if -returncode == signal.SIGKILL and not killed_by_us:
        return f"was killed by {name} (killed: out of memory?)"
    return f"was killed by {name}"


class Launcher:
    """Spawns one node's processes of a job and supervises them (see the module docstring).

    stop_signal: the signal that asks the job to stop; grace_s: seconds from it to SIGKILL.
    stdout, stderr: where every process writes (a file, ``subprocess.PIPE``, or None to inherit); with PIPE,
    each process's ``stdout`` is read by the caller (``popens``).
    on_exit: called with (rank, returncode) as each process ends, from the thread that waited for it.
    """

    def __init__(self, processes: Sequence[ProcessSpec], stop_signal: int = signal.SIGTERM, grace_s: float = 120.0,
                 *, stdout: IO | int | None = None, stderr: IO | int | None = None,
                 on_exit: Callable[[int, int], None] | None = None):
        if not processes:
            raise ValueError("a launcher needs at least one process")
        self.specs = list(processes)
        self.stop_signal = int(stop_signal)
        self.grace_s = float(grace_s)
        self._stdout, self._stderr, self._on_exit = stdout, stderr, on_exit
        self._lock = threading.Lock()
        self._all_exited = threading.Event()
        self._kill_timer: threading.Timer | None = None
        self._supervised = False
        self.popens: list[subprocess.Popen] = []
        self.returncodes: dict[int, int] = {}  # rank -> returncode, as processes end
        self.stop_reason: str | None = None  # why a stop was asked (None: it was not)
        self.signalled = False  # True once the stop signal was sent (a stop asked after every process ended sends none)
        self.killed = False  # True once the launcher has sent SIGKILL
        self.failure: RankFailure | None = None

    # --- life ----------------------------------------------------------------------------------------------

    def start(self, supervise: bool = True) -> None:
        """Spawn every process; if one cannot be spawned, kill those already started and raise OSError.

        supervise: start waiting for the processes now; False leaves it to ``supervise()``, so that a process
        that ends at once stays (a zombie) until then, for whoever must look at it first (the energy meters).
        """
        try:
            for spec in self.specs:
                self.popens.append(subprocess.Popen(
                    list(spec.argv), env=dict(spec.env), cwd=spec.cwd, stdin=subprocess.DEVNULL,
                    stdout=self._stdout, stderr=self._stderr, start_new_session=True,
                    text=self._stdout == subprocess.PIPE, bufsize=1 if self._stdout == subprocess.PIPE else -1))
        except OSError:
            self.signal_all(signal.SIGKILL)
            for popen in self.popens:
                popen.wait()
            raise
        if supervise:
            self.supervise()

    def supervise(self) -> None:
        """Wait for each process in a thread of its own, and act as they end (see the class docstring)."""
        with self._lock:
            if self._supervised:
                return
            self._supervised = True
        for spec, popen in zip(self.specs, self.popens):
            threading.Thread(target=self._wait_for, args=(spec.rank, popen), name=f"rank-{spec.rank}",
                             daemon=True).start()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.popens]

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until every process has ended (at most ``timeout_s``); True when they have."""
        return self._all_exited.wait(timeout_s)

    @property
    def exited(self) -> bool:
        return self._all_exited.is_set()

    # --- stopping ------------------------------------------------------------------------------------------

    def stop(self, reason: str = "asked") -> bool:
        """Send the stop signal to every process group, once, and SIGKILL what is left after the grace.

        Returns True when this call sent the signal; False when a stop was already under way (a second signal
        could interrupt a checkpoint) or every process had ended.
        """
        with self._lock:
            if self.stop_reason is not None:
                return False
            self.stop_reason = reason
            if self._all_exited.is_set():
                return False
            self.signalled = True
            self._kill_timer = threading.Timer(self.grace_s, self._kill_after_grace)
            self._kill_timer.daemon = True
            self._kill_timer.start()
        self.signal_all(self.stop_signal)
        return True

    def kill(self) -> None:
        """SIGKILL every process group now (what the grace ends in, and the clean-up once the job is over)."""
        with self._lock:
            self.killed = True
        self.signal_all(signal.SIGKILL)

    def signal_all(self, sig: int) -> None:
        """Signal every process's group (each is its own session's leader), ended ones' leftovers included."""
        for popen in self.popens:
            try:
                os.killpg(popen.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _kill_after_grace(self) -> None:
        if not self._all_exited.is_set():
            log.warning("processes %s did not end within %gs of %s; killing them",
                        [p.pid for p in self.popens if p.poll() is None], self.grace_s,
                        signal.Signals(self.stop_signal).name)
            self.kill()

    # --- supervision ---------------------------------------------------------------------------------------

    def _wait_for(self, rank: int, popen: subprocess.Popen) -> None:
        returncode = popen.wait()
        with self._lock:
            self.returncodes[rank] = returncode
            first_failure = returncode != 0 and self.stop_reason is None and self.failure is None
            if first_failure:
                self.failure = RankFailure(rank, returncode, describe_returncode(returncode, self.killed))
            done = len(self.returncodes) == len(self.popens)
        if first_failure and not done:
            log.warning("rank %d %s; stopping the other processes", rank, self.failure.cause)
            self.stop(f"rank {rank} {self.failure.cause}")
        if self._on_exit is not None:
            self._on_exit(rank, returncode)
        if done:
            with self._lock:
                if self._kill_timer is not None:
                    self._kill_timer.cancel()
            self._all_exited.set()
