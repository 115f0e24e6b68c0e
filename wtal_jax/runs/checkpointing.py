"""Orbax checkpoints in a run directory: the latest few, the best by an evaluation metric.

Layout: ``WORKDIR/config.json`` (the resolved config) and ``WORKDIR/checkpoints/STEP/`` with
items ``state`` (the :class:`~wtal_jax.method.train.TrainState` pytree) and ``meta`` (JSON: class
names, feature size, the metrics of that step). Orbax writes each step atomically.
"""

import contextlib
import json
import os

from absl import logging as absl_logging
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from wtal_jax import config as config_lib
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'


def metric_key(split: str, name: str) -> str:
    """Metric names carry the split they were measured on, e.g. ``test/average_mAP``."""
    return f'{split}/{name}'


def open_manager(workdir: str, *, keep: int = 2, best_metric: str | None = None,
                 best_mode: str = 'max', read_only: bool = False) -> ocp.CheckpointManager:
    """A CheckpointManager keeping the latest ``keep`` steps plus the best by ``best_metric``.

    ``best_metric`` is a full key such as ``test/average_mAP``; steps saved without metrics
    are kept only while they are among the latest.
    """
    policies = [ocm.LatestN(n=keep)]
    best_fn = None
    if best_metric:
        best_fn = lambda m: m[best_metric]  # noqa: E731
        policies.append(ocm.BestN(get_metric_fn=best_fn, reverse=best_mode == 'min', n=1,
                                  keep_checkpoints_without_metrics=False))
    # Orbax writes a step's metrics to disk only when ``best_fn`` is set; without them on disk
    # a resumed run would forget which earlier step was best and delete it.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocm.AnyPreservationPolicy(policies), read_only=read_only,
        create=not read_only, enable_async_checkpointing=False, best_fn=best_fn,
        best_mode=best_mode, save_interval_steps=0 if read_only else 1)
    directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    # A read-only manager logs an absl warning that says only that it is read-only.
    with _absl_errors_only(read_only):
        return ocp.CheckpointManager(directory, options=options)


@contextlib.contextmanager
def _absl_errors_only(active: bool = True):
    """Silences Orbax's absl warnings about what we do on purpose (they would reach stderr)."""
    level = absl_logging.get_verbosity()
    if active:
        absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)


def save(manager: ocp.CheckpointManager, step: int, state, meta: dict,
         metrics: dict | None = None) -> None:
    """Saves ``state`` and JSON ``meta`` at ``step`` (with ``metrics`` for the best policy)."""
    # Without metrics Orbax warns that the best-checkpoint policy got none: that is intended.
    with _absl_errors_only(metrics is None):
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            metrics=metrics, force=True)
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, abstract_state):
    """Restores (state, meta) of ``step`` into the structure of ``abstract_state``."""
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta


def best_step(manager: ocp.CheckpointManager, best_metric: str, best_mode: str = 'max'):
    """The saved step with the best ``best_metric``, or None when no step has it."""
    metrics = {step: manager.metrics(step) for step in manager.all_steps()}
    scored = [(m[best_metric], step) for step, m in metrics.items()
              if m and best_metric in m]
    if not scored:
        return None
    return (max if best_mode == 'max' else min)(scored)[1]


def write_config(workdir: str, cfg) -> None:
    """Writes the resolved config beside the checkpoints (atomically)."""
    write_json_atomic(os.path.join(workdir, CONFIG_FILE), config_lib.to_dict(cfg), indent=2)


def read_config(workdir: str):
    """The config a run directory was trained (or converted) with."""
    path = os.path.join(workdir, CONFIG_FILE)
    try:
        with open(path) as f:
            return config_lib.from_dict(json.load(f))
    except FileNotFoundError:
        raise UserError(f'{path}: not found; is {workdir} a wtal_jax run directory?') from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f'{path}: unreadable config: {e}') from None


def abstract_like(state):
    """The shape/dtype skeleton of a state, to restore into without a real one."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
