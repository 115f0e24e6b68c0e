"""Packed variable-length inference equals one-video-at-a-time ``training.forward`` (SPEC §5.1)."""

import functools

import jax
import numpy as np
import pytest

from wtal_jax.postprocess import inference
from wtal_jax.data import sampling
from wtal_jax import config, training
from wtal_jax.method.um import METHOD
from wtal_jax.method.um.models import UMModel
from wtal_jax.method.um.scores import from_output

C, D, E = 4, 6, 16
T = 24                 # num_segments
R_ACT, R_BKG = 9, 4
CHUNK = 40             # > T: several chunks, and videos that would straddle a chunk boundary


def step_hp(**settings):
    """The default config, frozen, with these model settings (the methods' ``hp``)."""
    cfg = config.default_config()
    cfg.model.update(settings)
    return config.frozen(cfg)


# The selection ratios; no selection dropout, so the keyed pass below is the evaluation pass.
HP = step_hp(r_act=R_ACT, r_bkg=R_BKG, selection_dropout=0.0)


@pytest.fixture(scope='module')
def model_and_params():
    model = UMModel(num_classes=C, embed_dim=E, dropout_rate=0.7)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, T, D), np.float32),
                        train=False)['params']
    return model, params


@pytest.fixture(scope='module')
def forward_one():
    """UM's training.forward on one video (1, T', D), compiled once per length."""
    return jax.jit(functools.partial(training.forward, METHOD), static_argnames=('module', 'hp'))


def videos_of(lengths, seed=0):
    rng = np.random.default_rng(seed)
    # Positive features, like I3D after a ReLU; big enough that the borders matter.
    return [rng.uniform(0, 3, (n, D)).astype(np.float32) for n in lengths]


def check_against_forward(model, params, forward_one, videos, outputs):
    # The evaluation pass: the keyed pass of the same parameters without any dropout.
    deterministic = model.clone(dropout_rate=0.0)
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    assert len(outputs) == len(videos)
    for video, out in zip(videos, map(from_output, outputs)):
        sampled = video[sampling.test_indices(len(video), T)]
        assert len(sampled) == min(len(video), T)
        ref = jax.device_get(forward_one(deterministic, params, sampled[None], hp=HP, keys=keys))
        n = len(sampled)
        assert out.magnitudes.shape == (n,) and out.cas_softmax.shape == (n, C)
        assert out.num_segments == len(video)
        np.testing.assert_allclose(out.p_act, ref.p_act[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.magnitudes, ref.magnitudes[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.cas_softmax, ref.cas_softmax[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.mu_act, ref.mu_act[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.mu_bkg, ref.mu_bkg[0], rtol=1e-5, atol=1e-5)


def test_pack_layout():
    lengths = [5, 30, 12, 50, 1]     # 50 > T: sampled to T = 24
    videos = videos_of(lengths)
    packed = inference.pack(videos, num_segments=T, chunk_size=CHUNK)
    np.testing.assert_array_equal(packed.lengths, [5, 24, 12, 24, 1])
    np.testing.assert_array_equal(packed.num_segments, lengths)
    flat = packed.chunks.reshape(-1, D)
    assert packed.chunks.shape[1:] == (CHUNK, D)
    used = np.zeros(len(flat), bool)
    for video, start, n in zip(videos, packed.start, packed.lengths):
        # Whole video inside one chunk, followed by a zero segment inside that chunk too.
        assert start // CHUNK == (start + n) // CHUNK
        np.testing.assert_array_equal(flat[start:start + n],
                                      video[sampling.test_indices(len(video), T)])
        np.testing.assert_array_equal(flat[start + n], 0)
        if start % CHUNK:
            np.testing.assert_array_equal(flat[start - 1], 0)   # zero before, too
        used[start:start + n] = True
    np.testing.assert_array_equal(flat[~used], 0)
    # Starts: 0 | 5 + gap = 6 | 6 + 24 + 1 > 40 would straddle: next chunk, 40 | 40 + 13 = 53 |
    # 53 + 24 + 1 = 78 <= 80 fits | 78 + 1 + 1 = 80 fits exactly.
    np.testing.assert_array_equal(packed.start, [0, 6, 40, 53, 78])
    assert len(packed.chunks) == 2


def test_pack_rejects_a_chunk_not_longer_than_t():
    with pytest.raises(ValueError, match='chunk size'):
        inference.pack(videos_of([3]), num_segments=T, chunk_size=T)


@pytest.mark.parametrize('lengths', [
    [1, 2, R_ACT - 1, T - 1, T, T + 1, 3 * T + 5],
    [T, T - 1, 2, 1, 37, 18, 19, 20, 5, T],         # several chunks, straddling candidates
])
def test_packed_predictor_equals_one_video_forward(model_and_params, forward_one, lengths):
    model, params = model_and_params
    videos = videos_of(lengths, seed=len(lengths))
    packed = inference.pack(videos, num_segments=T, chunk_size=CHUNK)
    assert len(packed.chunks) >= 2
    predictor = inference.Predictor(METHOD, model, HP, video_multiple=8)
    outputs = predictor(params, packed, num_segments=T)
    check_against_forward(model, params, forward_one, videos, outputs)


def test_durations_pass_through(model_and_params):
    model, params = model_and_params
    videos = videos_of([3, 4])
    packed = inference.pack(videos, num_segments=T, chunk_size=CHUNK)
    predictor = inference.Predictor(METHOD, model, HP)
    out = predictor(params, packed, num_segments=T, durations=np.array([12.5, np.nan]))
    assert out[0].duration == 12.5 and out[1].duration is None


def test_compilations_stay_at_two_for_different_length_mixes(model_and_params, forward_one):
    model, params = model_and_params
    predictor = inference.Predictor(METHOD, model, HP, video_multiple=8)
    mixes = [[1, 2, 3], [T, T, T, T, T, T, T, T], [50, 1, 7, 23, 24], [9, 100, 2, 2, 2, 2]]
    for i, lengths in enumerate(mixes):   # 3..8 videos: one padded count, 8; 1..4 chunks
        videos = videos_of(lengths, seed=10 + i)
        packed = inference.pack(videos, num_segments=T, chunk_size=CHUNK)
        outputs = predictor(params, packed, num_segments=T)
        assert predictor.compilations == 2, (i, predictor.compilations)
        if i == 2:
            check_against_forward(model, params, forward_one, videos, outputs)
    # Another padded video count compiles the (light) selection once more, not the chunks.
    outputs = predictor(params, inference.pack(videos_of([4] * 9), num_segments=T,
                                               chunk_size=CHUNK), num_segments=T)
    assert predictor.compilations == 3 and len(outputs) == 9
