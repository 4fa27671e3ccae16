"""Log lines as one JSON object each (PIAGENT_LOG_FORMAT=json), for journald, Loki or jq; built with msgspec.

Every line logged while a request is served carries its id: the request-id middleware sets `REQUEST_ID` for
the request's task (tasks it starts copy it), and `RequestIdFilter` puts it on each record as `request_id`,
with `request_tag` (` [request_id=...]` or nothing) for text formats. A ContextVar is the one module-level
name here: it is a key, immutable; each request's value lives in that request's own context, so nothing is
shared between requests or between two apps in one process. It sits here, not on an object the app factory
builds, because the logging set-up (piagent.cli.configure_logging) makes its filter before any app exists.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar

import msgspec

# The id of the request being served in this context (None outside a request).
REQUEST_ID: ContextVar[str | None] = ContextVar("piagent_request_id", default=None)

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


class RequestIdFilter(logging.Filter):
    """Puts the request's id on every record logged while a request is served (one given by `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always True: this filter only adds `request_id` and `request_tag` to the record."""
        request_id = record.__dict__.get("request_id")
        if request_id is None:
            request_id = record.request_id = REQUEST_ID.get()
        record.request_tag = f" [request_id={request_id}]" if request_id is not None else ""
        return True
