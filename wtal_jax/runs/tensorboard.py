"""TensorBoard event files of a run (``RUN/events/``), written from its ``metrics.jsonl`` rows.

``metrics.jsonl`` is the source of truth; the events are a view of it for
``tensorboard --logdir RUNS``, written through tensorboardX (numpy, packaging and protobuf:
light, where TensorBoard itself or CLU would bring a web server or TensorFlow). The layout gives
TensorBoard one run per seed, so that the seeds of a tag share one chart:

    events/            learning rate and steps per second (the same for every seed)
    events/seed_S/     every number of seed S's rows: losses, average mAP, each protocol average
    events/mean/       their mean over the seeds (runs of several seeds), once all have a row

Tags are ``SPLIT/KEY`` (``train/loss_um``, ``selection/average_mAP``, ``test/accuracy``) and
``SPLIT/KEY/NAME`` for the numbers of a dict, characters that a tag may not hold made ``-``
(``test/averages/0.1-0.7``: the protocol average over tIoU 0.1:0.7). A resumed run keeps the
rows up to its restored step (``RunDir.restart_metrics``): its events are then written anew
from those rows, with TensorBoard's purge marker (a session start at step 0), so that a
TensorBoard already showing the killed run's points drops them instead of showing them twice.
The rewritten points carry the time of the rewrite.
"""

import os
import re
import shutil
import sys

import numpy as np

EVENTS_DIR = 'events'
MEAN = 'mean'
# The keys of a training row that are the same for every seed: written once, not per seed.
SHARED = ('steps_per_second', 'learning_rate')
# tensorboardX imports these when installed, to accept their tensors: seconds and hundreds of
# MB per training process for torch alone; numbers from NumPy need none of them.
# What a tag may hold besides letters and digits (tensorboardX replaces anything else by '_').
_TAG_EXCLUDES = re.compile(r'[^A-Za-z0-9_.\-/]')
_NOT_NEEDED = ('torch', 'boto3', 'comet_ml', 'google.cloud.storage')


def scalars(row: dict) -> dict[str, float]:
    """Tag -> value of every number of a metrics row: ``SPLIT/KEY``, and ``SPLIT/KEY/NAME`` for
    a dict of numbers; lists (mAP per tIoU), texts and the row's step and seed left out."""
    split, out = row.get('split', 'train'), {}
    for key, value in row.items():
        if key in ('step', 'seed', 'split'):
            continue
        if isinstance(value, dict):
            out.update({f'{split}/{key}/{_TAG_EXCLUDES.sub("-", name)}': float(v)
                        for name, v in value.items() if _number(v)})
        elif _number(value):
            out[f'{split}/{key}'] = float(value)
    return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summary_writer_class():
    """tensorboardX's SummaryWriter, imported without the frameworks it would otherwise load."""
    blocked = [name for name in _NOT_NEEDED if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None   # an import of it raises ImportError: tensorboardX goes on
    try:
        from tensorboardX import SummaryWriter
    finally:
        for name in blocked:
            del sys.modules[name]
    return SummaryWriter


class Events:
    """The event files of one run: written anew from ``rows`` (the metrics kept so far), then
    added to by :meth:`add` with every row appended.

    Args:
      folder: ``RUN/events`` (removed first: the events are a view of ``rows``).
      seeds: the run's seeds, in order (the mean is written once each has its row).
      rows: the rows of ``metrics.jsonl`` so far.
    """

    def __init__(self, folder: str, seeds, rows=()):
        shutil.rmtree(folder, ignore_errors=True)
        self.folder, self.seeds = folder, tuple(seeds)
        self._class = summary_writer_class()
        self._writers = {}
        for name in ['', *(f'seed_{s}' for s in self.seeds)] + (
                [MEAN] if len(self.seeds) > 1 else []):
            self._writer(name)
        self._pending = {}   # (step, split) -> [scalars of each seed's row so far]
        for row in rows:
            self.add(row, flush=False)
        self.flush()

    def add(self, row: dict, *, flush: bool = True) -> None:
        """Writes one metrics row's numbers (and, with the last seed's row of a step and split,
        their mean over the seeds)."""
        step, seed = row['step'], row.get('seed', self.seeds[0])
        values = scalars(row)
        own = {t: v for t, v in values.items() if t.rsplit('/', 1)[-1] not in SHARED}
        if seed == self.seeds[0]:
            for tag in values.keys() - own.keys():
                self._writer('').add_scalar(tag, values[tag], step)
        for tag, value in own.items():
            self._writer(f'seed_{seed}').add_scalar(tag, value, step)
        if MEAN in self._writers:
            self._add_to_mean((step, row.get('split')), own)
        if flush:
            self.flush()

    def _writer(self, name: str):
        """The writer of run ``name`` ('' for ``events/`` itself), opened on first use with the
        purge marker; its own timer flushes every 10 s, :meth:`add` after every row."""
        if name not in self._writers:
            self._writers[name] = self._class(os.path.join(self.folder, name), purge_step=0,
                                              flush_secs=10)
        return self._writers[name]

    def _add_to_mean(self, key: tuple, values: dict) -> None:
        """Collects a step's rows of every seed; writes the mean of the tags all of them have."""
        rows = self._pending.setdefault(key, [])
        rows.append(values)
        if len(rows) < len(self.seeds):
            return
        del self._pending[key]
        for tag in set.intersection(*(set(r) for r in rows)):
            self._writer(MEAN).add_scalar(tag, float(np.mean([r[tag] for r in rows])), key[0])

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
