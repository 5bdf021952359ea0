"""structlog set-up: JSON lines on stderr, one event name per thing that happened.

Everything the process writes to its log is one JSON object a line: our events, what libraries
log through the standard library (asyncio, asyncpg, redis), Python warnings, what the event
loop reports (an exception nobody retrieved, an error in a callback) as `loop.exception`, and
an exception that ends the process or a thread as `crashed`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure_logging(level: str = "info") -> None:
    stamp: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    render: list[Any] = [
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=[*stamp, *render],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamp],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
    ))
    logging.basicConfig(handlers=[handler], level=_LEVELS[level], force=True)
    logging.captureWarnings(True)
    # An exception that ends the process (RecoveryError) or a thread: one line, as `crashed`.
    sys.excepthook = lambda *exc_info: get_logger().critical("crashed", exc_info=exc_info)
    threading.excepthook = lambda args: get_logger().critical(
        "crashed", thread=getattr(args.thread, "name", None),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("onecard.switch")


def log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: what asyncio would print as text, as one line."""
    get_logger().error(
        "loop.exception", message=context.get("message"), exc_info=context.get("exception"),
        **{k: repr(context[k]) for k in ("task", "future", "handle") if k in context},
    )
