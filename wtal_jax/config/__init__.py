"""Configuration: one schema of every field with its default and its rule, config files, and
``--config.a.b=value`` overrides.

Each field is declared once, as ``F(default, rule)`` beside a comment giving its meaning and unit:
the common fields in :data:`COMMON` below, a method's own fields (``model``, ``loss`` and its
``localize`` settings) in its folder (``wtal_jax/method/NAME``), which also gives its release's
values of common fields. :func:`default_config` assembles the defaults of ``config.method``;
:func:`validate` checks a config against the rules of the same schema and reports every violation
at once, in one line.

A config file is a Python file with ``get_config() -> ml_collections.ConfigDict`` (see
``configs/``); variants start from :func:`default_config` (or another file, :func:`from_file`) and
change only what differs. Like every ml_collections config, a config file is code and runs when
loaded: use only config files you trust. The returned config is locked: a misspelt key is an
error, not a silently ignored setting. Overrides are parsed by the type of the field they replace
(never ``eval``'d).
"""

import contextlib
import difflib
import importlib.util
import json
import math
import os

import ml_collections
import numpy as np

from wtal_jax.config.overrides import parse_value
from wtal_jax.config.rules import (COUNT, F, FLAG, FRACTION_BELOW_ONE, PROBABILITY, POSITIVE,
                                   Items, OneOf, Text, integer, real)
from wtal_jax.data.annotations import THUMOS14_CLASSES
from wtal_jax.errors import UserError


def _arange(start: float, stop: float, step: float) -> tuple[float, ...]:
    """The release builds its thresholds with np.arange; keep exactly those float values."""
    return tuple(float(v) for v in np.arange(start, stop, step))


# The scalar metrics an evaluation records (postprocess.evaluator.Evaluator), to select the best by.
EVAL_METRICS = ('average_mAP', 'classification_mAP', 'accuracy')


# ---------------------------------------------------------------------------------------------
# The common fields (THUMOS'14 with the authors' release settings, SPEC §1, §4-§6)

COMMON = {
    'seed': F(0, integer(0, 2**31 - 1)),        # one seed for init, dropout, data order, jitter
    'seeds': F((), Items(integer(0, 2**31 - 1), distinct=True)),  # several at once (vmap);
                                                 # () = (seed,)
    'method': F('um', Text(nonempty=True)),     # 'um', 'basnet', a module path or a .py file
    'data': {
        'root': F('', Text()),                  # dataset folder in the THUMOS'14 layout (SPEC §1)
        'annotation_file': F('gt.json', Text(nonempty=True)),   # relative to root
        'modality': F('all', OneOf(('rgb', 'flow', 'all'))),    # 'all': [rgb, flow]
        'feature_dim': F(2048, COUNT),          # D after the modality choice (1024 per stream)
        # () derives the sorted label set from the annotations.
        'class_names': F(THUMOS14_CLASSES, Items(Text(nonempty=True), distinct=True)),
        'num_segments': F(750, COUNT),          # T, segments a video is sampled to
        # At test time 'keep': a video of n <= T segments keeps its n (UM's release); 'fixed':
        # always T indices floor(i * n / T), short videos repeating segments (BaS-Net's).
        'test_sampling': F('keep', OneOf(('keep', 'fixed'))),
        'segment_frames': F(16, COUNT),         # frames per original segment (feature stride)
        'fps': F(25.0, POSITIVE),               # frames per second of the features' video
        # True: seconds per segment = duration / n (the annotation's duration; ActivityNet), for
        # the ground truth of training and for placing detections; False: segment_frames / fps.
        'use_duration': F(False, FLAG),
        # Of the training videos, held out to select checkpoints (checkpoint.select=selection).
        'selection_fraction': F(0.2, real(0, below=1)),
        # A video listed in a split file without feature files: 'error' stops with a count of
        # all such videos; 'skip' leaves them out of training and evaluation inputs and names
        # them in the log (public ActivityNet releases lack ~3% of the videos); their ground
        # truth still counts as missed in evaluation, as the official evaluation does.
        'missing': F('error', OneOf(('error', 'skip'))),
        'train': {
            'split_file': F('split_train.txt', Text(nonempty=True)),
            'feature_dir': F('features/train', Text()),
            # The THUMOS'14 gt.json marks its 200 validation videos (our training set) 'train'.
            'subset': F('train', Text(nonempty=True)),
        },
        'test': {
            'split_file': F('split_test.txt', Text(nonempty=True)),
            'feature_dir': F('features/test', Text()),
            'subset': F('test', Text(nonempty=True)),
        },
    },
    # The embedded default data set; generated into data.root when enabled and absent.
    'synthetic': {
        'enabled': F(False, FLAG),
        'num_classes': F(5, COUNT),
        'num_train': F(160, COUNT),
        'num_test': F(80, COUNT),
        'feature_dim': F(64, integer(4)),       # per stream
        'min_segments': F(60, integer(5)),      # room for two instances and a gap
        'max_segments': F(300, integer(5)),
        'seed': F(0, integer(0, 2**63 - 1)),
    },
    'model': {
        # 'float32' | 'bfloat16': features and matmuls (params, losses and accumulation stay
        # float32).
        'dtype': F('float32', OneOf(('float32', 'bfloat16'))),
    },
    'loss': {},
    'optim': {
        'learning_rate': F(1e-4, POSITIVE),     # constant rate when lr_list is empty
        'lr_list': F((), Items(POSITIVE)),      # per-step learning rates (step 1 uses [0])
        'b1': F(0.9, FRACTION_BELOW_ONE),
        'b2': F(0.999, FRACTION_BELOW_ONE),
        'eps': F(1e-8, POSITIVE),
        'weight_decay': F(5e-4, real(0)),       # coupled L2, added to the gradient before Adam
    },
    'train': {
        'batch_size': F(16, COUNT),             # global batch, videos, split across devices
        'num_steps': F(10_000, COUNT),
        'num_devices': F(0, integer(0)),        # local devices to use; 0 = all
        'prefetch': F(2, COUNT),                # batches prepared ahead of the step trained
        'prefetch_workers': F(4, COUNT),        # host threads preparing batches (host path)
        # 'auto' | 'always' | 'never': keep the training features on the device, gathering
        # each batch there; 'auto': there if they fit in device_memory_fraction of its memory.
        'data_on_device': F('auto', OneOf(('auto', 'always', 'never'))),
        'device_memory_fraction': F(0.5, real(above=0, high=1)),
        # 'epochs': every epoch visits each video once (UM's release); 'draws': only the first
        # does, then each step draws its B videos afresh (BaS-Net's release, SPEC §8.2).
        'batch_order': F('epochs', OneOf(('epochs', 'draws'))),
        'log_every_steps': F(10, COUNT),
        'init_from': F('', Text()),             # run directory whose best parameters start it
    },
    'eval': {
        'every_steps': F(100, COUNT),           # the release evaluates after every step (1)
        'tiou_thresholds': F(_arange(0.1, 0.75, 0.1),
                             Items(real(above=0, high=1), nonempty=True, distinct=True)),
        'chunk_segments': F(8192, COUNT),       # segments per packed inference chunk (> T)
        'class_threshold': F(0.2, PROBABILITY),  # a class is predicted at score >= this
                                                 # (video accuracy)
    },
    'checkpoint': {
        'every_steps': F(500, COUNT),
        'keep': F(2, COUNT),                    # most recent checkpoints kept
        # The best checkpoint: 'selection' (on the held-out part of the training videos) |
        # 'last' | 'test' (on the test split: the release's protocol, test-set selection).
        'select': F('selection', OneOf(('selection', 'last', 'test'))),
        'best_metric': F('average_mAP', OneOf(EVAL_METRICS)),   # what 'selection', 'test'
        'best_mode': F('max', OneOf(('max', 'min'))),           # maximise or minimise
    },
    # Localisation every method shares (SPEC §5 steps 5-9); each method adds its own fields.
    'localize': {
        'upsample': F(24, COUNT),               # interpolated points per sampled segment
        'min_run_length': F(2, COUNT),          # shortest proposal kept, in upsampled points
        'outer_ratio': F(0.25, real(0)),        # outer window per side, fraction of the run
        'p_act_weight': F(0.2, real(0)),        # weight of the video-level term of a score
        'nms_iou': F(0.6, real(above=0, high=1)),   # suppress at "+1" IoU >= this (seconds)
    },
}

# Rules between fields: (the fields, whether a config satisfies it, what it asks). Checked only
# where those fields each follow their own rule.
CONSTRAINTS = (
    (('eval.chunk_segments', 'data.num_segments'),
     lambda c: c.eval.chunk_segments > c.data.num_segments,
     'eval.chunk_segments must exceed data.num_segments (a chunk holds a whole video)'),
    (('checkpoint.select', 'data.selection_fraction'),
     lambda c: c.checkpoint.select != 'selection' or c.data.selection_fraction > 0,
     'checkpoint.select=selection needs a selection split (data.selection_fraction > 0)'),
    (('synthetic.min_segments', 'synthetic.max_segments'),
     lambda c: c.synthetic.min_segments <= c.synthetic.max_segments,
     'synthetic.min_segments must not exceed synthetic.max_segments'),
)


# ---------------------------------------------------------------------------------------------
# A method's schema and defaults


def _flat(tree: dict, prefix: str = '') -> dict:
    """Dotted name -> leaf of a nested dict (or ConfigDict)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            flat.update(_flat(value, f'{prefix}{key}.'))
        else:
            flat[prefix + key] = value
    return flat


def _method(name: str):
    from wtal_jax import method   # at call time: methods import this module for F and rules
    return method.load(name)


def schema(method: str = 'um') -> dict:
    """The whole schema of a method: dotted name -> :class:`F`, the common fields with the
    method's release values as their defaults, and the method's own fields in its sections."""
    found = _method(method)
    fields = _flat(COMMON)
    for section, own in found.config.items():
        for key, field in _flat(own, f'{section}.').items():
            if key in fields:
                raise UserError(f'method {method}: its field {key} is a common field; give its '
                                'value in METHOD.defaults instead')
            fields[key] = field
    for key, value in found.defaults.items():
        if key not in fields:
            raise UserError(f'method {method}: METHOD.defaults sets {key}, which is no field')
        fields[key] = fields[key]._replace(default=value)
    return fields


def rules(method: str = 'um') -> dict:
    """Dotted name -> the rule of that field, for a config of ``method``."""
    return {key: field.rule for key, field in schema(method).items()}


def default_config(method: str = 'um') -> ml_collections.ConfigDict:
    """The defaults of ``method`` (THUMOS'14 with its release's settings). Unlocked; callers
    lock it."""
    c = ml_collections.ConfigDict()
    for key, field in schema(method).items():
        *sections, leaf = key.split('.')
        node = c
        for name in sections:
            if name not in node:
                node[name] = ml_collections.ConfigDict()
            node = node[name]
        node[leaf] = field.default
    c.method = method
    return c


def from_file(anchor: str, name: str) -> ml_collections.ConfigDict:
    """The config of config file ``name`` in the folder of ``anchor`` (pass ``__file__``),
    unlocked: for a variant that changes a few fields of another config file."""
    cfg = _run_config_file(os.path.join(os.path.dirname(os.path.abspath(anchor)), name))
    cfg.unlock()
    return cfg


# ---------------------------------------------------------------------------------------------
# Validation


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def _unknown(key: str, known) -> str:
    """``KEY is not a known field``, with the nearest known one when it looks like a typo."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
    return f'{key} is not a known field' + (f' (did you mean {close[0]}?)' if close else '')


def config_errors(cfg) -> list[str]:
    """Every way ``cfg`` breaks its method's rules and CONSTRAINTS, one phrase each (empty when
    valid)."""
    values = _flat(cfg)
    method = values.get('method', 'um')
    if not COMMON['method'].rule.accepts(method):
        return [f'method={_shown(method)} (must be {COMMON["method"].rule})']
    checks = rules(method)
    invalid = [key for key, rule in checks.items()
               if key in values and not rule.accepts(values[key])]
    missing = [key for key in checks if key not in values]
    errors = [f'{key}={_shown(values[key])} (must be {checks[key]})' for key in invalid]
    errors += [f'{key} is missing' for key in missing]
    errors += [_unknown(key, checks) for key in values if key not in checks]
    for keys, holds, text in CONSTRAINTS:
        if set(invalid + missing).isdisjoint(keys) and not holds(cfg):
            errors.append(f'{text}: ' + ', '.join(f'{k}={_shown(values[k])}' for k in keys))
    return errors


def validate(cfg, *, source: str = '') -> None:
    """Raises one UserError listing every invalid, missing or unknown field of ``cfg``.

    ``source`` names where the config came from (a config file, a run's config.json).
    """
    errors = config_errors(cfg)
    if errors:
        count = f'{len(errors)} invalid setting' + ('s' if len(errors) > 1 else '')
        raise UserError(f'{source or "config"}: {count}: ' + '; '.join(errors))


def run_seeds(cfg) -> tuple[int, ...]:
    """The seeds a run trains: ``seeds``, or the single ``seed``."""
    return tuple(int(s) for s in cfg.seeds) or (int(cfg.seed),)


def segment_seconds(cfg) -> float:
    """Seconds of one original segment on the fixed grid: ``segment_frames / fps``."""
    return cfg.data.segment_frames / cfg.data.fps


def frozen(cfg) -> ml_collections.FrozenConfigDict:
    """An immutable, hashable copy of ``cfg``: the ``hp`` of a method's functions, a static of
    the compiled programs."""
    return ml_collections.FrozenConfigDict(cfg)


# ---------------------------------------------------------------------------------------------
# Config files


# What --config takes, said whenever it is given something else.
CONFIG_KINDS = '--config takes a Python config file (configs/*.py) or a run\'s config.json'


def _run_config_file(path: str) -> ml_collections.ConfigDict:
    """``get_config()`` of a Python config file, every way it can fail said in one line.

    The file is code and runs when loaded, as every ml_collections config does: a config file
    from someone else runs what it holds (docs/bad-input.md)."""
    if not os.path.exists(path):
        raise UserError(f'{path}: config file not found')
    if not os.path.isfile(path):
        raise UserError(f'{path}: not a regular file; {CONFIG_KINDS}')
    if not path.endswith('.py'):
        raise UserError(f'{path}: neither a .py nor a .json file; {CONFIG_KINDS}')
    spec = importlib.util.spec_from_file_location('wtal_jax_user_config', path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # a broken config file is the user's to fix: say where
        raise UserError(f'{path}: cannot load config: {type(e).__name__}: {e}') from None
    if not callable(getattr(module, 'get_config', None)):
        raise UserError(f'{path}: config file defines no get_config()')
    try:
        cfg = module.get_config()
    except (Exception, SystemExit) as e:   # exit() in get_config: not a silent success
        raise UserError(f'{path}: get_config() raised {type(e).__name__}: {e}') from None
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise UserError(f'{path}: get_config() returned a {type(cfg).__name__}, not an '
                        'ml_collections.ConfigDict')
    return cfg


def _read_saved(path: str) -> ml_collections.ConfigDict:
    """A run's config.json given as ``--config``: its settings, as a new run's config."""
    from wtal_jax.io_utils import read_json
    values = read_json(path, what='a run config')
    sections = [k for k, v in COMMON.items() if isinstance(v, dict)]
    if not isinstance(values, dict) or not any(isinstance(values.get(k), dict)
                                               for k in sections):
        raise UserError(f'{path}: not a run\'s config.json (no sections of settings such as '
                        f'data and train); {CONFIG_KINDS}')
    return from_dict(values, source=path)


def rebase(cfg: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """``cfg`` under another method: that method's defaults, with every common field that
    ``cfg`` changed from its own method's defaults (and that both methods have) kept."""
    old, new = _flat(default_config(cfg.method)), default_config(method)
    fields = _flat(new)
    for key, value in _flat(cfg).items():
        if key in fields and key != 'method' and value != old.get(key):
            *sections, leaf = key.split('.')
            node = new
            for name in sections:
                node = node[name]
            node[leaf] = value
    return new


def load_config(path: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """The config of a config file (``get_config()`` of a Python file, or a run's config.json),
    locked, with ``overrides`` applied and validated.

    ``--config.method=NAME`` among the overrides rebases the file's config on that method
    (:func:`rebase`) before the other overrides.
    """
    cfg = _read_saved(path) if path.endswith('.json') else _run_config_file(path)
    method = cfg.get('method', 'um')
    if isinstance(method, str) and method.endswith('.py') and not os.path.isabs(method):
        # A method file named in a config file is relative to that file.
        with cfg.unlocked() if cfg.is_locked else contextlib.nullcontext():
            cfg.method = os.path.join(os.path.dirname(os.path.abspath(path)), method)
    chosen = [o for o in overrides if _override_key(o) == 'method']
    if chosen:
        method = chosen[-1].split('=', 1)[1]
        if method.endswith('.py'):
            method = os.path.abspath(method)   # the run is evaluated from anywhere later
        if method != cfg.get('method', 'um'):
            validate(cfg, source=path)
            cfg = rebase(cfg, method)
    cfg.lock()
    apply_overrides(cfg, [o for o in overrides if _override_key(o) != 'method'], source=path)
    return cfg


def _override_key(item: str) -> str:
    return item.removeprefix('--').removeprefix('config.').split('=', 1)[0]


def apply_overrides(cfg: ml_collections.ConfigDict, overrides, *, source: str = '') -> None:
    """Applies ``a.b=value`` strings (a leading ``--config.`` is accepted) in order, then
    validates. The method of a config is chosen with its file (:func:`load_config`)."""
    where = source or 'config'
    for item in overrides:
        item = item.removeprefix('--').removeprefix('config.')
        if '=' not in item:
            raise UserError(f'override {item!r}: expected --config.KEY=VALUE')
        key, text = item.split('=', 1)
        if key == 'method' and text != cfg.method:
            raise UserError(f'--config.method={text}: {where} is a {cfg.method} config; choose '
                            'the method of a new run with --config FILE --config.method=NAME')
        *parents, leaf = key.split('.')
        node = cfg
        for name in parents:
            if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
                raise UserError(f'--config.{key}: no section {name!r} in {where}')
            node = node[name]
        if leaf not in node:
            close = difflib.get_close_matches(key, list(_flat(cfg)), n=1, cutoff=0.8)
            hint = f' (did you mean {close[0]}?)' if close else ''
            raise UserError(f'--config.{key}: no such field in {where}{hint}')
        with node.ignore_type():
            node[leaf] = parse_value(text, node[leaf], key)
    validate(cfg, source=source)


def to_dict(cfg: ml_collections.ConfigDict) -> dict:
    """A JSON-ready plain dict (tuples as lists) of the resolved config."""
    return json.loads(cfg.to_json())


def _migrate(values: dict, source: str) -> dict:
    """A config saved before each setting had one key: ``localize.segment_frames``, ``fps``
    and ``use_duration`` move to ``data`` (refused where the two copies disagree), the
    derived ``data.segment_seconds`` is dropped once checked; before there were methods: no
    ``method`` means UM, with UM's test sampling and batch order."""
    values = json.loads(json.dumps(values))   # a copy
    data, localize = values.get('data'), values.get('localize')
    if not isinstance(data, dict) or not isinstance(localize, dict):
        return values
    for key in ('segment_frames', 'fps', 'use_duration'):
        if key in localize and key in data and localize[key] != data[key]:
            raise UserError(f'{source}: localize.{key}={localize[key]!r} disagrees with '
                            f'data.{key}={data[key]!r} (one setting now: data.{key})')
        if key in localize:
            data.setdefault(key, localize.pop(key))
    if 'segment_seconds' in data:
        seconds = data.pop('segment_seconds')
        grid = data.get('segment_frames', 16) / data.get('fps', 25.0)
        if not (isinstance(seconds, (int, float)) and math.isclose(seconds, grid)):
            raise UserError(f'{source}: data.segment_seconds={seconds!r} disagrees with '
                            f'segment_frames / fps = {grid:g} (one setting now: '
                            'data.segment_frames and data.fps)')
    values.setdefault('method', 'um')
    data.setdefault('test_sampling', 'keep')
    if isinstance(values.get('train'), dict):
        values['train'].setdefault('batch_order', 'epochs')
    return values


def from_dict(values: dict, *, source: str = 'saved config') -> ml_collections.ConfigDict:
    """Rebuilds a locked config saved by :func:`to_dict` (lists back to tuples), validated:
    a saved file may have been edited by hand. ``source`` names it in error messages."""
    def fix(v):
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return tuple(fix(x) for x in v)
        return v
    if not isinstance(values, dict):
        raise UserError(f'{source}: expected a JSON object of config sections, found '
                        f'{type(values).__name__}')
    cfg = ml_collections.ConfigDict(fix(_migrate(values, source)))
    cfg.lock()
    validate(cfg, source=source)
    return cfg
