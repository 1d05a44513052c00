"""Runs a job's process under a memory limit: ``python -m workers.memory_limit BYTES -- ARGV...``.

It sets the limit on itself, then becomes ARGV (exec), so the limit holds from the job's first instruction and for
every process it starts. The limit is RLIMIT_DATA, the memory a process may allocate (heap and private writable
mappings), rather than RLIMIT_AS, the address space: CUDA and some allocators reserve far more address space than
they ever use, which an address-space limit would refuse. A process that asks for more than its limit is refused
the memory (Python raises MemoryError, C's malloc returns NULL), is not killed by the kernel, and usually fails:
the job process reports it as "killed: memory limit" (``workers.job_process``). Memory its GPUs hold is not
counted.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Sequence

#: The variable that tells the job's process its limit (bytes), so that it can say why it failed.
LIMIT_VARIABLE = "WATTSCHED_MEMORY_LIMIT_BYTES"
GIB = 1024**3


def limited_argv(argv: Sequence[str], limit_bytes: int) -> list[str]:
    """The command line that runs ``argv`` under a memory limit of ``limit_bytes``."""
    return [sys.executable, "-m", "workers.memory_limit", str(int(limit_bytes)), "--", *argv]


def describe_limit(limit_bytes: int) -> str:
    return f"killed: memory limit of {limit_bytes / GIB:g} GiB reached"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        print("usage: python -m workers.memory_limit BYTES -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    limit_bytes, command = int(args[0]), args[2:]
    resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))
    os.environ[LIMIT_VARIABLE] = str(limit_bytes)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"cannot start {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127  # the shell's "command not found"
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
