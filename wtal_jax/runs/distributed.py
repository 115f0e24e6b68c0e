"""Several processes (one per host) with JAX's own runtime, ``jax.distributed``.

Process 0 is the primary: it holds the run directory's lock, writes ``config.json``,
``metrics.jsonl`` and the report, and evaluates; every process trains its share of each global
batch and writes its share of each checkpoint (orbax coordinates that). With one process all of
this reduces to plain single-process code.
"""

import os
from typing import NamedTuple

import jax
import numpy as np

from wtal_jax.errors import UserError

# The standard environment of a launcher that does not set JAX's own variables (JAX reads
# JAX_COORDINATOR_ADDRESS itself and detects SLURM, Open MPI and TPU pods on its own).
ENV_NUM_PROCESSES = 'JAX_NUM_PROCESSES'
ENV_PROCESS_ID = 'JAX_PROCESS_ID'


class Processes(NamedTuple):
    """This process's place among the processes of a run."""
    index: int
    count: int

    @property
    def primary(self) -> bool:
        return self.index == 0


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == '':
        return None
    try:
        return int(text)
    except ValueError:
        raise UserError(f'environment variable {name}={text!r} is not an integer') from None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, auto: bool = False) -> Processes:
    """Joins the processes of a multi-process run; nothing to do for a single process.

    Arguments left None come from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``; with ``auto`` JAX detects them from SLURM, Open MPI or a TPU pod.
    Must run before any other JAX call.
    """
    coordinator = coordinator or os.environ.get('JAX_COORDINATOR_ADDRESS')
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if not any(given) and not auto:
        return current()
    if not auto and not all(given):
        raise UserError('a multi-process run needs --coordinator HOST:PORT, --num-processes N '
                        'and --process-id I (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and '
                        'JAX_PROCESS_ID), or --distributed-auto under SLURM / Open MPI')
    if num_processes is not None and num_processes < 1:
        raise UserError(f'--num-processes must be at least 1, got {num_processes}')
    if process_id is not None and num_processes is not None and \
            not 0 <= process_id < num_processes:
        raise UserError(f'--process-id must be in 0..{num_processes - 1}, got {process_id}')
    try:
        jax.distributed.initialize(coordinator_address=coordinator,
                                   num_processes=num_processes, process_id=process_id)
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f'jax.distributed.initialize failed: {first}') from None
    return current()


def current() -> Processes:
    return Processes(jax.process_index(), jax.process_count())


def training_devices(num_devices: int) -> list:
    """The devices a run trains on: the first ``num_devices`` (0 = all) local devices of every
    process, processes in order, so each process's devices hold a contiguous block of rows."""
    per_process = {}
    for device in jax.devices():
        per_process.setdefault(device.process_index, []).append(device)
    local = len(per_process[jax.process_index()])
    if num_devices > local:
        raise UserError(f'train.num_devices={num_devices} but only {local} local devices')
    return [d for p in sorted(per_process)
            for d in sorted(per_process[p], key=lambda d: d.id)[:num_devices or None]]


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name``."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def broadcast(values: np.ndarray) -> np.ndarray:
    """Process 0's ``values`` (a NumPy array of the same shape on every process), everywhere."""
    if jax.process_count() == 1:
        return np.asarray(values)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(values)))


def replicate(tree, sharding):
    """Host values (the same on every process) as global arrays with a replicated ``sharding``."""
    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(put, tree)


def global_batch(batch: dict, sharding) -> dict:
    """This process's rows of a batch (S, b, ...) -> global arrays (S, b * processes, ...)."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def local_params(params, seed_index: int):
    """One seed's parameters as arrays on the first local device (from a stacked state that
    may be spread over the devices of several processes)."""
    def local(x):
        x = x.addressable_data(0) if isinstance(x, jax.Array) else x
        return x[seed_index]
    return jax.tree.map(local, params)
