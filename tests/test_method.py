"""The method seam (wtal_jax.method): loading a method by name, module or file, what a METHOD must
hold, its config composed with the common fields, --config.method rebasing a config file, and a
method of one's own file trained, evaluated and compared through the command line."""

import json
import os
import sys
import textwrap

import pytest

from wtal_jax import config, method
from wtal_jax.cli import main as cli_main
from wtal_jax.config.rules import COUNT, F
from wtal_jax.errors import UserError
from wtal_jax.method import um

from test_loop import TINY, data_root  # noqa: F401  (the tiny data set fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, 'configs')
EXAMPLE = os.path.join(REPO, 'docs', 'examples', 'um_sharper_fusion.py')


def leaves(tree, prefix=''):
    """Dotted names of every field (written out here, not taken from the package)."""
    names = []
    for key, value in tree.items():
        names += leaves(value, f'{prefix}{key}.') if isinstance(value, dict) else [prefix + key]
    return names


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


# ---------------------------------------------------------------------------------------------
# Loading


def test_built_in_methods_load_by_name():
    assert method.load('um') is um.METHOD
    basnet = method.load('basnet')
    assert basnet.name == 'basnet' and basnet.torch is not None
    for found in (um.METHOD, basnet):
        for name in method.FUNCTIONS:
            assert callable(getattr(found, name))


def test_a_method_loads_from_a_module_path_and_from_a_file(tmp_path, monkeypatch):
    source = 'from wtal_jax.method import um\nMETHOD = um.METHOD._replace(name="mine")\n'
    file = write(tmp_path / 'mine.py', source)
    assert method.load(file).name == 'mine'
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / 'my_pkg').mkdir()
    write(tmp_path / 'my_pkg' / '__init__.py', '')
    write(tmp_path / 'my_pkg' / 'other.py', source.replace('mine', 'other'))
    assert method.load('my_pkg.other').name == 'other'
    sys.modules.pop('my_pkg.other', None)
    sys.modules.pop('my_pkg', None)


@pytest.mark.parametrize('text,words', [
    ('X = 1\n', ['defines no METHOD']),
    ('METHOD = 3\n', ['METHOD is a int, not a wtal_jax.method.Method']),
    ('from wtal_jax.method import um\nMETHOD = um.METHOD._replace(losses=None, scores=2)\n',
     ['METHOD.losses, METHOD.scores are not a function']),
    ('raise RuntimeError("boom")\n', ['cannot load: RuntimeError: boom']),
])
def test_a_method_file_without_what_is_needed_is_one_line(tmp_path, text, words):
    file = write(tmp_path / 'bad.py', text)
    with pytest.raises(UserError) as info:
        method.load(file)
    message = str(info.value)
    assert '\n' not in message and message.startswith(f'method {file}')
    for word in words:
        assert word in message, message


def test_unknown_names_are_one_line(tmp_path):
    with pytest.raises(UserError, match=r"unknown method 'nope': not one of um, basnet"):
        method.load('nope')
    with pytest.raises(UserError, match='no such file'):
        method.load(str(tmp_path / 'missing.py'))


# ---------------------------------------------------------------------------------------------
# Its config


def test_a_method_brings_its_fields_and_its_release_values_of_common_ones():
    um_cfg, bas_cfg = config.default_config('um'), config.default_config('basnet')
    assert um_cfg.method == 'um' and bas_cfg.method == 'basnet'
    assert 'r_act' in um_cfg.model and 'r_act' not in bas_cfg.model
    assert bas_cfg.model.filter_dim == 512 and bas_cfg.model.topk_ratio == 8
    assert bas_cfg.loss.alpha == 1e-4 and dict(bas_cfg.loss) == {'alpha': 1e-4}
    # BaS-Net's release values of common fields (SPEC §8), UM keeps the common defaults.
    for key, value in (('localize.nms_iou', (0.6, 0.7)), ('localize.min_run_length', (2, 1)),
                       ('eval.class_threshold', (0.2, 0.25)), ('train.num_steps', (10_000, 1500)),
                       ('data.test_sampling', ('keep', 'fixed')),
                       ('train.batch_order', ('epochs', 'draws'))):
        section, field = key.split('.')
        assert (um_cfg[section][field], bas_cfg[section][field]) == value, key
    assert len(bas_cfg.eval.tiou_thresholds) == 9 and bas_cfg.eval.tiou_thresholds[2] == \
        0.30000000000000004   # np.linspace(0.1, 0.9, 9), the release's values
    assert sorted(config.rules('basnet')) == sorted(leaves(config.to_dict(bas_cfg)))


def test_a_method_field_that_clashes_with_a_common_one_is_refused():
    clash = um.METHOD._replace(config={'train': {'batch_size': F(3, COUNT)}})
    unknown = um.METHOD._replace(defaults={'train.no_such_field': 1})
    for bad, words in ((clash, 'train.batch_size is a common field'),
                       (unknown, 'sets train.no_such_field, which is no field')):
        module = type(sys)('m')
        module.METHOD = bad
        sys.modules['wtal_jax_test_method'] = module
        try:
            with pytest.raises(UserError, match=words):
                config.default_config('wtal_jax_test_method')
        finally:
            del sys.modules['wtal_jax_test_method']


def test_config_method_rebases_a_config_file_on_another_method():
    """--config.method=basnet on the synthetic config: the file's own changes stay (data,
    sizes, steps), BaS-Net's release values replace the common defaults the file kept."""
    cfg = config.load_config(os.path.join(CONFIGS, 'synthetic.py'), ['method=basnet'])
    assert cfg.method == 'basnet' and cfg.synthetic.enabled
    assert (cfg.train.num_steps, cfg.model.embed_dim, cfg.data.num_segments) == (1000, 512, 256)
    assert (cfg.localize.nms_iou, cfg.data.test_sampling) == (0.7, 'fixed')
    assert 'r_act' not in cfg.model
    # Later overrides apply to the rebased config, whatever their order on the line.
    cfg = config.load_config(os.path.join(CONFIGS, 'synthetic.py'),
                             ['localize.nms_iou=0.5', 'method=basnet'])
    assert cfg.localize.nms_iou == 0.5


def test_the_method_of_a_config_is_not_changed_by_a_plain_override():
    cfg = config.load_config(os.path.join(CONFIGS, 'thumos14.py'))
    with pytest.raises(UserError, match='is a um config; choose the method of a new run'):
        config.apply_overrides(cfg, ['method=basnet'], source='run/config.json')


def test_a_method_file_named_in_a_config_file_is_relative_to_it(tmp_path):
    (tmp_path / 'cfgs').mkdir()
    write(tmp_path / 'cfgs' / 'mine.py', 'from wtal_jax.method import um\nMETHOD = um.METHOD\n')
    path = write(tmp_path / 'cfgs' / 'exp.py', """
        from wtal_jax.config import default_config


        def get_config():
            c = default_config()
            c.method = 'mine.py'
            return c
        """)
    assert config.load_config(path).method == str(tmp_path / 'cfgs' / 'mine.py')


def test_a_saved_config_of_an_earlier_version_reads_as_um():
    saved = config.to_dict(config.default_config())
    del saved['method'], saved['data']['test_sampling'], saved['train']['batch_order']
    data = saved['data']
    localize = saved['localize']
    localize['segment_frames'], localize['fps'] = data.pop('segment_frames'), data.pop('fps')
    localize['use_duration'] = data['use_duration']
    data['segment_seconds'] = 0.64
    cfg = config.from_dict(json.loads(json.dumps(saved)), source='old/config.json')
    assert config.to_dict(cfg) == config.to_dict(config.default_config())
    data['segment_seconds'] = 0.5
    with pytest.raises(UserError, match=r'data.segment_seconds=0.5 disagrees with '
                                        r'segment_frames / fps = 0.64'):
        config.from_dict(json.loads(json.dumps(saved)), source='old/config.json')


# ---------------------------------------------------------------------------------------------
# A method of one's own, through the command line (docs/adding-a-method.md)


def test_a_method_of_ones_own_file_trains_evaluates_and_compares(data_root, tmp_path, capsys,
                                                                  monkeypatch):
    args = ['--config', os.path.join(CONFIGS, 'synthetic.py'), *TINY,
            f'--config.data.root={data_root}', '--config.train.num_steps=4',
            '--config.eval.every_steps=2', '--config.checkpoint.every_steps=2',
            '--seeds', '2', '--quiet']
    um_run, own_run = str(tmp_path / 'um'), str(tmp_path / 'own')
    assert cli_main(['train', '--workdir', um_run, *args]) == 0
    monkeypatch.chdir(os.path.dirname(EXAMPLE))   # a relative file on the command line
    assert cli_main(['train', '--workdir', own_run, *args,
                     f'--config.method={os.path.basename(EXAMPLE)}']) == 0
    with open(os.path.join(own_run, 'config.json')) as f:
        assert json.load(f)['method'] == EXAMPLE    # recorded absolute: usable from anywhere
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert cli_main(['evaluate', '--workdir', own_run, '--seed', '1', '--quiet']) == 0
    assert 'checkpoint step 4, seed 1' in capsys.readouterr().out
    assert cli_main(['compare', um_run, own_run]) == 0
    out = capsys.readouterr().out
    assert 'paired seeds: 0, 1 (n = 2)' in out and 'B − A = ' in out
