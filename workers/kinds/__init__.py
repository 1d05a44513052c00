"""Job kinds: every kind's knowledge (spec, work units, rates, whether it can be suspended, how it runs) behind
one interface, ``JobKind``, registered by name in a ``KindRegistry``.

Built in (``builtin_kinds()``): ``diffusion-train`` and ``diffusion-sample`` (their loops are in
``workers.diffusion``), and ``synthetic``, a paced load that checkpoints, for testing a setup. The scheduler
and the job process ask a registry; nothing else keeps tables per kind. Importing this package is cheap: no
torch (the scheduler and the client-side CLI import it).
"""

from workers.kinds.base import JOB_REF_PREFIX, JobContext, JobKind, ReferencedJob
from workers.kinds.registry import KindRegistry, builtin_kinds

__all__ = ["JOB_REF_PREFIX", "JobContext", "JobKind", "KindRegistry", "ReferencedJob", "builtin_kinds"]
