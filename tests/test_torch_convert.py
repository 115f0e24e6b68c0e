"""Tests of ``wtal_jax.tools.torch_convert``: the authors' PyTorch layout <-> Flax, through the CLI.

The reference is a small PyTorch implementation of SPEC §2-§3 written here (the release's
architecture and parameter names, our own code). Its random weights go through
``convert-torch``; the JAX forward pass, losses and gradients must match it, and
``export-torch`` must give back the exact tensors. Relative error of an array is
``max|a - b| / max|b|``.
"""

import collections
import json
import os
import pickle
import subprocess
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wtal_jax import cli
from wtal_jax import config as config_lib
from wtal_jax.runs import rundir
from wtal_jax.runs.rundir import METRICS_FILE
from wtal_jax import training
from wtal_jax.method.um import METHOD, selection, torch_layout
from wtal_jax.tools import torch_convert
from wtal_jax.errors import UserError
from wtal_jax.method.um.models import UMModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, 'configs', 'thumos14.py')
D, E, C, T, B = 32, 64, 5, 40, 3
NAMES = ('a', 'b', 'c', 'd', 'e')
SMALL = ['--config.data.feature_dim=32', '--config.model.embed_dim=64',
         '--config.data.class_names=a,b,c,d,e']
TORCH_REASON = "PyTorch interop tests need the [torch] extra: pip install -e '.[torch]'"


def small_config():
    """UM's default config with the sizes of SMALL (D, E): what the conversions check against."""
    cfg = config_lib.default_config()
    cfg.data.feature_dim, cfg.model.embed_dim = D, E
    return cfg


@pytest.fixture(scope='module')
def torch():
    return pytest.importorskip('torch', reason=TORCH_REASON)


@pytest.fixture(autouse=True)
def _full_precision():
    """float32 matmuls and convolutions everywhere (a GPU would otherwise use TF32)."""
    with jax.default_matmul_precision('highest'):
        yield


# ---------------------------------------------------------------------------------------------
# The PyTorch reference (SPEC §2, §3)

def reference_model(torch, *, feature_dim=D, embed_dim=E, num_classes=C, r_act=9, r_bkg=4,
                    seed=0):
    """The UM network in PyTorch with PyTorch's default (random) init, keys as the release's."""
    nn = torch.nn

    class CASModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv1d(feature_dim, embed_dim, kernel_size=3, stride=1, padding=1), nn.ReLU())
            self.classifier = nn.Sequential(
                nn.Conv1d(embed_dim, num_classes, kernel_size=1, bias=False))
            self.drop_out = nn.Dropout(p=0.7)

        def forward(self, x):                                     # (B, T, D)
            out = self.conv(x.permute(0, 2, 1))                   # (B, E, T)
            features = out.permute(0, 2, 1)                       # (B, T, E)
            cas = self.classifier(self.drop_out(out)).permute(0, 2, 1)   # (B, T, C)
            return cas, features

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.cas_module = CASModule()
            self.selection_drop = nn.Dropout(p=0.7)  # the release's mask on magnitudes

        def forward(self, x):
            k_act, k_bkg = x.shape[1] // r_act, x.shape[1] // r_bkg
            cas, features = self.cas_module(x)
            magnitudes = torch.norm(features, p=2, dim=2)                        # (B, T)
            mask = self.selection_drop(torch.ones_like(magnitudes))
            reverse = torch.max(magnitudes, dim=1, keepdim=True)[0] - magnitudes
            idx_act = (magnitudes * mask).sort(descending=True, dim=1)[1][:, :k_act]
            idx_bkg = (reverse * mask).sort(descending=True, dim=1)[1][:, :k_bkg]

            def gather(values, idx):                              # (B, T, X), (B, K) -> (B, K, X)
                return torch.gather(values, 1, idx.unsqueeze(2).expand(-1, -1, values.shape[2]))

            score_act = cas.sort(descending=True, dim=1)[0][:, :k_act].mean(dim=1)
            score_bkg = gather(cas, idx_bkg).mean(dim=1)
            return {'features': features, 'cas': cas, 'magnitudes': magnitudes,
                    'p_act': torch.softmax(score_act, dim=1),
                    'p_bkg': torch.softmax(score_bkg, dim=1),
                    'feat_act': gather(features, idx_act).mean(dim=1),
                    'feat_bkg': gather(features, idx_bkg).mean(dim=1)}

    torch.manual_seed(seed)
    return Model()


def reference_losses(torch, out, labels, *, margin, alpha, beta):
    """L_cls and L_be with BCELoss, L_um (Eq. 7) and the total (Eq. 5), batch means."""
    bce = torch.nn.BCELoss()
    targets = labels / labels.sum(dim=1, keepdim=True)
    cls = bce(out['p_act'], targets)
    be = bce(out['p_bkg'], torch.full_like(targets, 1.0 / targets.shape[1]))
    act = torch.clamp(margin - torch.norm(out['feat_act'], p=2, dim=1), min=0)
    bkg = torch.norm(out['feat_bkg'], p=2, dim=1)
    um = torch.mean((act + bkg) ** 2)
    return {'loss_cls': cls, 'loss_um': um, 'loss_be': be,
            'loss': cls + alpha * um + beta * be}


def assert_rel_close(actual, desired, rtol, what=''):
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, (what, actual.shape, desired.shape)
    err = np.max(np.abs(actual - desired)) / max(np.max(np.abs(desired)), 1e-30)
    assert err <= rtol, f'{what}: relative error {err:.2e} > {rtol:.0e}'


def run_cli(argv, capsys):
    """(exit status, stdout, stderr) of an in-process ``wtal-jax`` call."""
    capsys.readouterr()
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope='module')
def converted(torch, tmp_path_factory):
    """The reference model's weights saved by torch.save and converted by the CLI."""
    folder = tmp_path_factory.mktemp('torch_convert')
    model = reference_model(torch)
    state_dict = model.state_dict()
    assert list(state_dict) == list(torch_layout.KEYS)
    path = str(folder / 'model_seed_0.pkl')
    torch.save(state_dict, path)
    workdir = str(folder / 'run')
    assert cli.main(['convert-torch', path, '--config', CONFIG, '--workdir', workdir,
                     *SMALL]) == 0
    rng = np.random.default_rng(0)
    features = (2.0 * rng.random((B, T, D))).astype(np.float32)
    labels = np.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 1, 1, 1]], np.float32)
    cfg, names, jax_model, state, step, *_ = rundir.load_checkpoint(workdir)
    return types.SimpleNamespace(model=model, state_dict=state_dict, path=path,
                                 workdir=workdir, features=features, labels=labels, cfg=cfg,
                                 names=names, jax_model=jax_model, state=state, step=step)


# ---------------------------------------------------------------------------------------------
# Numerical agreement

def test_kernel_axis_order_without_torch():
    """kernel[k, d, e] = weight[e, d, k]: Conv1d's cross-correlation written out in NumPy."""
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(E, D, 3)).astype(np.float32)
    bias = rng.normal(size=(E,)).astype(np.float32)
    classifier = rng.normal(size=(C, E, 1)).astype(np.float32)
    params = torch_convert.torch_state_dict_to_params(
        {torch_layout.CONV_WEIGHT: weight, torch_layout.CONV_BIAS: bias,
         torch_layout.CLASSIFIER_WEIGHT: classifier}, small_config(), C)
    x = rng.normal(size=(1, T, D)).astype(np.float32)
    padded = np.pad(x[0].astype(np.float64), ((1, 1), (0, 0)))
    # torch: out[e, t] = b[e] + sum_{d,k} w[e, d, k] * x_padded[t + k, d]
    expected = bias + np.einsum('edk,tkd->te', weight.astype(np.float64),
                                np.stack([padded[t:t + 3] for t in range(T)]))
    features = np.maximum(expected, 0)
    cas = features @ classifier[:, :, 0].T.astype(np.float64)
    model = UMModel(num_classes=C, embed_dim=E, dropout_rate=0.7)
    got_cas, got_features = model.apply({'params': params}, x, train=False)
    assert_rel_close(got_features[0], features, 1e-5, 'features')
    assert_rel_close(got_cas[0], cas, 1e-5, 'cas')


def test_forward_matches_pytorch(torch, converted):
    cfg, model, state = converted.cfg, converted.jax_model, converted.state
    assert (converted.names, converted.step) == (NAMES, 0)
    with torch.no_grad():
        ref = converted.model.eval()(torch.from_numpy(converted.features))
    cas, features = model.apply({'params': state.params}, converted.features, train=False)
    sel = selection.select(cas, selection.feature_magnitudes(features), features=features,
                           r_act=cfg.model.r_act, r_bkg=cfg.model.r_bkg)
    ours = {'features': features, 'cas': cas, 'magnitudes': sel.magnitudes,
            'p_act': sel.p_act, 'p_bkg': sel.p_bkg, 'feat_act': sel.feat_act,
            'feat_bkg': sel.feat_bkg}
    for name, value in ours.items():
        assert_rel_close(value, ref[name].numpy(), 1e-5, name)


@pytest.mark.parametrize('margin_kind', ['release', 'mixed'])
def test_losses_and_gradients_match_pytorch(torch, converted, margin_kind):
    """Selection mask and dropout off. 'mixed' puts the margin between the videos' |f_act| so
    that max(0, m - |f_act|) is active for one video and clipped for the others."""
    cfg, model, state = converted.cfg, converted.jax_model, converted.state
    ref_model = converted.model.eval()
    x = torch.from_numpy(converted.features)
    margin = cfg.loss.margin
    if margin_kind == 'mixed':
        with torch.no_grad():
            norms = np.sort(torch.norm(ref_model(x)['feat_act'], dim=1).numpy())
        margin = float(norms[0] + norms[1]) / 2
    cfg = config_lib.from_dict(config_lib.to_dict(cfg))   # a copy to change
    cfg.model.selection_dropout, cfg.loss.margin = 0.0, margin
    hp = config_lib.frozen(cfg)

    ref_model.zero_grad()
    ref = reference_losses(torch, ref_model(x), torch.from_numpy(converted.labels),
                           margin=margin, alpha=hp.loss.alpha, beta=hp.loss.beta)
    ref['loss'].backward()
    ref_grads = {name: p.grad.numpy() for name, p in ref_model.named_parameters()}

    no_dropout = model.clone(dropout_rate=0.0)

    def objective(params):
        sel = training.forward(METHOD, no_dropout, params, jnp.asarray(converted.features),
                               hp=hp, keys=jax.random.split(jax.random.PRNGKey(0),
                                                            converted.features.shape[0]))
        parts = METHOD.losses(sel, jnp.asarray(converted.labels), hp=hp)
        means = {name: jnp.mean(value) for name, value in parts.items()}
        return means['loss'], means

    grads, ours = jax.jit(jax.grad(objective, has_aux=True))(state.params)
    for name in ('loss_cls', 'loss_um', 'loss_be', 'loss'):
        assert_rel_close(ours[name], ref[name].item(), 1e-6, name)
    grads = torch_convert.params_to_torch_state_dict(grads, cfg)
    assert set(grads) == set(ref_grads)
    for name, value in grads.items():
        assert_rel_close(value.numpy(), ref_grads[name], 1e-4, f'grad {name}')


# ---------------------------------------------------------------------------------------------
# Round trips and the commands

def test_export_gives_back_the_exact_tensors(torch, converted, tmp_path, capsys):
    out = tmp_path / 'back.pkl'
    status, stdout, _ = run_cli(['export-torch', '--workdir', converted.workdir, str(out)],
                                capsys)
    assert status == 0 and 'a, b, c, d, e' in stdout
    back = torch.load(str(out), map_location='cpu', weights_only=True)
    assert isinstance(back, collections.OrderedDict)
    assert list(back) == list(converted.state_dict)
    for name, value in converted.state_dict.items():
        assert back[name].dtype == torch.float32 and back[name].is_contiguous()
        assert torch.equal(back[name], value), name
    reference_model(torch, seed=1).load_state_dict(back, strict=True)

    step_dir = os.path.join(converted.workdir, 'checkpoints', '0')
    for i, args in enumerate((['--checkpoint', step_dir],
                              ['--workdir', converted.workdir, '--which', 'latest'])):
        again = tmp_path / f'again_{i}.pkl'
        assert run_cli(['export-torch', *args, str(again)], capsys)[0] == 0
        again = torch.load(str(again), map_location='cpu', weights_only=True)
        assert all(torch.equal(again[k], v) for k, v in back.items())


def test_convert_command_runs_as_a_program(torch, converted, tmp_path):
    workdir = tmp_path / 'run'
    result = subprocess.run(
        [sys.executable, '-m', 'wtal_jax', 'convert-torch', converted.path, '--config', CONFIG,
         '--workdir', str(workdir), *SMALL], capture_output=True, text=True, cwd=REPO,
        timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'checkpoints/0' in result.stdout
    with open(workdir / 'config.json') as f:
        assert json.load(f)['data']['feature_dim'] == D
    ours = rundir.load_checkpoint(str(workdir))[3].params
    jax.tree.map(np.testing.assert_array_equal, ours, converted.state.params)


def test_wrapped_and_data_parallel_state_dicts(torch, converted):
    sd = converted.state_dict
    expected = torch_convert.torch_state_dict_to_params(sd, small_config(), C)
    variants = [{'state_dict': sd, 'epoch': 3}, {'model': sd},
                {f'module.{k}': v for k, v in sd.items()},
                {k: v.numpy() for k, v in sd.items()}]
    for variant in variants:
        params = torch_convert.torch_state_dict_to_params(variant, small_config(), C)
        jax.tree.map(np.testing.assert_array_equal, params, expected)


def test_detect_accepts_the_converted_run(converted, tmp_path, capsys):
    feature_file = tmp_path / 'video_1.npy'
    np.save(feature_file, converted.features[0])
    output = tmp_path / 'detections.json'
    status, _, err = run_cli(['detect', '--checkpoint', converted.workdir, '--output',
                              str(output), str(feature_file)], capsys)
    assert status == 0, err
    with open(output) as f:
        assert list(json.load(f)['results']) == ['video_1']


def test_importing_the_package_never_imports_torch():
    """Every command's parser imports ``torch_convert``; that must not import torch."""
    code = ('import sys, wtal_jax, wtal_jax.tools.torch_convert; from wtal_jax import cli; '
            'cli.build_parser(); assert "torch" not in sys.modules, "torch was imported"')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr


def test_evaluate_and_train_init_from_the_converted_run(torch, tmp_path, capsys):
    """`evaluate` takes the converted run, and fine-tuning starts from its parameters: one
    Adam step moves each by at most the learning rate."""
    synthetic = [f'--config.data.root={tmp_path / "data"}', '--config.synthetic.num_classes=3',
                 '--config.synthetic.num_train=8', '--config.synthetic.num_test=4',
                 '--config.synthetic.feature_dim=16', f'--config.data.feature_dim={D}',
                 f'--config.model.embed_dim={E}', '--config.synthetic.min_segments=20',
                 '--config.synthetic.max_segments=40', '--config.data.num_segments=32',
                 '--config.train.batch_size=4']
    config = os.path.join(REPO, 'configs', 'synthetic.py')
    path = str(tmp_path / 'model.pkl')
    torch.save(reference_model(torch, num_classes=3).state_dict(), path)
    source = str(tmp_path / 'converted')
    assert run_cli(['convert-torch', path, '--config', config, '--workdir', source,
                    *synthetic], capsys)[0] == 0
    status, out, err = run_cli(['evaluate', '--workdir', source, '--quiet'], capsys)
    assert status == 0 and 'checkpoint step 0' in out, err
    finetuned = str(tmp_path / 'finetuned')
    status, _, err = run_cli(['train', '--config', config, '--workdir', finetuned, *synthetic,
                              f'--config.train.init_from={source}', '--config.train.num_steps=1',
                              '--quiet'], capsys)
    assert status == 0, err
    start = rundir.load_checkpoint(source)[3].params
    cfg, _, _, state, step, *_ = rundir.load_checkpoint(finetuned, which='latest')
    assert step == 1
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state.params, start)
    assert 0 < max(jax.tree.leaves(moved)) <= cfg.optim.learning_rate * (1 + 1e-3), moved


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2

class _NotATensor:
    """Pickled by torch.save; weights_only must refuse to import it."""


def _state_dict(torch, **replace):
    sd = collections.OrderedDict(reference_model(torch).state_dict())
    for key, value in replace.items():
        sd[getattr(torch_layout, key)] = value
    return sd


def _make_torch_input(kind, torch, folder):
    path = str(folder / f'{kind}.pkl')
    if kind == 'unsafe pickle':
        torch.save({'net': _NotATensor()}, path)
    elif kind == 'plain pickle':
        with open(path, 'wb') as f:
            pickle.dump({'weights': [1.0, 2.0]}, f, protocol=4)
    elif kind == 'list':
        torch.save([torch.zeros(2)], path)
    elif kind == 'tensor':
        torch.save(torch.zeros(2, 3), path)
    elif kind == 'missing key':
        sd = _state_dict(torch)
        del sd[torch_layout.CONV_BIAS]
        torch.save(sd, path)
    elif kind == 'extra key':
        torch.save(dict(_state_dict(torch), **{'cas_module.extra.weight': torch.zeros(1)}),
                   path)
    elif kind == 'feature size':
        torch.save(_state_dict(torch, CONV_WEIGHT=torch.zeros(E, 16, 3)), path)
    elif kind == 'embed size':
        torch.save(_state_dict(torch, CONV_WEIGHT=torch.zeros(48, D, 3),
                               CONV_BIAS=torch.zeros(48),
                               CLASSIFIER_WEIGHT=torch.zeros(C, 48, 1)), path)
    elif kind == 'class count':
        torch.save(_state_dict(torch, CLASSIFIER_WEIGHT=torch.zeros(20, E, 1)), path)
    elif kind == 'non-finite':
        weight = torch.zeros(E, D, 3)
        weight[3, 2, 1] = float('nan')
        weight[0, 0, 0] = float('inf')
        torch.save(_state_dict(torch, CONV_WEIGHT=weight), path)
    elif kind == 'integer dtype':
        torch.save(_state_dict(torch, CONV_BIAS=torch.zeros(E, dtype=torch.int64)), path)
    elif kind == 'not a tensor':
        torch.save(_state_dict(torch, CONV_BIAS=[0.0] * E), path)
    return path


TORCH_CASES = {
    'unsafe pickle': ['weights_only', '_NotATensor'],
    'plain pickle': ['pickle that torch.save did not write'],
    'list': ['expected a state dict', 'found a list of 1 items'],
    'tensor': ['expected a state dict', 'found a single Tensor of shape (2, 3)'],
    'missing key': ['missing cas_module.conv.0.bias', 'expected exactly'],
    'extra key': ['unexpected cas_module.extra.weight'],
    'feature size': ['data.feature_dim is 32 in the config but 16 in the file',
                     'cas_module.conv.0.weight (64, 16, 3) (expected (64, 32, 3))'],
    'embed size': ['model.embed_dim is 64 in the config but 48 in the file'],
    'class count': ['the class count (data.class_names) is 5 in the config but 20 in the file'],
    'non-finite': ['cas_module.conv.0.weight has 2 non-finite values'],
    'integer dtype': ['cas_module.conv.0.bias has dtype torch.int64, expected floating point'],
    'not a tensor': ['cas_module.conv.0.bias is a list of 64 items, expected a tensor'],
}


def assert_one_line_error(status, err, command, *fragments):
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f'wtal-jax {command}: error: '), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize('kind', list(TORCH_CASES))
def test_bad_torch_files(kind, torch, tmp_path, capsys):
    path = _make_torch_input(kind, torch, tmp_path)
    status, _, err = run_cli(['convert-torch', path, '--config', CONFIG, '--workdir',
                              str(tmp_path / 'run'), *SMALL], capsys)
    assert_one_line_error(status, err, 'convert-torch', path, *TORCH_CASES[kind])
    assert not os.path.exists(tmp_path / 'run')


def _make_plain_input(kind, folder):
    path = folder / {'numpy': 'features.npy', 'npz': 'arrays.npz'}.get(kind, f'{kind}.pkl')
    if kind == 'text':
        path.write_text('cas_module.conv.0.weight: 1 2 3\n')
    elif kind == 'numpy':
        np.save(path, np.zeros((4, 3), np.float32))
    elif kind == 'npz':
        np.savez(path, weight=np.zeros(3))
    elif kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'directory':
        path.mkdir()
    return str(path)


PLAIN_CASES = {
    'missing': ['file not found', 'expected a PyTorch state_dict'],
    'directory': ['is a directory'],
    'text': ['not a PyTorch checkpoint'],
    'numpy': ['a NumPy .npy array, not a PyTorch checkpoint'],
    'npz': ['zip archive without data.pkl', 'not a PyTorch checkpoint'],
    'empty': ['empty file'],
}


@pytest.mark.parametrize('kind', list(PLAIN_CASES))
def test_files_that_are_not_pytorch(kind, tmp_path, capsys):
    """Recognised before PyTorch is imported, so these hold without it too."""
    path = _make_plain_input(kind, tmp_path)
    status, _, err = run_cli(['convert-torch', path, '--config', CONFIG, '--workdir',
                              str(tmp_path / 'run'), *SMALL], capsys)
    assert_one_line_error(status, err, 'convert-torch', path, *PLAIN_CASES[kind])


def test_without_pytorch_installed(tmp_path, capsys, monkeypatch):
    path = str(tmp_path / 'model.pt')
    with zipfile.ZipFile(path, 'w') as archive:  # the shape of a torch.save archive
        archive.writestr('model/data.pkl', b'')
    monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now raises ImportError
    status, _, err = run_cli(['convert-torch', path, '--config', CONFIG, '--workdir',
                              str(tmp_path / 'run'), *SMALL], capsys)
    assert_one_line_error(status, err, 'convert-torch', 'PyTorch is not installed', '[torch]')


def test_existing_checkpoints_need_force(torch, converted, tmp_path, capsys):
    workdir = str(tmp_path / 'run')
    argv = ['convert-torch', converted.path, '--config', CONFIG, '--workdir', workdir, *SMALL]
    assert run_cli(argv, capsys)[0] == 0
    with open(os.path.join(workdir, METRICS_FILE), 'w') as f:
        f.write('{"step": 5, "split": "test"}\n')
    status, _, err = run_cli(argv, capsys)
    assert_one_line_error(status, err, 'convert-torch', 'already has checkpoints (step 0)',
                          '--force')
    other = str(tmp_path / 'other.pkl')
    torch.save(reference_model(torch, seed=7).state_dict(), other)
    assert run_cli(['convert-torch', other, '--config', CONFIG, '--workdir', workdir, *SMALL,
                    '--force'], capsys)[0] == 0
    assert not os.path.exists(os.path.join(workdir, METRICS_FILE))
    params = rundir.load_checkpoint(workdir)[3].params
    np.testing.assert_array_equal(
        params['embed']['bias'], reference_model(torch, seed=7).state_dict()[
            torch_layout.CONV_BIAS].numpy())


def test_export_errors(torch, converted, tmp_path, capsys):
    status, _, err = run_cli(['export-torch', '--workdir', str(tmp_path), 'x.pkl'], capsys)
    assert_one_line_error(status, err, 'export-torch', 'config.json: not found')
    status, _, err = run_cli(['export-torch', '--workdir', converted.workdir,
                              str(tmp_path / 'missing' / 'x.pkl')], capsys)
    assert_one_line_error(status, err, 'export-torch', 'does not exist')
    status, _, err = run_cli(['export-torch', '--workdir', converted.workdir,
                              str(tmp_path / 'x.pkl'), '--config.seed=1'], capsys)
    assert_one_line_error(status, err, 'export-torch', 'takes no config overrides')
    existing = tmp_path / 'existing.pkl'
    existing.write_bytes(b'previous')
    status, _, err = run_cli(['export-torch', '--workdir', converted.workdir, str(existing)],
                             capsys)
    assert_one_line_error(status, err, 'export-torch', str(existing), 'exists', '--force')
    assert existing.read_bytes() == b'previous'
    assert run_cli(['export-torch', '--workdir', converted.workdir, str(existing), '--force'],
                   capsys)[0] == 0
    assert list(torch.load(str(existing), weights_only=True)) == list(torch_layout.KEYS)


def test_conversion_function_errors_without_the_cli():
    with pytest.raises(UserError, match=r'model\.pt: expected a state dict .* found a list'):
        torch_convert.torch_state_dict_to_params([], small_config(), C, source='model.pt')


def test_export_function_rejects_other_parameters(torch):
    with pytest.raises(ValueError, match='not the parameters of a um network'):
        torch_convert.params_to_torch_state_dict({'embed': {}}, small_config())
