"""Training batches as a pure function of (seed, step), and background prefetching (SPEC §4).

NumPy only. Because the batch of a global step depends on nothing but (seed, step), a run resumed
from a checkpoint at step s sees exactly the batches an uninterrupted run would have seen.
"""

import collections
import concurrent.futures
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from wtal_jax.data import sampling


class StepSegments(NamedTuple):
    """What the rows of one training step take: B videos and T segments of each."""
    ids: np.ndarray     # (B,) int64 video indices
    mask: np.ndarray    # (B,) float32, 0 for the padding of a remainder batch
    index: np.ndarray   # (B, T) int64 segments of each row's video


class TrainBatches:
    """Fixed-shape training batches of B videos, each sampled to T segments.

    Epoch e = step // steps_per_epoch visits every video once, in the order
    ``np.random.default_rng([seed, e]).permutation(V)``, with steps_per_epoch = ceil(V / B). The
    last batch of an epoch holds the remainder (THUMOS'14: 200 = 12 x 16 + 8); it is padded to B
    by repeating its own videos with mask 0, so every batch has one shape and the training step
    compiles once. With ``order='draws'`` (BaS-Net's release, SPEC §8.2) only the first epoch
    is one; every later step s takes the first B of a fresh order
    ``default_rng([seed, s, 2]).permutation(V)``. The temporal jitter of step s comes from
    ``default_rng([seed, s, 1])``.
    """

    def __init__(self, features: Sequence[np.ndarray], labels: np.ndarray, *,
                 num_segments: int, batch_size: int, seed: int, order: str = 'epochs'):
        """
        Args:
          features: V arrays (n_i, D), any n_i >= 1, one D.
          labels: (V, C) video-level multi-hot labels.
          num_segments: T, segments per sampled video.
          batch_size: B, videos per batch.
          seed: non-negative integer; with the step it fixes every batch.
          order: 'epochs' (every epoch visits each video once) or 'draws' (after the first
            epoch, each step draws its videos afresh).
        """
        if len(features) == 0:
            raise ValueError('no training videos')
        if len(labels) != len(features):
            raise ValueError(f'{len(features)} feature arrays but {len(labels)} label rows')
        if num_segments < 1 or batch_size < 1:
            raise ValueError(f'need T >= 1 and B >= 1, got T={num_segments}, B={batch_size}')
        if seed < 0:
            raise ValueError(f'seed must be non-negative, got {seed}')
        if order not in ('epochs', 'draws'):
            raise ValueError(f"order must be 'epochs' or 'draws', got {order!r}")
        dims = {f.shape[1] for f in features}
        if len(dims) != 1:
            raise ValueError(f'videos differ in feature size: {sorted(dims)}')
        self.features = list(features)
        self.lengths = np.array([f.shape[0] for f in features], np.int64)
        self.labels = np.asarray(labels, np.float32)
        self.num_segments = int(num_segments)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.order = order
        self.feature_dim = dims.pop()

    @property
    def num_videos(self) -> int:
        return len(self.lengths)

    def release_features(self) -> None:
        """Drops the features (only :meth:`index_batch` works after this): for training from
        a packed table on the device, where the host need not keep a copy."""
        self.features = None

    @property
    def steps_per_epoch(self) -> int:
        """ceil(V / B): the last step of an epoch takes the remainder."""
        return math.ceil(self.num_videos / self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """(V,) int64 permutation of the videos for ``epoch``."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_videos)

    def video_ids(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Videos of global ``step``: (B,) int64 indices and (B,) float32 mask (0 = padding)."""
        if step < 0:
            raise ValueError(f'step must be non-negative, got {step}')
        epoch, position = divmod(step, self.steps_per_epoch)
        if self.order == 'draws' and epoch > 0:
            real = np.random.default_rng([self.seed, step, 2]).permutation(
                self.num_videos)[:self.batch_size]
        else:
            real = self.epoch_order(epoch)[position * self.batch_size:
                                           (position + 1) * self.batch_size]
        # Padding repeats the batch's own real videos, so padded rows hold ordinary data and
        # nothing non-finite can leak through a masked entry.
        ids = np.resize(real, self.batch_size)
        mask = (np.arange(self.batch_size) < len(real)).astype(np.float32)
        return ids.astype(np.int64), mask

    def segment_indices(self, step: int) -> StepSegments:
        """The videos, mask and segments each row of ``step`` takes.

        Row r takes segments ``index[r]`` of video ``ids[r]``; the jitter of step s comes from
        ``default_rng([seed, s, 1])``, drawn row by row.
        """
        ids, mask = self.video_ids(step)
        rng = np.random.default_rng([self.seed, step, 1])
        index = np.stack([sampling.train_indices(int(self.lengths[v]), self.num_segments, rng)
                          for v in ids])
        return StepSegments(ids, mask, index)

    def batch(self, step: int, rows: slice = slice(None)) -> dict[str, np.ndarray]:
        """The batch of global ``step`` (its ``rows`` only), a pure function of (seed, step).

        Returns:
          features (b, T, D) float32, labels (b, C) float32, mask (b,) float32, with b the
          number of ``rows`` (B by default).
        """
        ids, mask, index = (a[rows] for a in self.segment_indices(step))
        out = np.empty((len(ids), self.num_segments, self.feature_dim), np.float32)
        for row, (v, take) in enumerate(zip(ids, index)):
            np.take(self.features[v], take, axis=0, out=out[row])
        return {'features': out, 'labels': self.labels[ids], 'mask': mask}

    def index_batch(self, step: int, offsets: np.ndarray, rows: slice = slice(None)
                    ) -> dict[str, np.ndarray]:
        """The batch of ``step`` as rows of a packed feature table (see :func:`pack_table`).

        Returns index (b, T) int32 into the table, labels (b, C), mask (b,): gathering
        ``table[index]`` gives exactly ``batch(step, rows)['features']``.
        """
        ids, mask, index = (a[rows] for a in self.segment_indices(step))
        return {'index': (offsets[ids][:, None] + index).astype(np.int32),
                'labels': self.labels[ids], 'mask': mask}


def pack_table(features: Sequence[np.ndarray], dtype=np.float32
               ) -> tuple[np.ndarray, np.ndarray]:
    """Every video's features one after another: table (N, D) and offsets (V,) int64.

    Video v is ``table[offsets[v]:offsets[v] + n_v]``. Built once, uploaded once, so a
    training step needs only the (B, T) indices from the host.
    """
    lengths = np.array([f.shape[0] for f in features], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    table = np.empty((int(lengths.sum()), features[0].shape[1]), dtype)
    for f, start in zip(features, offsets):
        table[start:start + f.shape[0]] = f
    return table, offsets


def seed_batch(batchers: Sequence[TrainBatches], step: int, *, rows: slice,
               offsets: np.ndarray | None) -> dict[str, np.ndarray]:
    """The batches of ``step`` for S seeds, stacked to (S, b, ...), this process's ``rows``.

    With ``offsets`` the features stay in the device table (``index``), else they are gathered
    here (``features``). ``row`` (S, b) int32 is each video's position in the global batch,
    which seeds its dropout.
    """
    parts = [b.batch(step, rows) if offsets is None else b.index_batch(step, offsets, rows)
             for b in batchers]
    out = {k: np.stack([p[k] for p in parts]) for k in parts[0]}
    positions = np.arange(batchers[0].batch_size, dtype=np.int32)[rows]
    out['row'] = np.broadcast_to(positions, out['mask'].shape).copy()
    return out


def prefetch(batch_fn: Callable[[int], Any], start_step: int, stop_step: int,
             buffer_size: int = 2, num_workers: int = 1) -> Iterator[tuple[int, Any]]:
    """Yields ``(step, batch_fn(step))`` for start_step <= step < stop_step, in step order.

    ``num_workers`` threads prepare up to ``buffer_size + num_workers - 1`` batches ahead, so the
    accelerator does not wait for the host (NumPy releases the GIL while it gathers and copies
    features, so several workers help where one batch takes longer than one step). Batches
    are pure functions of the step, so the order of work never changes what is yielded. An
    exception raised by ``batch_fn`` is re-raised here, at the step it belongs to. Stopping
    early (``break``, an exception in the consumer, ``close()``) cancels what is queued and
    waits for the batches in progress.
    """
    if buffer_size < 1 or num_workers < 1:
        raise ValueError(f'buffer_size and num_workers must be at least 1, got {buffer_size} '
                         f'and {num_workers}')
    steps = iter(range(start_step, stop_step))
    pending: collections.deque = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(num_workers,
                                               thread_name_prefix='wtal-prefetch') as pool:
        def submit_next() -> None:
            step = next(steps, None)
            if step is not None:
                pending.append((step, pool.submit(batch_fn, step)))

        try:
            for _ in range(buffer_size + num_workers - 1):
                submit_next()
            while pending:
                step, future = pending.popleft()
                batch = future.result()
                submit_next()
                yield step, batch
        finally:
            for _, future in pending:
                future.cancel()
