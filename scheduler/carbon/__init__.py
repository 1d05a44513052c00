"""The grid's carbon intensity and the emissions charged to runs.

``signal`` is what the scheduler asks of a grid (readings, forecasts, the built-in synthetic signal) and how
energy becomes emissions; ``providers/`` fetches and caches real signals (Electricity Maps, WattTime, the UK
Carbon Intensity API, trace files, static values); ``trace_file`` is the one reader of carbon-trace CSV files;
``grid`` is the daemon's view of every zone's signal; ``emissions`` charges finished runs.
"""
