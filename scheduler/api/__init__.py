"""The REST API (FastAPI) and its Prometheus metrics: what crosses the network to the daemon."""
