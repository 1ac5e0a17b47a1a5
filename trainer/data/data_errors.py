"""The data errors that end a run rather than being skipped, and their one-line report.

The loader raises them while reading (a sample of another schema version, an object type in no
class, a latency the shards hold no frames for), in the main process or inside a DataLoader worker.
PyTorch re-raises a worker's exception in the main process as the same type built from one string:
``Caught <Type> in DataLoader worker process N.`` followed by the worker's whole traceback. The loader
also appends the shard a sample came from to the exception's ``args``. ``fatal_data_message`` gets the
message and the shard back in both cases, so the entry points can report them in one line with exit code 2.
"""

from __future__ import annotations

import ast

from trainer.data.classes import UnmappedObjectTypeError
from trainer.data.latency import LatencyUnavailableError
from trainer.data.sample import SchemaVersionError

FATAL_DATA_ERRORS: tuple[type[Exception], ...] = (SchemaVersionError, UnmappedObjectTypeError, LatencyUnavailableError)
"""Never skipped by the loader: re-converting the data or fixing the config is the only remedy."""

_WORKER_PREFIX = "Caught "
_WORKER_MARK = "Original Traceback"


def _worker_args(text: str) -> tuple[object, ...]:
    """The ``args`` of the worker's exception from the last line of its traceback,
    ``pkg.module.Type: message`` or ``pkg.module.Type: ('message', 'shard.tar')``."""
    lines = [line for line in text.splitlines() if line.strip()]
    _, _, shown = lines[-1].partition(": ")
    try:
        value = ast.literal_eval(shown)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return (shown,)
    return value if isinstance(value, tuple) else (shown,)


def fatal_data_message(err: BaseException) -> str:
    """``err``'s message, with the shard it came from when the message does not name it already."""
    text = str(err)
    args = _worker_args(text) if text.startswith(_WORKER_PREFIX) and _WORKER_MARK in text else err.args
    message = str(args[0]) if args else type(err).__name__
    shards = [a for a in args[1:] if isinstance(a, str) and a]
    if shards and shards[-1] not in message:
        message += f" (shard {shards[-1]})"
    return message
