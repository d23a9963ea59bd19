"""Structured logs: one JSON object per line on stderr, each with the request id of the request it belongs to.

`configure_logging` routes the root logger and uvicorn's loggers through `JsonFormatter`; uvicorn's own
access log stays off because `RequestContextMiddleware` writes a richer one. Messages from the image
decoders (pydicom, Pillow, Python warnings) can quote header values, so only their origin is logged:
the service never logs file names, DICOM tags or pixels.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from service.request_context import current_request_id

LogFormat = Literal["json", "text"]
# Loggers whose text may echo what a client sent (a tag value, a file's own metadata): replaced, not logged.
# pynetdicom logs the UIDs and attributes of what it sends and receives.
REDACTED_LOGGERS = ("pydicom", "pynetdicom", "PIL", "py.warnings")
REDACTED_MESSAGE = "decoder message withheld (it may quote the uploaded file's contents)"
# LogRecord's own attributes: everything else on a record came in through `extra=` and is a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


def is_redacted(logger_name: str) -> bool:
    return any(logger_name == name or logger_name.startswith(name + ".") for name in REDACTED_LOGGERS)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "request_id", ...extra fields, "exception"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        redacted = is_redacted(record.name)
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": REDACTED_MESSAGE if redacted else record.getMessage(),
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES})
        if record.exc_info and not redacted:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=True)


class TextFormatter(logging.Formatter):
    """For a developer's terminal: the same records, with the request id, and the same redaction."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = getattr(record, "request_id", None) or current_request_id() or "-"
        if is_redacted(record.name):
            record.msg, record.args, record.exc_info, record.exc_text = REDACTED_MESSAGE, (), None, None
        return super().format(record)


def configure_logging(level: str, log_format: LogFormat = "json") -> None:
    """Send every log record (the service's, uvicorn's, onnxruntime's Python side) through one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # The access line comes from RequestContextMiddleware; uvicorn's would log the raw path and query.
    logging.getLogger("uvicorn.access").disabled = True
    logging.captureWarnings(True)
    # pynetdicom narrates every PDU at INFO; its lines are redacted anyway, so only its problems are kept.
    logging.getLogger("pynetdicom").setLevel(max(root.level, logging.WARNING))
