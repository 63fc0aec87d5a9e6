"""JSON-lines logging for the server and for gunicorn."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and any ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class StdoutHandler(logging.Handler):
    """One ``os.write`` to stdout per record, and no lock.

    ``StreamHandler`` holds a lock across format, write and flush: under load, request
    threads queue on it behind whichever holder the GIL has paused. A line shorter than
    PIPE_BUF written to a pipe lands whole.
    """

    def createLock(self) -> None:  # noqa: N802 - logging's naming
        self.lock = None

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode()
            while data:
                data = data[os.write(1, data) :]
        except Exception:  # noqa: BLE001 - logging must never break a request
            self.handleError(record)


def logging_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` that sends every logger, gunicorn's included, to stdout as JSON."""
    handler = {"()": StdoutHandler, "formatter": "json"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stdout": handler},
        "root": {"level": level.upper(), "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["stdout"], "propagate": False},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }
