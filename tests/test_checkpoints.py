"""Checkpoint checksums against a plain-Python computation, a single changed word found in a
real orbax checkpoint, and each seed's best step kept across a reopened manager."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wtal_jax.runs import checkpoints


def reference_checksum(array: np.ndarray) -> int:
    """sum_i (2i + 1) * word_i mod 2^32, in Python integers: the words of 4-byte types are their
    native (little-endian here) 32-bit words, those of other types their single bytes."""
    raw = np.ascontiguousarray(array).tobytes()
    if array.dtype.itemsize == 4:
        words = [int.from_bytes(raw[i:i + 4], 'little') for i in range(0, len(raw), 4)]
    else:
        words = list(raw)
    return sum((2 * i + 1) * w for i, w in enumerate(words)) % 2 ** 32


def sample_tree():
    rng = np.random.default_rng(0)
    return {
        'float32': rng.standard_normal((37, 11)).astype(np.float32),
        # Large words, so that the sum wraps many times.
        'uint32': rng.integers(2 ** 31, 2 ** 32, size=5000, dtype=np.uint32),
        'int32': rng.integers(-2 ** 31, 2 ** 31, size=(3, 4, 5), dtype=np.int32),
        'scalar': np.int32(-7),
        'float16': rng.standard_normal(19).astype(np.float16),
        'bfloat16': np.asarray(rng.standard_normal((4, 3)), dtype=jnp.bfloat16),
        'int8': rng.integers(-128, 128, size=23, dtype=np.int8),
        'empty': np.zeros((0, 4), np.float32),
        'nan': np.array([1.0, np.nan, np.inf], np.float32),
    }


def test_checksums_equal_a_plain_python_computation():
    tree = sample_tree()
    sums, finite = checkpoints.checksums(jax.tree.map(jnp.asarray, tree))
    assert not finite   # the NaN leaf
    assert set(sums) == {f"['{k}']" for k in tree}
    for name, array in tree.items():
        expected = reference_checksum(np.asarray(array))
        assert sums[f"['{name}']"] == expected, name
        assert checkpoints.numpy_checksum(np.asarray(array)) == expected, name
    assert sums["['empty']"] == 0
    # A transposed (non-contiguous) host array is summed in its logical order.
    a = tree['float32'].T
    assert checkpoints.numpy_checksum(a) == reference_checksum(np.ascontiguousarray(a))
    finite_only = {k: v for k, v in tree.items() if k != 'nan'}
    assert checkpoints.checksums(jax.tree.map(jnp.asarray, finite_only))[1]


@pytest.mark.parametrize('dtype', [np.float32, np.int8])
def test_changing_any_single_word_changes_the_checksum(dtype):
    """The weights 2i + 1 are odd, hence invertible modulo 2^32: any change of one word, the
    top bit alone included, changes the sum."""
    rng = np.random.default_rng(1)
    size = 300
    base = rng.integers(0, 2 ** 32, size=size, dtype=np.uint32).view(np.float32) \
        if dtype == np.float32 else rng.integers(-128, 128, size=size, dtype=np.int8)
    word = np.uint32 if dtype == np.float32 else np.uint8
    top = word(1) << word(8 * np.dtype(word).itemsize - 1)
    original, _ = checkpoints.checksums({'x': jnp.asarray(base)})
    changed = []
    for index in range(size):
        for delta in (word(rng.integers(1, np.iinfo(word).max, dtype=word)), top):
            words = base.view(word).copy()
            words[index] = words[index] ^ delta
            sums, _ = checkpoints.checksums({'x': jnp.asarray(words.view(dtype))})
            changed.append(sums != original)
    assert all(changed) and len(changed) == 2 * size


def _state():
    rng = np.random.default_rng(2)
    # Random words do not compress: orbax stores them as they are (zstd raw blocks), so the
    # test can find them in the data files and change exactly one.
    return {'weights': rng.integers(-2 ** 31, 2 ** 31, size=(64, 48), dtype=np.int32),
            'bias': rng.standard_normal(48).astype(np.float32)}


def _save(manager, step, state):
    sums, _ = checkpoints.checksums(state)
    checkpoints.save(manager, step, state, {'checksums': sums})
    manager.wait_until_finished()


def test_a_single_changed_word_in_a_saved_array_is_found_on_restore(tmp_path):
    state = _state()
    with checkpoints.open_manager(str(tmp_path), keep=3) as manager:
        _save(manager, 1, state)
    raw = state['weights'].tobytes()
    index = 1234
    found = []
    for path in glob.glob(str(tmp_path / '1' / 'state' / '**' / 'd' / '*'), recursive=True):
        data = bytearray(open(path, 'rb').read())
        at = data.find(raw)
        if at >= 0:
            found.append(path)
            offset = at + 4 * index
            data[offset:offset + 4] = (int.from_bytes(data[offset:offset + 4], 'little') + 1
                                       ).to_bytes(4, 'little')[:4]
            with open(path, 'wb') as f:
                f.write(data)
    assert len(found) == 1, 'the raw words of the array are in exactly one data file'
    abstract = checkpoints.abstract_like(state)
    with checkpoints.open_manager(str(tmp_path), keep=3, read_only=True) as manager:
        # Orbax alone reads the changed word without complaint ...
        loaded = manager.restore(1, args=checkpoints.ocp.args.Composite(
            state=checkpoints.ocp.args.StandardRestore(abstract))).state
        differ = np.argwhere(np.asarray(loaded['weights']).reshape(-1) != state['weights']
                             .reshape(-1)).reshape(-1)
        assert differ.tolist() == [index]
        np.testing.assert_array_equal(loaded['bias'], state['bias'])
        # ... the checksums do not.
        with pytest.raises(checkpoints.CorruptCheckpoint,
                           match=r"step 1: checksum mismatch in \['weights'\]"):
            checkpoints.restore(manager, 1, abstract)


def test_an_intact_checkpoint_restores_bit_for_bit(tmp_path):
    state = _state()
    with checkpoints.open_manager(str(tmp_path), keep=3) as manager:
        _save(manager, 5, state)
    with checkpoints.open_manager(str(tmp_path), keep=3, read_only=True) as manager:
        restored, meta = checkpoints.restore(manager, 5, checkpoints.abstract_like(state))
    for name in state:
        np.testing.assert_array_equal(np.asarray(restored[name]), state[name])
    assert meta['checksums'] == checkpoints.checksums(state)[0]


KEY = checkpoints.metric_key('selection', 'average_mAP')


def _save_scored(manager, step, per_seed):
    state = {'x': np.full(3, step, np.float32)}
    sums, _ = checkpoints.checksums(state)
    checkpoints.save(manager, step, state, {'checksums': sums}, {KEY: per_seed})
    manager.wait_until_finished()


@pytest.mark.parametrize('mode', ['max', 'min'])
def test_each_seeds_best_step_is_kept_across_a_reopened_manager(tmp_path, mode):
    """keep=1 latest plus one best per seed. A resumed run opens a new manager: it must still
    know the earlier steps' metrics (read back from disk) and keep each seed's best."""
    sign = 1 if mode == 'max' else -1
    first = {1: [0.9, 0.1], 2: [0.1, 0.8], 3: [0.2, 0.2], 4: [0.3, 0.3]}
    second = {5: [0.1, 0.1], 6: [0.5, 0.95]}

    def open_():
        return checkpoints.open_manager(str(tmp_path), keep=1, best_key=KEY, best_mode=mode,
                                          num_seeds=2)

    with open_() as manager:
        for step, values in first.items():
            _save_scored(manager, step, [sign * v for v in values])
        # seed 0's best is 1, seed 1's best is 2, the latest is 4.
        assert sorted(manager.all_steps()) == [1, 2, 4]
    with open_() as manager:   # as a resumed run
        assert sorted(manager.all_steps()) == [1, 2, 4]
        for step, values in second.items():
            _save_scored(manager, step, [sign * v for v in values])
        assert sorted(manager.all_steps()) == [1, 6]   # seed 1's best moved to 6
    kept = sorted(int(n) for n in os.listdir(tmp_path) if n.isdigit())
    assert kept == [1, 6]


def test_a_step_a_reader_has_pinned_outlives_the_retention(tmp_path):
    """A training keeping the latest step only keeps a step a reader is reading (pinned) too,
    and drops it at its next save once the reader is done; a pin left by a dead reader (its
    file unlocked) keeps nothing and is removed."""
    readers = str(tmp_path / checkpoints.READERS_DIR)
    with checkpoints.open_manager(str(tmp_path / 'checkpoints'), keep=1) as manager:
        state = _state()
        _save(manager, 1, state)
        manager.wait_until_finished()
        with checkpoints.pin(readers, 1):
            assert checkpoints.pinned_steps(readers) == {1}
            for step in (2, 3):
                _save(manager, step, state)
                manager.wait_until_finished()
            assert sorted(manager.all_steps()) == [1, 3]
        assert not os.path.exists(readers)            # the read left nothing behind
        os.makedirs(readers)
        stale = os.path.join(readers, '3.999.dead')
        open(stale, 'w').close()                       # nobody holds its lock
        _save(manager, 4, state)
        manager.wait_until_finished()
        assert sorted(manager.all_steps()) == [4] and not os.path.exists(stale)
