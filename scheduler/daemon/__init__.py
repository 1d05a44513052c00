"""The scheduler daemon: its life cycle, the scheduling tick, and the events it records from the workers."""
