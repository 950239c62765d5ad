"""Live log records (``log_cli``) from the workers, shown by the controller's pytest.

On a worker, pytest's live-log handler would write to a terminal nobody reads; it is
replaced by one that sends each record to the controller. There the record is rebuilt
and handed to pytest's own live-log handler, so it is formatted, filtered by level and
placed under pytest's "live log" headings as in a serial run, in order of arrival.
Both ends reach pytest's live-log handler through ``pytest_orchestrator.pytest_private``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from orchestrator.run.channel import Channel
    from orchestrator.run.protocol import LogMessage

#: The LogRecord attributes that travel (the message goes formatted, as ``msg``).
RECORD_FIELDS = (
    "name",
    "levelno",
    "levelname",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "relativeCreated",
    "thread",
    "threadName",
    "process",
    "processName",
)


def _live_handler(config: pytest.Config) -> Any:
    """pytest's live-log handler, or None when ``log_cli`` is off. (Imported here, not at
    the top: a worker imports this module before pytest starts, which must load the plugin
    package itself to rewrite its assertions.)"""
    from pytest_orchestrator.pytest_private import live_log_handler

    return live_log_handler(config)


class ForwardingHandler(logging.Handler):
    """Stands in for pytest's live-log handler on a worker: sends records on."""

    def __init__(self, channel: Channel, level: int) -> None:
        super().__init__(level)
        self.channel = channel
        self.when: str | None = None
        self._formatter = logging.Formatter()

    # pytest's logging plugin tells its live handler which phase runs.
    def set_when(self, when: str | None) -> None:
        self.when = when

    def reset(self) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data: dict[str, Any] = {name: getattr(record, name, None) for name in RECORD_FIELDS}
            data["msg"] = record.getMessage()
            if record.exc_info:
                data["exc_text"] = self._formatter.formatException(record.exc_info)
            elif record.exc_text:
                data["exc_text"] = record.exc_text
            if record.stack_info:
                data["stack_info"] = record.stack_info
            self.channel.send({"t": "log", "w": self.when, "r": data})
        except Exception:
            self.handleError(record)


def forward_live_logs(config: pytest.Config, channel: Channel) -> None:
    """On a worker with ``log_cli`` on: send live log records to the controller."""
    handler = _live_handler(config)
    if handler is None:
        return
    from pytest_orchestrator.pytest_private import replace_live_log_handler

    replace_live_log_handler(config, ForwardingHandler(channel, handler.level))


def show_live_log(config: pytest.Config, message: LogMessage) -> None:
    """On the controller: show a worker's record as pytest shows live logs."""
    handler = _live_handler(config)
    if handler is None:
        return
    data = dict(message["r"])
    data["args"] = None
    record = logging.makeLogRecord(data)
    when = message.get("w")
    from pytest_orchestrator.pytest_private import live_log_phase

    if when and live_log_phase(handler) != when:
        handler.set_when(when)
    handler.handle(record)
