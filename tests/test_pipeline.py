"""Training batches as a pure function of (seed, step), and the prefetching thread."""

import threading
import time

import numpy as np
import pytest

from wtal_jax.data import sampling
from wtal_jax.data.pipeline import TrainBatches, prefetch


def make_videos(num_videos=200, dim=6, num_classes=4, seed=0):
    """Videos whose every value is the video's index, so a batch row tells which video it is."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, num_videos)
    features = [np.full((n, dim), v, np.float32) for v, n in enumerate(lengths)]
    labels = np.eye(num_classes, dtype=np.float32)[np.arange(num_videos) % num_classes]
    return features, labels


def test_shapes_and_dtypes():
    features, labels = make_videos()
    batches = TrainBatches(features, labels, num_segments=50, batch_size=16, seed=0)
    batch = batches.batch(0)
    assert batch['features'].shape == (16, 50, 6) and batch['features'].dtype == np.float32
    assert batch['labels'].shape == (16, 4) and batch['labels'].dtype == np.float32
    assert batch['mask'].shape == (16,) and batch['mask'].dtype == np.float32


def test_remainder_batch_is_padded_and_masked():
    features, labels = make_videos(200)
    batches = TrainBatches(features, labels, num_segments=8, batch_size=16, seed=3)
    assert batches.steps_per_epoch == 13  # 200 = 12 x 16 + 8
    for step in range(3 * 13):
        mask = batches.batch(step)['mask']
        expected = 8 if step % 13 == 12 else 16
        assert mask.sum() == expected
        assert np.all(mask[:int(mask.sum())] == 1)  # real videos first, padding after
    last = batches.batch(12)
    ids = last['features'][:, 0, 0].astype(int)
    # Padding repeats the batch's own real videos, with their labels.
    assert set(ids[8:]) <= set(ids[:8])
    np.testing.assert_array_equal(last['labels'], labels[ids])


@pytest.mark.parametrize('num_videos,batch_size', [(200, 16), (7, 16), (32, 16), (33, 4)])
def test_each_epoch_visits_every_video_once(num_videos, batch_size):
    features, labels = make_videos(num_videos)
    batches = TrainBatches(features, labels, num_segments=5, batch_size=batch_size, seed=1)
    orders = []
    for epoch in range(3):
        seen = []
        for step in range(epoch * batches.steps_per_epoch, (epoch + 1) * batches.steps_per_epoch):
            batch = batches.batch(step)
            real = batch['mask'] > 0
            ids = batch['features'][real, 0, 0].astype(int)
            # Every sampled segment of a row comes from the same video.
            assert np.all(batch['features'][real] == ids[:, None, None])
            np.testing.assert_array_equal(batch['labels'][real], labels[ids])
            seen.extend(ids.tolist())
        assert sorted(seen) == list(range(num_videos))
        orders.append(seen)
    if num_videos > 3:
        assert orders[0] != orders[1]  # a fresh order each epoch


def test_batches_are_pure_functions_of_seed_and_step():
    features, labels = make_videos(50)
    rng = np.random.default_rng(0)
    features = [rng.random((len(f), 6)).astype(np.float32) for f in features]
    a = TrainBatches(features, labels, num_segments=30, batch_size=8, seed=5)
    b = TrainBatches(features, labels, num_segments=30, batch_size=8, seed=5)
    other = TrainBatches(features, labels, num_segments=30, batch_size=8, seed=6)
    for step in (17, 0, 3, 17, 1000):  # any order, repeated: a resumed run sees the same data
        first, second = a.batch(step), b.batch(step)
        for key in first:
            np.testing.assert_array_equal(first[key], second[key])
        np.testing.assert_array_equal(a.batch(step)['features'], first['features'])
    assert not np.array_equal(a.batch(0)['features'], other.batch(0)['features'])
    # The temporal jitter differs between steps even for the same videos (epochs 0 and 1 share
    # nothing else here, so compare one video across two epochs).
    assert not np.array_equal(a.batch(0)['features'], a.batch(a.steps_per_epoch)['features'])


def test_temporal_sampling_uses_train_indices_with_the_step_rng():
    # A video whose value is its segment index, so a batch row shows the indices drawn.
    features = [np.arange(n, dtype=np.float32)[:, None].repeat(2, 1) for n in (3, 40, 100, 7)]
    labels = np.ones((4, 1), np.float32)
    batches = TrainBatches(features, labels, num_segments=40, batch_size=3, seed=9)
    for step in (0, 1, 5):
        batch = batches.batch(step)
        ids, _ = batches.video_ids(step)
        rng = np.random.default_rng([9, step, 1])
        for row, v in zip(batch['features'][..., 0], ids):
            np.testing.assert_array_equal(row, sampling.train_indices(len(features[v]), 40, rng))


def test_rejects_bad_arguments():
    features, labels = make_videos(5)
    with pytest.raises(ValueError):
        TrainBatches(features, labels[:4], num_segments=5, batch_size=2, seed=0)
    with pytest.raises(ValueError):
        TrainBatches(features, labels, num_segments=5, batch_size=2, seed=-1)
    with pytest.raises(ValueError):
        TrainBatches([], labels[:0], num_segments=5, batch_size=2, seed=0)
    with pytest.raises(ValueError):
        TrainBatches(features, labels, num_segments=5, batch_size=2, seed=0).batch(-1)


@pytest.mark.parametrize('num_workers', [1, 4])
def test_prefetch_yields_what_direct_calls_give(num_workers):
    features, labels = make_videos(40)
    batches = TrainBatches(features, labels, num_segments=10, batch_size=8, seed=2)
    got = list(prefetch(batches.batch, 3, 20, buffer_size=3, num_workers=num_workers))
    assert [step for step, _ in got] == list(range(3, 20))
    for step, batch in got:
        direct = batches.batch(step)
        for key in direct:
            np.testing.assert_array_equal(batch[key], direct[key])


def test_prefetch_propagates_an_exception_at_its_step():
    def batch_fn(step):
        if step == 5:
            raise RuntimeError('broken batch 5')
        return step

    seen = []
    with pytest.raises(RuntimeError, match='broken batch 5'):
        for step, value in prefetch(batch_fn, 0, 10):
            seen.append(value)
    assert seen == [0, 1, 2, 3, 4]


def test_prefetch_stops_its_thread_when_the_consumer_stops_early():
    calls = []

    def batch_fn(step):
        calls.append(step)
        return step

    before = {t.ident for t in threading.enumerate()}
    stream = prefetch(batch_fn, 0, 10**9, buffer_size=2)
    for step, _ in stream:
        if step == 3:
            break
    stream.close()
    # The producer is joined on close; a few batches beyond the consumer at most were made.
    time.sleep(0.1)
    assert {t.ident for t in threading.enumerate()
            if t.name.startswith('wtal-prefetch')} <= before
    assert len(calls) <= 4 + 2 + 1


def test_prefetch_workers_run_concurrently():
    # Two workers, each batch waits for the other one to start: one worker would deadlock.
    barrier = threading.Barrier(2, timeout=5)

    def batch_fn(step):
        barrier.wait()
        return step

    assert [s for s, _ in prefetch(batch_fn, 0, 4, buffer_size=1, num_workers=2)] == [0, 1, 2, 3]


def test_prefetch_empty_range():
    assert list(prefetch(lambda s: s, 5, 5)) == []
