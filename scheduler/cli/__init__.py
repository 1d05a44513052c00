"""The ``wattsched`` command line: commands, tables, plots and the demo. Talks to the daemon through the client."""
