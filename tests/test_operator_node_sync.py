"""How often the daemon syncs its GPU workers with the cluster's nodes is a setting (WATTSCHED_NODE_SYNC_S)."""

from __future__ import annotations

import pytest

from scheduler.config import Settings
from scheduler.daemon.daemon import Daemon
from scheduler.errors import ConfigError


def test_the_node_sync_interval_is_read_from_the_environment_and_must_be_positive():
    assert Settings.from_env({}).node_sync_s == 30.0
    assert Settings.from_env({"WATTSCHED_NODE_SYNC_S": "2.5"}).node_sync_s == 2.5
    with pytest.raises(ConfigError, match="WATTSCHED_NODE_SYNC_S=0 must be > 0"):
        Settings.from_env({"WATTSCHED_NODE_SYNC_S": "0"})


def test_the_daemon_syncs_nodes_at_that_interval(tmp_path):
    settings = Settings.from_env({"WATTSCHED_NODE_SYNC_S": "2.5"}, data_dir=tmp_path,
                                 database_url=f"sqlite:///{tmp_path / 'w.db'}")
    daemon = Daemon(settings)
    daemon._start_scheduler()
    try:
        sync = daemon._scheduler.get_job("sync-workers")
        assert sync.trigger.interval.total_seconds() == 2.5
    finally:
        daemon._scheduler.shutdown(wait=False)
        daemon.engine.dispose()
