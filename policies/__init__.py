"""Pure scheduling decisions: given a snapshot of the world, what to start, where, at which cap, what to defer.

- ``snapshot`` / ``decisions``: what a policy sees and answers; ``status``: why "not now" or "never";
- ``framework``: the plugin pipeline (PreFilter, QueueSort, Filter, Score, Permit, CapChooser); ``gang``: how a
  job's GPUs are laid out on the nodes of one zone;
- ``plugins``: the built-in plugins, registered by name; ``fifo`` and ``carbon_aware``: the two profiles;
- ``forecast``, ``history_forecast``, ``carbon_plan``: the carbon signal as a policy may see it, and the
  arithmetic of cheapest starts and pieces of time;
- ``registry``: named factories (knows no policy or plugin); ``builtin``: the in-tree policies by name
  (``create_policy``).
"""
