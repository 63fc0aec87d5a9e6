"""The liveness decision and its settings: live until the stall limit, not one moment longer."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import kopf
import pytest
from mlmodel_operator import config, handlers, liveness


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_live_until_the_limit_then_stalled() -> None:
    assert liveness.check({"passes": (0, 60)}) == {"passes": 0}
    assert liveness.check({"passes": (59.94, 60), "the watch of Pod": (3, 100)}) == {
        "passes": 59.9,
        "the watch of Pod": 3,
    }
    for idle in (60, 61.25):
        with pytest.raises(liveness.Stalled, match=f"passes has made no progress for {idle:.1f} s"):
            liveness.check({"passes": (idle, 60)})


def test_each_source_has_its_own_limit() -> None:
    with pytest.raises(liveness.Stalled, match=r"the watch of Pod has made no progress for 100\.0 s"):
        liveness.check({"passes": (5, 60), "the watch of Pod": (100, 100)})


def test_progress_starts_as_progress_and_each_beat_restarts_the_count() -> None:
    clock = Clock()
    progress = liveness.Progress(clock)
    assert progress.idle() == 0
    clock.now += 42
    assert progress.idle() == 42
    progress.beat()
    assert progress.idle() == 0
    clock.now += 1.5
    assert progress.idle() == 1.5


def test_the_stall_limit_follows_the_resync_period_unless_set() -> None:
    assert config.parse([], {}).stall_seconds == 660  # 2 x 300 s + 60 s
    assert config.parse(["--resync-seconds", "1"], {}).stall_seconds == 62
    assert config.parse([], {"RESYNC_SECONDS": "30"}).stall_seconds == 120
    assert config.parse([], {"RESYNC_SECONDS": "30", "STALL_SECONDS": "45"}).stall_seconds == 45
    assert config.parse(["--stall-seconds", "5"], {"STALL_SECONDS": "45"}).stall_seconds == 5


def test_api_calls_get_a_connect_and_a_read_timeout() -> None:
    assert config.parse([], {}).api_timeouts == (10, 30)
    assert config.parse(["--api-timeout-seconds", "2"], {}).api_timeouts == (2, 2)
    assert config.parse([], {"API_TIMEOUT_SECONDS": "60"}).api_timeouts == (10, 60)


def test_settings_given_only_as_flags_reach_the_handlers() -> None:
    """The handlers take the settings that ``kopf.run(memo=...)`` hands them, flags and all: none is
    parsed again from the environment, where a flag would not be."""
    servers = '{"requests": {"cpu": "20m"}}'
    argv = [
        "--workers",
        "7",
        "--router-image",
        "flagged:1",
        "--api-timeout-seconds",
        "4",
        "--server-resources",
        servers,
    ]
    cfg = config.parse(argv, {})
    memo, settings = kopf.Memo(config=cfg), kopf.OperatorSettings()
    # As kopf calls its startup and cleanup activities.
    started, logger = datetime.now(UTC), logging.getLogger(__name__)
    handlers.startup(settings=settings, memo=memo, retry=0, started=started, runtime=timedelta(0), logger=logger)
    try:
        assert memo.watched.config is cfg  # the passes' images, default resources, resync and workers
        assert memo.watched.config.defaults.server_resources == {"requests": {"cpu": "20m"}}
        assert settings.execution.max_workers == 7
        assert settings.networking.request_timeout == 8  # connect 4 + read 4
    finally:
        handlers.cleanup(settings=settings, memo=memo, retry=0, started=started, runtime=timedelta(0), logger=logger)
