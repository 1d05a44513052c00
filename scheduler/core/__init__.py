"""The one scheduling core: snapshot -> policy -> decisions checked and applied through an executor.

The daemon and the simulator both drive it (as httpx drives one auth flow from two I/O loops): the daemon with
the Ray controller as its executor and the wall clock, the simulator with its virtual cluster and a virtual
clock. What a decision may do (which job, which zone, which cap, how much room and power) is checked here once,
so both agree on what a policy is allowed to answer.
"""

from scheduler.core.cycle import Executor, SchedulingCore  # noqa: F401  (the package's interface)
