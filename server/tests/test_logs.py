"""The access log: written straight to stdout under the server's logging config, through logging otherwise."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest

from mlmodel_server.logs import AccessLog, JsonFormatter, StdoutHandler

FIELDS = {"request_id": "r1", "method": "POST", "path": "/predict", "status": 200, "duration_ms": 0.5}


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("test_logs.access")
    logger.setLevel(logging.INFO)
    yield logger
    logger.handlers.clear()
    logger.propagate = True


def test_the_direct_line_is_the_line_logging_writes(logger: logging.Logger, capfd: pytest.CaptureFixture[str]) -> None:
    handler = StdoutHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    AccessLog(logger).request(FIELDS)
    logger.info("request", extra={"fields": FIELDS})
    direct, through_logging = (json.loads(line) for line in capfd.readouterr().out.splitlines())
    for line in (direct, through_logging):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("ts"))
    assert list(direct.items()) == list(through_logging.items())


def test_any_other_config_gets_the_record(logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=logger.name):
        AccessLog(logger).request(FIELDS)
    assert [getattr(r, "fields", None) for r in caplog.records] == [FIELDS]


def test_a_logger_off_for_info_writes_nothing(logger: logging.Logger, capfd: pytest.CaptureFixture[str]) -> None:
    handler = StdoutHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    AccessLog(logger).request(FIELDS)
    assert capfd.readouterr().out == ""
