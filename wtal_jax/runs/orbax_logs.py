"""Orbax's failures said once: its error logs, its abandoned reads and writes, refused writes.

When one array of a damaged step cannot be read, or the disk fills up during an asynchronous
save, Orbax logs the failure where it happens (often in a background thread), gives up its other
reads or writes (each of which Python would report with a traceback, at any later moment), and
raises the failure again in the caller. The caller turns that into one line; this module keeps
the rest quiet and names what a failure was.
"""

import contextlib
import errno
import inspect
import logging
import os
import re
import sys

from absl import logging as absl_logging
import orbax.checkpoint as ocp

_ORBAX_DIR = os.path.dirname(os.path.abspath(ocp.__file__))


class HeldErrorLogs(logging.Filter):
    """Holds back Orbax's error logs, tracebacks from its background threads included.

    Orbax logs a failure where it happens (often in a thread) and raises it again in the
    caller, where it becomes one line; the logs would add dozens. Those that no exception
    accounts for are given back as one line each by :meth:`take`.
    """

    def __init__(self):
        super().__init__()
        self.held: list[str] = []
        self.silenced = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.pathname.startswith(_ORBAX_DIR):
            if not self.silenced:
                text = record.getMessage().strip().splitlines()
                self.held.append(text[0][:300] if text else 'error')
            return False
        return True

    def silence(self) -> None:
        """Drops Orbax's error logs from now on, for the rest of the process: after a failed
        save, its threads may go on logging the failure (already said) as they wind down, up
        to the interpreter's exit."""
        self.held, self.silenced = [], True

    def take(self) -> list[str]:
        """The held messages, once each, in order; then forgets them."""
        held, self.held = list(dict.fromkeys(self.held)), []
        return held

    def attach(self) -> 'HeldErrorLogs':
        absl_logging.get_absl_logger().addFilter(self)
        return self

    def detach(self) -> None:
        absl_logging.get_absl_logger().removeFilter(self)


@contextlib.contextmanager
def absl_errors_only(active: bool = True):
    """Silences Orbax's absl warnings about what we do on purpose (they would reach stderr)."""
    level = absl_logging.get_verbosity()
    if active:
        absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)


def describe(error: BaseException, folder: str = '') -> str:
    """One short line for an error: its innermost cause, where the detail is (TensorStore's
    outer errors print a whole spec), as ``Type: first line``, paths shown relative to
    ``folder``."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip().splitlines()
    if not text:
        return type(error).__name__
    line = text[0].replace(os.path.join(os.fspath(folder), ''), '') if folder else text[0]
    return f'{type(error).__name__}: {line[:200]}'


def _is_abandoned_io(unraisable) -> bool:
    """Python's report of an array read or write that Orbax left behind when another one of the
    same restore or save failed: the unfinished coroutine, collected, or TensorStore completing
    it into the closed event loop."""
    if isinstance(unraisable.exc_value, RuntimeError) and unraisable.object is None and \
            str(unraisable.exc_value) == 'Event loop is closed':
        return True
    obj = unraisable.object
    return inspect.iscoroutine(obj) and obj.cr_code.co_filename.startswith(_ORBAX_DIR)


def _raised_in_orbax(error: BaseException | None) -> bool:
    tb = error.__traceback__ if error is not None else None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(_ORBAX_DIR):
            return True
        tb = tb.tb_next
    return False


# How TensorStore's errors begin: an absl status code, e.g. "RESOURCE_EXHAUSTED: ".
_TENSORSTORE_STATUS = re.compile(r'[A-Z][A-Z_]+: ')


class _AbandonedTaskLogs(logging.Filter):
    """Drops asyncio's "... exception was never retrieved" for the tasks and TensorStore
    futures that Orbax abandoned (their failure is the one Orbax raises in the caller)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if 'exception was never retrieved' not in text.split('\n')[0]:
            return True
        error = record.exc_info[1] if record.exc_info else None
        return not (_ORBAX_DIR in text or _raised_in_orbax(error) or (
            error is not None and _TENSORSTORE_STATUS.match(str(error))))


def drop_abandoned_io_reports() -> None:
    """Installs, once per process, a hook that drops Python's reports of abandoned array reads
    and writes and passes every other report on, and the same filter for asyncio's log.

    When one array of a damaged step cannot be read (or the disk fills up during a save), Orbax
    gives up the others, and each would print a traceback, from another thread and at any
    later moment: dozens for a problem reported in one line already.
    """
    asyncio_log = logging.getLogger('asyncio')
    if not any(isinstance(f, _AbandonedTaskLogs) for f in asyncio_log.filters):
        asyncio_log.addFilter(_AbandonedTaskLogs())
    if getattr(sys.unraisablehook, 'drops_abandoned_io', False):
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        if not _is_abandoned_io(unraisable):
            previous(unraisable)
    hook.drops_abandoned_io = True
    sys.unraisablehook = hook


# TensorStore reports a refused write as a ValueError whose text starts with a status.
_IO_STATUSES = ('RESOURCE_EXHAUSTED', 'PERMISSION_DENIED', 'UNAVAILABLE', 'DATA_LOSS')


def write_failure(error: BaseException) -> tuple[int | None, str] | None:
    """(errno, reason) when ``error`` (from a save, perhaps raised again from Orbax's background
    thread) is the system refusing to write (a full disk, a permission, a lost mount); None for
    anything else, which is a bug and keeps its traceback."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen.errno, seen.strerror or str(seen)
        text = str(seen)
        code = re.search(r"os_error_code='?(\d+)", text)
        if code:
            number = int(code.group(1))
            return number, os.strerror(number)
        if text.startswith(_IO_STATUSES):
            return errno.EIO, text.splitlines()[0][:200]
        seen = seen.__cause__ or seen.__context__
    return None
