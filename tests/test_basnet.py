"""Tests of BaS-Net's network, losses, inference and batches (SPEC §8.1-§8.5) against the
release's oracle (``tests/basnet_release.py``: its PyTorch model and loss, its test sampling)
and hand computations. Localisation: test_basnet_scores.py; the commands: test_basnet_cli.py.

The oracle's model has the release's fixed widths (filter 512, CAS 2048); most tests here shrink
them through ``small_torch``, which hands the oracle a ``torch`` whose ``nn.Conv1d`` maps those
two widths to small ones and changes nothing else. Relative error of an array is
``max|a - b| / max|b|``.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import basnet_release as rel
from wtal_jax import config, training
from wtal_jax.data import sampling
from wtal_jax.data.pipeline import TrainBatches
from wtal_jax.method.basnet import METHOD, losses as basnet_losses, topk_mean
from wtal_jax.postprocess import inference
from wtal_jax.tools import torch_convert

D, FILTER, E, C, T, B = 16, 8, 32, 4, 40, 3
NAMES = ('a', 'b', 'c', 'd')
TORCH_REASON = "BaS-Net's PyTorch comparisons need the [torch] extra: pip install -e '.[torch]'"


@pytest.fixture(scope='module')
def torch():
    return pytest.importorskip('torch', reason=TORCH_REASON)


@pytest.fixture(autouse=True)
def _full_precision():
    """float32 matmuls and convolutions everywhere (a GPU would otherwise use TF32)."""
    with jax.default_matmul_precision('highest'):
        yield


def basnet_config(*, feature_dim=D, filter_dim=FILTER, embed_dim=E, num_segments=T,
                  class_names=NAMES, **model):
    """BaS-Net's default config (the release's settings) at these sizes, validated."""
    cfg = config.default_config('basnet')
    cfg.data.feature_dim, cfg.data.num_segments = feature_dim, num_segments
    cfg.data.class_names = tuple(class_names)
    cfg.model.filter_dim, cfg.model.embed_dim = filter_dim, embed_dim
    for key, value in model.items():
        cfg.model[key] = value
    config.validate(cfg)
    return cfg


def small_torch(torch, *, filter_dim=FILTER, embed_dim=E):
    """``torch`` as the oracle sees it, with its Conv1d widths 512 -> filter_dim and 2048 ->
    embed_dim (in and out channels); everything else is torch itself."""
    widths = {512: filter_dim, 2048: embed_dim}

    def conv1d(in_channels, out_channels, **kwargs):
        return torch.nn.Conv1d(widths.get(in_channels, in_channels),
                               widths.get(out_channels, out_channels), **kwargs)

    class Shim(types.SimpleNamespace):
        def __getattr__(self, name):
            return getattr(torch, name)

    nn = types.SimpleNamespace(**{k: getattr(torch.nn, k) for k in dir(torch.nn)
                                  if not k.startswith('_')})
    nn.Conv1d = conv1d
    return Shim(nn=nn)


def release_model(torch, *, feature_dim=D, num_classes=C, num_segments=T, seed=0,
                  full_width=False):
    """The oracle's BaS_Net with PyTorch's default init from ``seed``, in eval mode; small
    widths (FILTER, E) unless ``full_width``."""
    assert feature_dim not in (512, 2048)   # small_torch would resize it too
    torch.manual_seed(seed)
    model = rel.release_model(torch if full_width else small_torch(torch),
                              feature_dim=feature_dim, num_classes=num_classes,
                              num_segments=num_segments)
    return model.eval()


def assert_rel_close(actual, desired, rtol, what=''):
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, (what, actual.shape, desired.shape)
    err = np.max(np.abs(actual - desired)) / max(np.max(np.abs(desired)), 1e-30)
    assert err <= rtol, f'{what}: relative error {err:.2e} > {rtol:.0e}'


def ours(model, cfg):
    """Our BaSNet with the torch model's weights, converted from its state dict."""
    params = torch_convert.torch_state_dict_to_params(model.state_dict(), cfg, C)
    return METHOD.model(cfg, C), params


def eval_outputs(module, params, x, hp):
    """Both branches in eval mode (no dropout), as the release's forward: METHOD.videos of the
    module's per-segment outputs (the inference path skips the base branch)."""
    seg = module.apply({'params': params}, jnp.asarray(x), train=False)
    return METHOD.videos(seg, hp=hp)


def features(rng, *shape):
    return (2.0 * rng.random(shape) - 0.5).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Network (SPEC §8.3)


def test_converted_params_have_the_flax_model_structure(torch):
    cfg = basnet_config()
    module, params = ours(release_model(torch), cfg)
    init = module.init(jax.random.PRNGKey(0), jnp.zeros((1, T, D)), train=False)['params']
    shapes = lambda tree: jax.tree.map(lambda a: (a.shape, a.dtype), tree)   # noqa: E731
    assert shapes(params) == shapes(init)


@pytest.mark.parametrize('full_width', [False, True])
def test_forward_matches_the_release(torch, full_width):
    """p_base, cas_base, p_supp, cas_supp and the weights of the release (eval mode) and ours
    with its weights; full_width: the release's own widths (512, 2048) at a short T."""
    num_segments = 24 if full_width else T
    cfg = basnet_config(num_segments=num_segments, **(
        dict(filter_dim=512, embed_dim=2048) if full_width else {}))
    model = release_model(torch, num_segments=num_segments, full_width=full_width)
    module, params = ours(model, cfg)
    x = features(np.random.default_rng(1), B, num_segments, D)
    with torch.no_grad():
        p_base, cas_base, p_supp, cas_supp, w = (t.numpy() for t in model(torch.from_numpy(x)))
    got = eval_outputs(module, params, x, config.frozen(cfg))
    seg = module.apply({'params': params}, jnp.asarray(x), train=False)
    for name, want in (('p_base', p_base), ('p_supp', p_supp), ('cas_supp', cas_supp),
                       ('weights', w[..., 0])):
        assert_rel_close(got[name], want, 1e-5, name)
    assert_rel_close(seg['cas_base'], cas_base, 1e-5, 'cas_base')
    # the inference path (no key): the suppression branch and the weights only
    one = METHOD.segments(module, params, jnp.asarray(x[0]), hp=config.frozen(cfg))
    assert set(one) == {'cas_supp', 'weights'}
    assert_rel_close(one['cas_supp'], cas_supp[0], 1e-5, 'segments cas_supp')
    assert_rel_close(one['weights'], w[0, :, 0], 1e-5, 'segments weights')


def test_k_is_T_over_8_floored_and_a_shorter_input_averages_all(torch):
    """T = 47: k = 47 // 8 = 5 (6 by rounding); an input of 3 < k segments: the release's
    slice takes all 3. The NumPy check pins k on top of the oracle's."""
    model = release_model(torch, num_segments=47)
    assert model.k == 5
    cfg = basnet_config(num_segments=47)
    module, params = ours(model, cfg)
    rng = np.random.default_rng(2)
    for length in (47, 3):
        x = features(rng, 2, length, D)
        with torch.no_grad():
            p_base, cas_base, p_supp, _, _ = (t.numpy() for t in model(torch.from_numpy(x)))
        got = eval_outputs(module, params, x, config.frozen(cfg))
        assert_rel_close(got['p_base'], p_base, 1e-5, f'p_base T={length}')
        assert_rel_close(got['p_supp'], p_supp, 1e-5, f'p_supp T={length}')
        mean = np.sort(cas_base, axis=1)[:, ::-1][:, :min(5, length)].mean(axis=1)
        want = np.exp(mean) / np.exp(mean).sum(axis=1, keepdims=True)
        assert_rel_close(got['p_base'], want, 1e-5, 'p_base by hand')
    # k = 6 would give another answer: the check above can tell them apart
    x = features(rng, 2, 47, D)
    cas = np.asarray(module.apply({'params': params}, jnp.asarray(x), train=False)['cas_base'])
    five, six = (np.sort(cas, axis=1)[:, ::-1][:, :k].mean(axis=1) for k in (5, 6))
    assert np.abs(five - six).max() > 1e-3


def test_topk_mean_by_hand_with_lengths():
    cas = np.array([[[1.0], [5.0], [3.0], [9.0]],      # length 3: the 9 is padding
                    [[2.0], [4.0], [6.0], [8.0]]], np.float32)
    got = topk_mean(jnp.asarray(cas), 2, jnp.array([3, 1]))
    np.testing.assert_allclose(got[:, 0], [(5 + 3) / 2, 2.0], rtol=1e-7)
    np.testing.assert_allclose(topk_mean(jnp.asarray(cas), 2)[:, 0], [7, 7], rtol=1e-7)
    np.testing.assert_allclose(topk_mean(jnp.asarray(cas), 9)[:, 0], [4.5, 5], rtol=1e-7)


# ---------------------------------------------------------------------------------------------
# Losses (SPEC §8.4)


def _labels():
    return np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0]], np.float32)


def test_losses_match_the_release_on_given_outputs(torch):
    """Each part on made-up outputs, including p = 0 and p = 1 exactly (the -100 log clamp)."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, B, C + 1)) * 2
    p_base, p_supp = (np.exp(z) / np.exp(z).sum(-1, keepdims=True) for z in logits)
    p_base, p_supp = p_base.astype(np.float32), p_supp.astype(np.float32)
    p_base[0] = [0.0, 0.0, 0.0, 0.0, 1.0]     # log(0) and log(1 - 1) clamped at -100
    p_supp[1, 1] = 0.0
    w = rng.random((B, T)).astype(np.float32)
    labels = _labels()
    want_total, want = rel.release_loss(
        torch, (torch.from_numpy(p_base), None, torch.from_numpy(p_supp), None,
                torch.from_numpy(w[..., None])), torch.from_numpy(labels), 1e-4)
    hp = config.frozen(basnet_config())
    got = METHOD.losses({'p_base': jnp.asarray(p_base), 'p_supp': jnp.asarray(p_supp),
                         'weights': jnp.asarray(w)}, jnp.asarray(labels), hp=hp)
    assert set(got) == {'loss', 'loss_base', 'loss_supp', 'loss_norm'}
    assert all(v.shape == (B,) for v in got.values())
    for name, ref in (('loss_base', 'loss_base'), ('loss_supp', 'loss_supp'),
                      ('loss_norm', 'loss_norm'), ('loss', 'loss_total')):
        assert_rel_close(jnp.mean(got[name]), want[ref].item(), 1e-6, name)
    # video 0 by hand: y = [1/3, 0, 0, 1/3, 1/3] against p = [0, 0, 0, 0, 1], each log -100
    assert float(got['loss_base'][0]) == pytest.approx((100 / 3 + 100 / 3 + 200 / 3) / 5)
    np.testing.assert_allclose(np.asarray(got['loss_norm']), w.sum(axis=1), rtol=1e-6)


def test_branch_targets_by_hand():
    y = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(basnet_losses.branch_labels(y, background=True),
                               [[1 / 3, 0, 1 / 3, 1 / 3], [0, 0, 0, 1]], rtol=1e-7)
    # the release divides 0 by 0 for a video without labels; ours keeps a zero target
    np.testing.assert_allclose(basnet_losses.branch_labels(y, background=False),
                               [[0.5, 0, 0.5, 0], [0, 0, 0, 0]], rtol=1e-7)


def test_losses_and_gradients_match_pytorch(torch):
    """Dropout off (torch eval mode, our dropout_rate 0): the total and each part, and the
    gradient of the total w.r.t. every parameter, against torch autograd."""
    cfg = basnet_config(dropout_rate=0.0)
    hp = config.frozen(cfg)
    model = release_model(torch)
    module, params = ours(model, cfg)
    rng = np.random.default_rng(4)
    x, labels = features(rng, B, T, D), _labels()

    model.zero_grad()
    total, want = rel.release_loss(torch, model(torch.from_numpy(x)), torch.from_numpy(labels),
                                   hp.loss.alpha)
    total.backward()
    want_grads = {name: p.grad.numpy() for name, p in model.named_parameters()}

    def objective(p):
        out = training.forward(METHOD, module, p, jnp.asarray(x), hp=hp,
                               keys=jax.random.split(jax.random.PRNGKey(0), B))
        parts = METHOD.losses(out, jnp.asarray(labels), hp=hp)
        means = {name: jnp.mean(v) for name, v in parts.items()}
        return means['loss'], means

    grads, got = jax.jit(jax.grad(objective, has_aux=True))(params)
    for name, ref in (('loss_base', 'loss_base'), ('loss_supp', 'loss_supp'),
                      ('loss_norm', 'loss_norm'), ('loss', 'loss_total')):
        assert_rel_close(got[name], want[ref].item(), 1e-6, name)
    grads = torch_convert.params_to_torch_state_dict(grads, cfg)
    assert set(grads) == set(want_grads)
    for name, value in grads.items():
        assert np.abs(want_grads[name]).max() > 0, name   # every parameter is exercised
        assert_rel_close(value.numpy(), want_grads[name], 1e-4, f'grad {name}')


def test_training_branches_draw_independent_dropout_masks():
    """SPEC §8.3: base and suppression calls draw their own masks. With w = 1 everywhere the
    two branches see the same input, so only the masks can make them differ."""
    cfg = basnet_config()
    hp = config.frozen(cfg)
    module = METHOD.model(cfg, C)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, T, D)), train=False)['params']
    params = jax.tree.map(lambda a: a, params)
    params['filter_module']['conv_2']['kernel'] = jnp.zeros_like(
        params['filter_module']['conv_2']['kernel'])
    params['filter_module']['conv_2']['bias'] = jnp.full_like(
        params['filter_module']['conv_2']['bias'], 40.0)       # sigmoid(40) == 1 in float32
    x = jnp.asarray(features(np.random.default_rng(5), T, D))
    evaluated = module.apply({'params': params}, x[None], train=False)
    np.testing.assert_array_equal(evaluated['cas_base'], evaluated['cas_supp'])
    trained = METHOD.segments(module, params, x, hp=hp, key=jax.random.PRNGKey(1))
    assert np.abs(np.asarray(trained['cas_base'] - trained['cas_supp'])).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# Test sampling and packed inference (SPEC §8.1, §8.6)


@pytest.mark.parametrize('n', [1, 7, 39, 40, 41, 97, 1600])
def test_fixed_test_sampling_is_the_releases(n):
    want = rel.release_sample_test(n, T)
    got = sampling.test_indices(n, T, fixed=True)
    assert got.shape == (T,) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    assert sampling.test_length(n, T, fixed=True) == T
    # UM's rule differs only for n < T: the video whole
    np.testing.assert_array_equal(sampling.test_indices(n, T), want if n >= T else np.arange(n))


def _per_video(module, params, hp, video, fixed):
    """One video alone: its test indices, the inference pass, its video scores."""
    x = video[sampling.test_indices(len(video), hp.data.num_segments, fixed=fixed)]
    seg = METHOD.segments(module, params, jnp.asarray(x), hp=hp)
    out = METHOD.videos(jax.tree.map(lambda a: a[None], seg), hp=hp)
    return {name: np.asarray(value[0]) for name, value in out.items()}


@pytest.mark.parametrize('fixed', [True, False])
def test_packed_inference_equals_each_video_alone(fixed):
    """Videos of mixed lengths (shorter than T, T, longer) in chunks of 128 segments: every
    output as the video alone gives it. Without ``fixed`` the short videos are kept whole, so
    many borders share chunks; the masking between the two k = 3 convolutions makes that exact
    (the last check shows the chunk's values without it differ)."""
    cfg = basnet_config()
    hp = config.frozen(cfg)
    module = METHOD.model(cfg, C)
    params = module.init(jax.random.PRNGKey(3), jnp.zeros((1, T, D)), train=False)['params']
    rng = np.random.default_rng(6)
    videos = [features(rng, n, D) for n in (5, 40, 17, 90, 1, 41)]
    packed = inference.pack(videos, num_segments=T, chunk_size=128, fixed=fixed)
    got = inference.Predictor(METHOD, module, hp)(params, packed, num_segments=T)
    assert [v.length for v in got] == [T if fixed else min(len(v), T) for v in videos]
    assert [v.num_segments for v in got] == [len(v) for v in videos]
    for i, (video, out) in enumerate(zip(videos, got)):
        want = _per_video(module, params, hp, video, fixed)
        assert set(out.outputs) == {'p_supp', 'cas_supp', 'weights'}
        n = out.length
        assert_rel_close(out.outputs['p_supp'], want['p_supp'], 1e-5, f'{i} p_supp')
        assert_rel_close(out.outputs['cas_supp'][:n], want['cas_supp'], 1e-5, f'{i} cas_supp')
        assert_rel_close(out.outputs['weights'][:n], want['weights'], 1e-5, f'{i} weights')
    if not fixed:
        chunk = jnp.asarray(packed.chunks[0])
        masked = module.apply({'params': params}, chunk[None], train=False, base=False,
                              valid=jnp.asarray(inference._valid(packed)[:1]))
        unmasked = module.apply({'params': params}, chunk[None], train=False, base=False)
        assert np.abs(np.asarray(masked['cas_supp'] - unmasked['cas_supp'])).max() > 1e-4


# ---------------------------------------------------------------------------------------------
# Batches (SPEC §8.2)


def _draws(num_videos=20, batch_size=6, seed=0):
    labels = np.eye(3, dtype=np.float32)[np.arange(num_videos) % 3]
    videos = [np.full((5 + v, 2), v, np.float32) for v in range(num_videos)]
    return TrainBatches(videos, labels, num_segments=8, batch_size=batch_size, seed=seed,
                        order='draws')


def test_draws_first_epoch_with_its_remainder_then_fresh_full_batches():
    batches = _draws()                      # V = 20, B = 6: 6 + 6 + 6 + 2
    assert batches.steps_per_epoch == 4
    first = [batches.video_ids(s) for s in range(4)]
    assert [int(m.sum()) for _, m in first] == [6, 6, 6, 2]
    seen = np.concatenate([ids[m > 0] for ids, m in first])
    assert sorted(seen.tolist()) == list(range(20))
    for step in range(4, 60):
        ids, mask = batches.video_ids(step)
        assert mask.tolist() == [1.0] * 6 and len(set(ids.tolist())) == 6, step


def test_draws_are_independent_per_step():
    """After the first epoch each step is a fresh draw: consecutive batches overlap by
    B^2 / V = 1.8 videos on average (an epoch order would give 0 within an epoch), and every
    video appears in B / V = 30% of the steps."""
    batches = _draws()
    sets = [set(batches.video_ids(s)[0].tolist()) for s in range(4, 1004)]
    overlap = np.mean([len(a & b) for a, b in zip(sets, sets[1:])])
    assert abs(overlap - 1.8) < 0.15, overlap
    counts = np.bincount([v for s in sets for v in s], minlength=20) / len(sets)
    assert np.abs(counts - 0.3).max() < 0.06, counts
    epoch_like = [set().union(*sets[i:i + 3]) for i in range(0, 30, 3)]
    assert any(len(u) < 18 for u in epoch_like)   # 3 steps of an epoch would cover 18


def test_draws_are_a_pure_function_of_seed_and_step():
    a, b = _draws(), _draws()
    steps = [57, 3, 12, 4, 4, 900]
    first = [a.batch(s) for s in steps]
    for s, want in zip(reversed(steps), reversed(first)):
        got = b.batch(s)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    other = _draws(seed=1)
    assert any(not np.array_equal(other.video_ids(s)[0], a.video_ids(s)[0])
               for s in range(4, 10))
    # the batch's features are the drawn videos' (video v holds the value v)
    got = a.batch(900)
    np.testing.assert_array_equal(got['features'][:, 0, 0], a.video_ids(900)[0])


def test_draws_with_fewer_videos_than_the_batch_take_them_all():
    batches = _draws(num_videos=4, batch_size=6)
    for step in (0, 1, 7):
        ids, mask = batches.video_ids(step)
        assert mask.tolist() == [1, 1, 1, 1, 0, 0]
        assert sorted(ids[:4].tolist()) == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------
# The release's settings are the defaults (SPEC §8.3-§8.7)


def test_defaults_are_the_releases():
    c = config.default_config('basnet')
    assert c.method == 'basnet'
    assert (c.model.filter_dim, c.model.embed_dim, c.model.dropout_rate, c.model.topk_ratio) \
        == (512, 2048, 0.7, 8)
    assert c.loss.alpha == 1e-4
    assert (c.optim.learning_rate, c.optim.b1, c.optim.b2, c.optim.eps, c.optim.weight_decay) \
        == (1e-4, 0.9, 0.999, 1e-8, 5e-4)
    assert (c.train.batch_size, c.train.num_steps, c.train.batch_order) == (16, 1500, 'draws')
    assert (c.data.num_segments, c.data.test_sampling, c.data.segment_frames, c.data.fps) \
        == (750, 'fixed', 16, 25.0)
    assert c.localize.theta_vid == 0.25 and c.eval.class_threshold == 0.25
    assert c.localize.score_thresholds == tuple(np.arange(0.0, 0.25, 0.025))
    assert len(c.localize.score_thresholds) == 10
    assert (c.localize.upsample, c.localize.min_run_length, c.localize.outer_ratio,
            c.localize.p_act_weight, c.localize.nms_iou) == (24, 1, 0.25, 0.2, 0.7)
    assert c.localize.skip_first_class_alone is True
    assert c.eval.tiou_thresholds == tuple(np.linspace(0.1, 0.9, 9))
    assert c.eval.tiou_thresholds[2] == 0.30000000000000004
    assert c.data.class_names == rel.THUMOS14_CLASSES
