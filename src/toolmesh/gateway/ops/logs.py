"""Logging for ``toolmesh serve`` (GW-5): one JSON object per line, or plain text.

:mod:`toolmesh.gateway.run` starts uvicorn with ``log_config=None``, so uvicorn's own loggers propagate to
the root logger configured here and come out in the same format as toolmesh's.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

from toolmesh.gateway.config import LogSettings

__all__ = ["JsonFormatter", "configure_logging"]

# Attributes every LogRecord has: anything else on a record came from ``extra=`` and is emitted.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_HANDLER_NAME = "toolmesh-gateway"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...extra fields}``; exceptions in ``exc_info``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an odd extra value (a Path, an exception) must never lose the line.
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _iso(created: float) -> str:
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Route every logger (toolmesh's, uvicorn's) to one stderr handler in the chosen format.

    Idempotent: calling it again replaces the handler it installed before.
    """
    level_name = settings.level.upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {settings.level!r} (debug, info, warning, error, critical)")
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == _HANDLER_NAME:
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else logging.Formatter(_TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's loggers have no handlers with log_config=None; make sure they reach the root.
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    # No access log: a line per request costs ~90 µs of a worker's CPU at gateway rates, and
    # the request metrics (/metrics) carry the same information. Worker processes run this
    # after uvicorn's own set-up, so it must be switched off here, not only in uvicorn's Config.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
