"""The ``command`` kind: the user's own code (``python train.py --lr 1e-4``), run as the worker's OS user.

The spec is the command line and, optionally, where it runs and what it adds to the environment:

    {"argv": ["python", "train.py", "--lr", "1e-4"], "cwd": "code", "env": {"HF_HOME": "/data/hf"}}

The worker starts its processes itself (``workers.launcher``: one per GPU with torchrun's environment, or one
per node) with the ``WATTSCHED_*`` variables of the protocol (``WATTSCHED_JOB_ID``, ``WATTSCHED_RUN``,
``WATTSCHED_JOB_DIR``, ``WATTSCHED_RESUMING``, ``WATTSCHED_PROGRESS``), so ``run`` is never called in a job
process. Its work is unknown to wattsched: the script's progress lines (``{"step", "total"}``, see
``workers.progress_file``) are all that tells it, so ``work_units`` is None. A command job may be marked
interruptible: its user asserts that it checkpoints and exits on the job's stop signal and resumes when
``WATTSCHED_RESUMING=1``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.errors import JobFailed, SpecError
from workers.kinds.base import JobContext, JobKind
from workers.kinds.spec_paths import check_at_launch
from workers.kinds.spec_fields import Rule, parse_fields, spec_field, to_dict, validate_fields

NAME = "command"
#: Arguments of a command line at most, and characters of one argument (or of cwd, or of an env value).
MAX_ARGS = 256
MAX_ARG_CHARS = 4096
#: Variables a spec's env may add at most.
MAX_ENV_VARS = 256
#: The prefix of the variables wattsched sets for the job, which a spec's env may not set.
RESERVED_PREFIX = "WATTSCHED_"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and "\0" not in value and len(value) <= MAX_ARG_CHARS


_ARGV = Rule(
    f"a list of 1 to {MAX_ARGS} strings (the command and its arguments), the first not empty, none holding NUL or "
    f"longer than {MAX_ARG_CHARS} characters",
    lambda v: isinstance(v, (list, tuple)) and 1 <= len(v) <= MAX_ARGS and all(_is_text(a) for a in v)
    and v[0].strip() != "",
    list,
)
_CWD = Rule(
    f"null or a path (relative paths are under the job's directory), not empty, without NUL, at most {MAX_ARG_CHARS}"
    " characters",
    lambda v: v is None or (_is_text(v) and v.strip() != ""),
)
_ENV = Rule(
    f"null or an object of at most {MAX_ENV_VARS} variables NAME: \"value\" (names of letters, digits and _; values"
    f" without NUL, at most {MAX_ARG_CHARS} characters); names starting {RESERVED_PREFIX} are wattsched's",
    lambda v: v is None or (isinstance(v, Mapping) and len(v) <= MAX_ENV_VARS and all(
        isinstance(k, str) and _ENV_NAME.fullmatch(k) and _is_text(x) for k, x in v.items())),
    lambda v: None if v is None else dict(v),
)


@dataclass(frozen=True)
class CommandSpec:
    """The user's command.

    argv: the command and its arguments, run without a shell (``["bash", "-c", "..."]`` asks for one).
    cwd: where it runs; a relative path is under the job's directory; null: the job's directory.
    env: variables added to the worker's environment; the launcher's (CUDA_VISIBLE_DEVICES, RANK, ...) and
        wattsched's (WATTSCHED_*) win over them.
    """

    argv: list = spec_field(None, _ARGV, required=True)
    cwd: str | None = spec_field(None, _CWD)
    env: dict | None = spec_field(None, _ENV)

    def __post_init__(self) -> None:
        validate_fields(self)
        for name in self.env or {}:
            if name.startswith(RESERVED_PREFIX):
                accepted = f"variables whose names do not start with {RESERVED_PREFIX} (wattsched sets those)"
                raise SpecError(f"spec.env.{name}: may not be set; give {accepted}"[:300], field=f"spec.env.{name}",
                                accepted=accepted)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


class Command(JobKind):
    """The user's own code. Interruptible when its user says so; its work units are its own progress lines'."""

    name = NAME
    interruptible = True
    process_per_gpu = True
    #: Spawning the processes; the interpreter and the script's imports are the script's own (unknown).
    startup_s = 1.0

    def parse(self, spec: Any) -> CommandSpec:
        return parse_fields(CommandSpec, self.name, spec)

    def validate(self, spec: Any) -> dict[str, Any]:
        return self.parse(spec).to_dict()

    def argv(self, spec: Mapping[str, Any]) -> list[str] | None:
        return list(spec["argv"])

    def paths(self, spec: Mapping[str, Any]) -> dict[str, str]:
        return {"cwd": spec["cwd"]} if spec.get("cwd") else {}

    def working_directory(self, spec: Mapping[str, Any], workdir: Path) -> Path:
        """The spec's cwd, checked again where the job runs; the job's directory when it gives none."""
        if not spec.get("cwd"):
            return workdir
        return check_at_launch("spec.cwd", spec["cwd"], workdir, folder_links=False)

    def work_units(self, spec: Mapping[str, Any]) -> float | None:
        """Unknown: only the job's own progress lines say (``total``)."""
        return None

    def nominal_s_per_unit(self, spec: Mapping[str, Any]) -> float | None:
        """Unknown: only the job's own runs say."""
        return None

    def units_done(self, spec: Mapping[str, Any], result: Mapping[str, Any] | None) -> float | None:
        # Units of one command are not those of another: no rate is learned across command jobs.
        return None

    def run(self, spec: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
        raise JobFailed("a command job's processes are started by its worker (workers.launcher), not in a job "
                        "process; submit it to a wattsched daemon")
