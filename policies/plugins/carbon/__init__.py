"""Plugins that move work to cleaner hours and zones, at the cap that emits least, without missing deadlines.

``CarbonPlanner`` (PreFilter, ``planner``) computes each job's plan once per cycle from the forecast in the
snapshot; the other plugins read it from the CycleState:

- ``UrgencyFirst`` (QueueSort, ``urgency``): jobs whose slack is exhausted first (earliest latest-start first),
  then jobs by the carbon they would lose per GPU-hour of waiting, so scarce clean capacity goes where it saves
  most;
- ``CarbonOverRun`` (Score, ``score``): a zone's emissions if the job starts there now;
- ``CarbonWindow`` (Permit, ``window``): wait on purpose while a later start (or, for interruptible jobs, later
  pieces of time) is forecast to emit less and the deadline still holds;
- ``CarbonCap`` (CapChooser, ``cap``): the power cap that emits least while the deadline holds and the budget
  allows.
"""

from policies.plugins.carbon.cap import RESUME_MARGIN_S, CarbonCap
from policies.plugins.carbon.planner import PRESENT_MARGIN_G_PER_KWH, CarbonPlanner, JobPlan, plan_of
from policies.plugins.carbon.score import CarbonOverRun
from policies.plugins.carbon.urgency import UrgencyFirst
from policies.plugins.carbon.window import ROOM_MARGIN_S, CarbonWindow

__all__ = ["CarbonPlanner", "UrgencyFirst", "CarbonOverRun", "CarbonWindow", "CarbonCap", "JobPlan", "plan_of",
           "PRESENT_MARGIN_G_PER_KWH", "RESUME_MARGIN_S", "ROOM_MARGIN_S"]
