"""Whether a run fits in memory, estimated from its config before anything is allocated or
written: a config asking for more than the machine has (``--seeds 100000``, a ``batch_size``,
``data.num_segments`` or ``eval.chunk_segments`` of billions) is refused in one line naming the
estimate and the limit, instead of ending in ``MemoryError``, ``RESOURCE_EXHAUSTED`` or an abort.

How conservative: the estimate is a floor. It counts only buffers the step and the evaluator
certainly hold at one time, per device:

* the train state of every seed (parameters and Adam's two moments, from the method's own
  network, shapes only) and its gradients;
* the batch of every seed: the gathered features and, at least, the network's (B, T, E) output
  and its gradient: ``S x B/devices x T x (D + 2E)`` values of ``model.dtype``;
* the evaluator's packed chunk: its features and the network's output, ``chunk x (D + E)``;
* the training features' table, where they go to the device.

XLA holds more (the network's other intermediates, its work space, a compiled program), so a
config estimated under the limit may still not fit; one estimated over it cannot. On THUMOS'14
sizes (D = E = 2048, T = 750, B = 16, C = 20) the floor for five seeds at once is 2.4 GiB for
UM and 3.5 GiB for BaS-Net, a tenth and a seventh of a 24 GiB card; the README's quick start's
is 50 MiB (``tests/test_loop.py``).
"""

from typing import NamedTuple

import jax
import numpy as np

from wtal_jax import config as config_lib
from wtal_jax import method as method_lib
from wtal_jax import training
from wtal_jax.errors import UserError
from wtal_jax.io_utils import available_memory_bytes, size_text

# What to change when a term is the largest: said in the refusal.
KNOBS = {'train state': 'lower the seeds or model.embed_dim',
         'batches': 'lower train.batch_size, data.num_segments or the seeds',
         'inference chunk': 'lower eval.chunk_segments',
         'parameters': 'lower model.embed_dim',
         'training features': 'keep the training features on the host '
                              '(train.data_on_device=never)'}


class Estimate(NamedTuple):
    """Bytes a device needs at least (``terms``: what -> bytes), and the total."""
    terms: dict
    total: int


def _bytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def seed_state_bytes(cfg, num_classes: int) -> tuple[int, int]:
    """(one seed's train state, its parameters) in bytes, from shapes alone (nothing
    allocated): the method's network for ``num_classes`` classes and the optimiser's state."""
    model = method_lib.load(cfg.method).model(cfg, num_classes)
    state = jax.eval_shape(lambda: training.create_train_state(
        model, training.make_optimizer(cfg.optim), seed=0, feature_dim=cfg.data.feature_dim,
        num_segments=cfg.data.num_segments))
    return _bytes(state), _bytes(state.params)


def _num_classes(cfg) -> int:
    # A class list read from the annotations is not known yet: one class, a floor.
    return len(cfg.data.class_names) or 1


def _values(cfg, segments: int, *widths: int) -> int:
    """Bytes of ``segments`` rows of ``sum(widths)`` values of ``model.dtype``."""
    itemsize = 2 if cfg.model.dtype == 'bfloat16' else 4
    return segments * sum(widths) * itemsize


def for_training(cfg, num_devices: int, *, table_bytes: int = 0) -> Estimate:
    """What one of ``num_devices`` devices holds at least while training ``cfg`` (a floor:
    see the module's docstring); ``table_bytes``: the training features, where they go to
    the device (each device holds them whole)."""
    seeds = len(config_lib.run_seeds(cfg))
    state, params = seed_state_bytes(cfg, _num_classes(cfg))
    rows = -(-cfg.train.batch_size // num_devices)
    d, e, t = cfg.data.feature_dim, cfg.model.embed_dim, cfg.data.num_segments
    terms = {'train state': seeds * (state + params),   # and its gradients
             'batches': seeds * _values(cfg, rows * t, d, 2 * e),
             'inference chunk': _values(cfg, cfg.eval.chunk_segments, d, e)}
    if table_bytes:
        terms['training features'] = table_bytes
    return Estimate(terms, sum(terms.values()))


def for_evaluation(cfg, num_classes: int) -> Estimate:
    """What the device holds at least while evaluating one seed's parameters under ``cfg``."""
    _, params = seed_state_bytes(cfg, num_classes)
    terms = {'parameters': params,
             'inference chunk': _values(cfg, cfg.eval.chunk_segments, cfg.data.feature_dim,
                                        cfg.model.embed_dim)}
    return Estimate(terms, sum(terms.values()))


def limit(device) -> tuple[int, str] | None:
    """(bytes, what) a device can give: an accelerator's memory (``bytes_limit``), or on a
    CPU the host memory available now; None where neither is known."""
    stats = device.memory_stats() if device.platform != 'cpu' else None
    if stats and stats.get('bytes_limit'):
        return int(stats['bytes_limit']), f'{device.device_kind} memory'
    available = available_memory_bytes()
    return None if available is None else (available, 'host memory available')


def check(estimate: Estimate, devices, what: str) -> None:
    """Refuses, in one line with the estimate and the limit, what cannot fit on ``devices``
    (the local devices of a run; on a CPU they share the host's memory)."""
    local = [d for d in devices if d.process_index == jax.process_index()]
    found = limit(local[0])
    if found is None:
        return
    total = estimate.total * (len(local) if local[0].platform == 'cpu' else 1)
    available, where = found
    if total <= available:
        return
    largest = max(estimate.terms, key=estimate.terms.get)
    advice = KNOBS[largest]
    if 'training features' in estimate.terms and largest != 'training features':
        advice += ', or ' + KNOBS['training features']
    terms = ', '.join(f'{name} {size_text(size)}' for name, size in estimate.terms.items())
    per = f' on each of {len(local)} devices' if len(local) > 1 else ''
    raise UserError(f'{what} needs at least {size_text(total)} of memory ({terms}{per}), more '
                    f'than the {size_text(available)} of {where}; {advice}')
