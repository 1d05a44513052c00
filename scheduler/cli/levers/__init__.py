"""``wattsched levers``: what the energy levers of diffusion training and sampling are worth, measured.

It submits a grid of small jobs (``grid``) through a daemon (``runner``), waits, and writes a report (``report``)
from the energy the daemon recorded, each figure labelled with how it was obtained; the scheduling levers come
from the simulator on reference traces (``scheduling``). ``main`` is the command.
"""
