"""Log lines as one JSON object each (PIAGENT_LOG_FORMAT=json), for journald, Loki or jq; built with msgspec."""

from __future__ import annotations

import logging
import time

import msgspec

# Fields a record may carry (`extra=`) that go into the JSON line as they are: the access line's.
FIELDS = ("request_id", "method", "path", "status", "duration_ms", "owner")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601 with milliseconds), level, logger, message, the access
    fields a record carries, and the traceback of an exception as `exc_info`."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (its message formatted with its arguments, as text logs do)."""
        seconds = int(record.created)
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int((record.created - seconds) * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return self._encoder.encode(line).decode()
