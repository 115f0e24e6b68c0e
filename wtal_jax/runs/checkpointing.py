"""Orbax checkpoints: saved asynchronously, checksummed, kept latest-K plus each seed's best.

A step's folder ``checkpoints/STEP/`` holds two items: ``state`` (the stacked
:class:`~wtal_jax.method.train.TrainState` and the running metric sums) and ``meta`` (JSON:
class names, sizes, seeds, the data fingerprint, the step's evaluation metrics and a checksum
of every saved array). Orbax commits a step atomically (a temporary folder renamed at the end),
so a crash during an asynchronous save leaves no half-written step behind; a step damaged later
(a flipped byte, a truncated file) fails its checksums on restore.

:class:`wtal_jax.runs.rundir.RunDir` is the one owner of a run's manager; this module holds the
pieces it is made of.
"""

import contextlib
import errno
import gc
import inspect
import json
import logging
import os
import re
import sys

from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

CHECKPOINT_DIR = 'checkpoints'
_ORBAX_DIR = os.path.dirname(os.path.abspath(ocp.__file__))


class CorruptCheckpoint(Exception):
    """A saved step that cannot be restored intact (unreadable, or checksums differ)."""


def metric_key(split: str, name: str) -> str:
    """Metric names carry the split they were measured on, e.g. ``selection/average_mAP``."""
    return f'{split}/{name}'


def open_manager(directory: str, *, keep: int, best_key: str | None = None,
                 best_mode: str = 'max', num_seeds: int = 1, read_only: bool = False
                 ) -> ocp.CheckpointManager:
    """A CheckpointManager keeping the latest ``keep`` steps plus, for every seed, its best.

    ``best_key`` is a metric such as ``selection/average_mAP`` whose saved value is a list of
    one number per seed; None keeps the latest steps only. Saves are asynchronous: ``save``
    returns once the arrays are copied off the device, and the files are written behind.
    """
    policies = [ocm.LatestN(n=keep)]
    best_fn = None
    if best_key:
        best_fn = lambda m: m[best_key][0]  # noqa: E731
        policies += [ocm.BestN(get_metric_fn=lambda m, s=s: m[best_key][s],
                               reverse=best_mode == 'min', n=1,
                               keep_checkpoints_without_metrics=False)
                     for s in range(num_seeds)]
    # Orbax writes a step's metrics to disk only when ``best_fn`` is set; without them on disk
    # a resumed run would forget which earlier step was best and delete it.
    # Readers open without reading every step's metrics (``lightweight_initialize``): one
    # damaged metrics file would stop them; they read a step's metrics when they need them.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocm.AnyPreservationPolicy(policies), read_only=read_only,
        create=not read_only, enable_async_checkpointing=not read_only, best_fn=best_fn,
        best_mode=best_mode, save_interval_steps=0 if read_only else 1,
        lightweight_initialize=read_only)
    _drop_abandoned_io_reports()
    with absl_errors_only(read_only):  # read-only managers warn that they are read-only
        return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def step_metrics_problem(step_dir: str) -> str | None:
    """Why the metrics item of a step folder cannot be read (None when it can, or is absent).

    Orbax reads every step's metrics when a writer's manager opens, and stops at the first
    damaged one; the run directory checks them first.
    """
    path = os.path.join(step_dir, 'metrics', 'metrics')
    try:
        with open(path, encoding='utf-8') as f:
            metrics = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        return f'metrics unreadable ({describe(e)})'
    return None if isinstance(metrics, dict) else 'metrics unreadable (not a JSON object)'


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


# ---------------------------------------------------------------------------------------------
# Checksums

def _words(leaf: jax.Array) -> jax.Array:
    """The array's bytes as uint32 words, flat (32-bit dtypes as they are, others widened)."""
    if leaf.dtype.itemsize == 4:
        return jax.lax.bitcast_convert_type(leaf, jnp.uint32).reshape(-1)
    return jax.lax.bitcast_convert_type(leaf, jnp.uint8).reshape(-1).astype(jnp.uint32)


@jax.jit
def _checksums_and_finite(tree):
    """Per leaf: sum_i (2i + 1) * word_i mod 2^32 (uint32), and whether every value is finite.

    The weights are odd, hence invertible modulo 2^32: changing any single word changes the
    sum. Integer sums wrap exactly, so the value does not depend on the device, the number of
    devices or the reduction order.
    """
    def checksum(leaf):
        words = _words(leaf)
        weights = jnp.arange(words.shape[0], dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
        return jnp.sum(words * weights, dtype=jnp.uint32)

    def finite(leaf):
        return jnp.all(jnp.isfinite(leaf)) if jnp.issubdtype(leaf.dtype, jnp.inexact) \
            else jnp.bool_(True)

    return jax.tree.map(checksum, tree), jax.tree.map(finite, tree)


def _keyed(tree) -> dict:
    return {jax.tree_util.keystr(path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def checksums(tree) -> tuple[dict[str, int], bool]:
    """({leaf path: checksum}, all values finite) of a pytree of arrays, computed on device."""
    sums, finite = jax.device_get(_checksums_and_finite(tree))
    return ({k: int(v) for k, v in _keyed(sums).items()},
            all(bool(v) for v in jax.tree.leaves(finite)))


def numpy_checksum(array: np.ndarray) -> int:
    """The same checksum in NumPy, for one host array (tests and tools)."""
    array = np.ascontiguousarray(array)
    words = array.view(np.uint32).reshape(-1) if array.dtype.itemsize == 4 else \
        array.view(np.uint8).reshape(-1).astype(np.uint32)
    weights = np.arange(words.size, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    return int(np.sum(words * weights, dtype=np.uint32))


# ---------------------------------------------------------------------------------------------
# Save and restore one step

def save(manager: ocp.CheckpointManager, step: int, state, meta: dict,
         metrics: dict | None = None) -> None:
    """Starts saving ``state`` and JSON ``meta`` at ``step`` (asynchronous; see ``open_manager``).

    ``meta`` must already hold the state's checksums (``meta['checksums']``).
    """
    # Without metrics Orbax warns that the best-checkpoint policy got none: that is intended.
    with absl_errors_only(metrics is None):
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            metrics=metrics, force=True)


def restore_meta(manager: ocp.CheckpointManager, step: int) -> dict:
    """The JSON ``meta`` item of ``step``."""
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as e:  # orbax raises many types for a damaged folder
        reason = describe(e, manager.directory)
    else:
        reason = None
    if reason is not None:
        gc.collect()   # the abandoned reads, reported (and dropped) now
        raise CorruptCheckpoint(f'step {step}: meta unreadable ({reason})')
    if not isinstance(meta, dict):
        raise CorruptCheckpoint(f'step {step}: meta unreadable (not a JSON object)')
    return meta


def restore(manager: ocp.CheckpointManager, step: int, abstract_state) -> tuple[object, dict]:
    """Restores (state, meta) of ``step``, verified.

    ``abstract_state``: the structure to restore into, or a function of the step's meta that
    returns it (the class count, say, is known only from the meta).

    Raises:
      CorruptCheckpoint: the step cannot be read, or an array's checksum differs from the one
        recorded when it was saved.
    """
    meta = restore_meta(manager, step)
    if callable(abstract_state):
        abstract_state = abstract_state(meta)
    try:
        state = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state))).state
    except Exception as e:  # tensorstore, JSON and shape errors alike mean "damaged"
        reason = describe(e, manager.directory)
    else:
        reason = None
    if reason is not None:   # (outside the handler, which holds the failed reads)
        gc.collect()   # the abandoned reads, reported (and dropped) now
        raise CorruptCheckpoint(f'step {step}: arrays unreadable ({reason})')
    expected = meta.get('checksums')
    if not isinstance(expected, dict):
        raise CorruptCheckpoint(f'step {step}: no checksums recorded')
    found, _ = checksums(state)
    differ = sorted(k for k in expected.keys() | found.keys()
                    if expected.get(k) != found.get(k))
    if differ:
        raise CorruptCheckpoint(f'step {step}: checksum mismatch in {", ".join(differ[:3])}')
    return state, meta


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


def _drop_abandoned_io_reports() -> None:
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


def abstract_like(tree, sharding=None):
    """The shape/dtype skeleton of a pytree (with ``sharding`` on every leaf if given)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        tree)
