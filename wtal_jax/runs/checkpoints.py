"""Checkpoints: what a step's checkpoint holds, its layout, and saving and restoring it intact.

A step's folder ``checkpoints/STEP/`` holds two items: ``state`` (the stacked
:class:`~wtal_jax.training.TrainState` and the running metric sums, :func:`saved_state`) and ``meta``
(JSON, :func:`checkpoint_meta`: class names, sizes, seeds, the data fingerprint, the step's
evaluation metrics and a checksum of every saved array). Orbax commits a step atomically (a
temporary folder renamed at the end), so a crash during an asynchronous save leaves no
half-written step behind; a step damaged later (a flipped byte, a truncated file) fails its
checksums on restore. Steps are kept latest-K plus each seed's best.

:class:`wtal_jax.runs.rundir.RunDir` is the one way into a run's checkpoints (it owns the run's
one manager); this module decides their content and layout.
"""

import contextlib
import dataclasses
import fcntl
import gc
import json
import os
import secrets

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from wtal_jax import config as config_lib
from wtal_jax import training
from wtal_jax.runs.orbax_logs import absl_errors_only, describe, drop_abandoned_io_reports
from wtal_jax.runs.summary import best_index

CHECKPOINT_DIR = 'checkpoints'
# Beside the checkpoints: one file per step a reader is reading, share-locked while it reads
# (``pin``), so that a training writing the run keeps that step until the read is done.
READERS_DIR = '.readers'


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
    policies = [ocm.LatestN(n=keep), ReaderPins(os.path.join(os.path.dirname(
        os.path.abspath(directory)), READERS_DIR))]
    best_fn = None
    if best_key:
        best_fn = lambda m: m[best_key][0]  # noqa: E731
        policies += [SeedBest(key=best_key, seed=s, mode=best_mode) for s in range(num_seeds)]
    # Orbax writes a step's metrics to disk only when ``best_fn`` is set; without them on disk
    # a resumed run would forget which earlier step was best and delete it.
    # Readers open without reading every step's metrics (``lightweight_initialize``): one
    # damaged metrics file would stop them; they read a step's metrics when they need them.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocm.AnyPreservationPolicy(policies), read_only=read_only,
        create=not read_only, enable_async_checkpointing=not read_only, best_fn=best_fn,
        best_mode=best_mode, save_interval_steps=0 if read_only else 1,
        lightweight_initialize=read_only)
    drop_abandoned_io_reports()
    with absl_errors_only(read_only):  # read-only managers warn that they are read-only
        return ocp.CheckpointManager(os.path.abspath(directory), options=options)


@dataclasses.dataclass(frozen=True)
class SeedBest:
    """An Orbax preservation policy: keeps the step whose metric ``key`` is best for ``seed``
    by the report's rule (:func:`wtal_jax.runs.summary.best_index`: of equal values, the
    earliest). Orbax's own ``BestN`` keeps the latest of equal values, which would delete the
    step the report calls selected and leave ``evaluate`` another."""
    key: str
    seed: int
    mode: str

    def should_preserve(self, checkpoints, *, context=None) -> list[bool]:
        """One flag per checkpoint (Orbax's ``PolicyCheckpointInfo``: ``step``, ``metrics``):
        True for the best one; steps without the metric are left to the other policies."""
        scored = sorted((c.step, i) for i, c in enumerate(checkpoints)
                        if c.metrics is not None and self.key in c.metrics)
        keep = None
        if scored:
            values = [checkpoints[i].metrics[self.key][self.seed] for _, i in scored]
            keep = scored[best_index(values, self.mode)][1]
        return [i == keep for i in range(len(checkpoints))]


@dataclasses.dataclass(frozen=True)
class ReaderPins:
    """An Orbax preservation policy: keeps every step a reader has pinned (:func:`pin`), so
    that ``evaluate --which latest`` during a training never loses the step it reads to the
    training's retention. A pin whose reader died (its lock released) keeps nothing."""
    folder: str

    def should_preserve(self, checkpoints, *, context=None) -> list[bool]:
        pinned = pinned_steps(self.folder)
        return [c.step in pinned for c in checkpoints]


def pinned_steps(folder: str) -> set[int]:
    """The steps of the live pins in ``folder``; stale pin files are removed."""
    try:
        names = os.listdir(folder)
    except OSError:
        return set()
    live = set()
    for name in names:
        step = name.split('.', 1)[0]
        if not step.isdigit():
            continue
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            live.add(int(step))          # a reader holds it
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)          # its reader is gone
        finally:
            os.close(fd)
    return live


@contextlib.contextmanager
def pin(folder: str, step: int):
    """Marks ``step`` as being read for the block (see :class:`ReaderPins`). Where the run
    folder cannot be written (a read-only copy: no training writes it either) nothing is
    pinned and the read goes on."""
    fd = path = None
    name = f'{step}.{os.getpid()}.{secrets.token_hex(4)}'
    with contextlib.suppress(OSError):
        os.makedirs(folder, exist_ok=True)
        # Locked under a name no writer reads as a pin, then named: never seen unlocked.
        hidden = os.path.join(folder, '.' + name)
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.rename(hidden, os.path.join(folder, name))
        path = os.path.join(folder, name)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
                os.rmdir(folder)   # a read leaves the run as it found it (unless others read)


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


# ---------------------------------------------------------------------------------------------
# Content


def saved_state(state: training.TrainState, losses: tuple[str, ...],
                sums: dict | None = None) -> dict:
    """What a checkpoint holds: the stacked train state and the running sums of the method's
    ``losses`` over the training log's current window (zero at a log step), so a resumed run
    logs the same rows."""
    num_seeds = jax.tree.leaves(state)[0].shape[0]
    return {'train': state,
            'sums': training.zero_metrics(losses, num_seeds) if sums is None else sums}


def abstract_state(cfg, names, sharding=None):
    """The shape of a checkpoint of ``cfg`` (see :func:`saved_state`), to restore into."""
    def shapes():
        built = training.build(cfg, names)
        return saved_state(built.state, built.losses)
    return abstract_like(jax.eval_shape(shapes), sharding)


def checkpoint_meta(cfg, names, *, fingerprint: dict | None = None,
                    metrics: dict | None = None) -> dict:
    """What a checkpoint carries besides the state: enough to use it without the data."""
    return {'class_names': list(names), 'feature_dim': cfg.data.feature_dim,
            'embed_dim': cfg.model.embed_dim, 'seeds': list(config_lib.run_seeds(cfg)),
            'data': fingerprint or {}, 'metrics': metrics or {}}


def save_checkpoint(run, step: int, state: dict, cfg, names, *,
                    fingerprint: dict | None = None, metrics: dict | None = None,
                    extra: dict | None = None) -> bool:
    """Checksums ``state`` (a :func:`saved_state`) and starts saving it at ``step``.

    Returns False, saving nothing, when a value is not finite: a diverged state is never saved
    as a good checkpoint.
    """
    sums, finite = checksums(state)
    if not finite:
        return False
    meta = checkpoint_meta(cfg, names, fingerprint=fingerprint, metrics=metrics)
    run.save(step, state, dict(meta, **(extra or {}), checksums=sums), metrics)
    return True


def abstract_like(tree, sharding=None):
    """The shape/dtype skeleton of a pytree (with ``sharding`` on every leaf if given)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        tree)


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
