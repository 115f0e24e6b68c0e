"""Training batches as a pure function of (seed, step), and background prefetching (SPEC §4).

NumPy only. Because the batch of a global step depends on nothing but (seed, step), a run resumed
from a checkpoint at step s sees exactly the batches an uninterrupted run would have seen.
"""

import collections
import concurrent.futures
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from wtal_jax.data import sampling


class TrainBatches:
    """Fixed-shape training batches of B videos, each sampled to T segments.

    Epoch e = step // steps_per_epoch visits every video once, in the order
    ``np.random.default_rng([seed, e]).permutation(V)``, with steps_per_epoch = ceil(V / B). The
    last batch of an epoch holds the remainder (THUMOS'14: 200 = 12 x 16 + 8); it is padded to B
    by repeating its own videos with mask 0, so every batch has one shape and the training step
    compiles once. The temporal jitter of step s comes from ``default_rng([seed, s, 1])``.
    """

    def __init__(self, features: Sequence[np.ndarray], labels: np.ndarray, *,
                 num_segments: int, batch_size: int, seed: int):
        """
        Args:
          features: V arrays (n_i, D), any n_i >= 1, one D.
          labels: (V, C) video-level multi-hot labels.
          num_segments: T, segments per sampled video.
          batch_size: B, videos per batch.
          seed: non-negative integer; with the step it fixes every batch.
        """
        if len(features) == 0:
            raise ValueError('no training videos')
        if len(labels) != len(features):
            raise ValueError(f'{len(features)} feature arrays but {len(labels)} label rows')
        if num_segments < 1 or batch_size < 1:
            raise ValueError(f'need T >= 1 and B >= 1, got T={num_segments}, B={batch_size}')
        if seed < 0:
            raise ValueError(f'seed must be non-negative, got {seed}')
        dims = {f.shape[1] for f in features}
        if len(dims) != 1:
            raise ValueError(f'videos differ in feature size: {sorted(dims)}')
        self.features = list(features)
        self.labels = np.asarray(labels, np.float32)
        self.num_segments = int(num_segments)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.feature_dim = dims.pop()

    @property
    def num_videos(self) -> int:
        return len(self.features)

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
        real = self.epoch_order(epoch)[position * self.batch_size:
                                       (position + 1) * self.batch_size]
        # Padding repeats the batch's own real videos, so padded rows hold ordinary data and
        # nothing non-finite can leak through a masked entry.
        ids = np.resize(real, self.batch_size)
        mask = (np.arange(self.batch_size) < len(real)).astype(np.float32)
        return ids.astype(np.int64), mask

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The batch of global ``step``, a pure function of (seed, step).

        Returns:
          features (B, T, D) float32, labels (B, C) float32, mask (B,) float32.
        """
        ids, mask = self.video_ids(step)
        rng = np.random.default_rng([self.seed, step, 1])
        out = np.empty((self.batch_size, self.num_segments, self.feature_dim), np.float32)
        for row, v in enumerate(ids):
            video = self.features[v]
            index = sampling.train_indices(video.shape[0], self.num_segments, rng)
            np.take(video, index, axis=0, out=out[row])
        return {'features': out, 'labels': self.labels[ids], 'mask': mask}


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
