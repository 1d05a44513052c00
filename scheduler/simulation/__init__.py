"""The trace-driven simulator (``wattsched simulate``): the daemon's policies on a virtual clock and cluster.

- ``inputs``: CLUSTER.toml, JOBS.csv, PROFILES.csv, validated (errors name file, line, field);
- ``forecasts``: what a policy may see at virtual time t (perfect, persistence, noisy:REL_ERR);
- ``engine``: the event-driven run; ``result``: RESULT.json; ``driver``: files in, result out;
- ``checker``: an independent check of a result against its inputs; ``cli``: the command line.
"""
