"""Configuration: the SPEC defaults, config files, and ``--config.a.b=value`` overrides.

A config file is a Python file with ``get_config() -> ml_collections.ConfigDict`` (see
``configs/``); variants start from :func:`default_config` and change only what differs. The
returned config is locked: a misspelt key is an error, not a silently ignored setting.
Overrides are parsed by the type of the field they replace (never ``eval``'d).
"""

import dataclasses
import importlib.util
import json
import math
import os

import ml_collections
import numpy as np

from wtal_jax.data.annotations import THUMOS14_CLASSES
from wtal_jax.errors import UserError


def _arange(start: float, stop: float, step: float) -> tuple[float, ...]:
    """The release builds its thresholds with np.arange; keep exactly those float values."""
    return tuple(float(v) for v in np.arange(start, stop, step))


def default_config() -> ml_collections.ConfigDict:
    """THUMOS'14 with the authors' release settings (SPEC §1-§6). Unlocked; callers lock it."""
    c = ml_collections.ConfigDict()
    c.seed = 0                        # one seed for init, dropout, data order and jitter
    c.seeds = ()                      # several seeds trained at once (vmap); () = (seed,)

    c.data = d = ml_collections.ConfigDict()
    d.root = ''                       # dataset folder in the THUMOS'14 layout (SPEC §1)
    d.annotation_file = 'gt.json'     # relative to root
    d.modality = 'all'                # 'rgb' | 'flow' | 'all' ([rgb, flow] concatenated)
    d.feature_dim = 2048              # D after the modality choice (1024 per stream)
    d.class_names = THUMOS14_CLASSES  # () derives the sorted label set from the annotations
    d.num_segments = 750              # T, segments a video is sampled to
    d.segment_seconds = 16 / 25       # seconds per original segment (16 frames at 25 fps)
    d.use_duration = False            # True: seconds per segment = duration / n (ActivityNet)
    d.selection_fraction = 0.2        # of the training videos, held out to select checkpoints
                                      # (with checkpoint.select=selection only)
    # A video listed in a split file without feature files: 'error' stops with a count of all
    # such videos; 'skip' leaves them out of training and evaluation inputs and names them in the
    # log (public ActivityNet releases lack ~3% of the videos); their ground truth still counts
    # as missed in evaluation, as the official evaluation does.
    d.missing = 'error'
    d.train = ml_collections.ConfigDict(dict(
        # The THUMOS'14 gt.json marks its 200 validation videos (our training set) 'train'.
        split_file='split_train.txt', feature_dir='features/train', subset='train'))
    d.test = ml_collections.ConfigDict(dict(
        split_file='split_test.txt', feature_dir='features/test', subset='test'))

    # The embedded default data set; generated into data.root when enabled and absent.
    c.synthetic = s = ml_collections.ConfigDict()
    s.enabled = False
    s.num_classes = 5
    s.num_train = 160
    s.num_test = 80
    s.feature_dim = 64                # per stream
    s.min_segments = 60
    s.max_segments = 300
    s.seed = 0

    c.model = m = ml_collections.ConfigDict()
    m.embed_dim = 2048                # E (the release fixes 2048)
    m.dropout_rate = 0.7              # before the classifier, training only
    m.r_act = 9                       # k_act = T // r_act
    m.r_bkg = 4                       # k_bkg = T // r_bkg
    m.selection_dropout = 0.7         # [release] mask on magnitudes for top-k; 0 = paper
    m.dtype = 'float32'               # 'float32' | 'bfloat16': features and matmuls (params,
                                      # losses and accumulation stay float32)

    c.loss = l = ml_collections.ConfigDict()
    l.alpha = 5e-4                    # weight of L_um
    l.beta = 1.0                      # weight of L_be
    l.margin = 100.0                  # m, the maximum feature magnitude (Eq. 4, 7)
    l.cls_variant = 'release'         # 'release' (BCE) | 'paper' (Eq. 6)
    l.be_variant = 'release'          # 'release' (BCE to 1/C) | 'paper' (Eq. 8)
    l.cls_scale = '1'                 # '1' (release: L_cls averages over classes) | 'classes'
                                      # (x C: keeps its weight when C grows, ActivityNet)

    c.optim = o = ml_collections.ConfigDict()
    o.learning_rate = 1e-4            # constant rate when lr_list is empty
    o.lr_list = ()                    # per-step learning rates (step 1 uses lr_list[0])
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-8
    o.weight_decay = 5e-4             # coupled L2, added to the gradient before Adam

    c.train = t = ml_collections.ConfigDict()
    t.batch_size = 16                 # global batch, videos, split across devices
    t.num_steps = 10_000
    t.num_devices = 0                 # local devices to use; 0 = all
    t.prefetch = 2                    # batches prepared ahead of the step being trained
    t.prefetch_workers = 4            # host threads preparing batches (host data path)
    t.data_on_device = 'auto'         # 'auto' | 'always' | 'never': keep the training features
                                      # on the device, gathering each batch there
    t.device_memory_fraction = 0.5    # 'auto': on the device if the features fit in this
                                      # fraction of its memory
    t.log_every_steps = 10
    t.init_from = ''                  # run directory whose best parameters start training

    c.eval = e = ml_collections.ConfigDict()
    e.every_steps = 100               # the release evaluates after every step (1)
    e.tiou_thresholds = _arange(0.1, 0.75, 0.1)
    e.chunk_segments = 8192           # segments per packed inference chunk (> T)
    e.class_threshold = 0.2           # theta for video accuracy

    c.checkpoint = k = ml_collections.ConfigDict()
    k.every_steps = 500
    k.keep = 2                        # most recent checkpoints kept
    k.select = 'selection'            # best checkpoint: 'selection' (on the held-out part of
                                      # the training videos) | 'last' | 'test' (on the test
                                      # split: the release's protocol, test-set selection)
    k.best_metric = 'average_mAP'     # what 'selection' and 'test' maximise
    k.best_mode = 'max'

    c.localize = z = ml_collections.ConfigDict()
    z.theta_vid = 0.2
    z.upsample = 24
    z.score_thresholds = _arange(0.0, 0.25, 0.025)
    z.magnitude_thresholds = _arange(0.4, 0.625, 0.025)
    z.min_run_length = 2
    z.outer_ratio = 0.25
    z.p_act_weight = 0.2
    z.nms_iou = 0.6
    z.segment_frames = 16
    z.fps = 25.0
    z.use_duration = False
    z.families = ('score', 'magnitude')
    z.fuse_magnitude = True
    return c


# ---------------------------------------------------------------------------------------------
# What each field may hold
#
# One rule per field of default_config(), in its order; the defaults stay there alone. A new
# field needs a line here (tests/test_config.py checks that the two list the same fields), and a
# rule that involves two fields goes into CONSTRAINTS. validate() checks a whole config against
# both and reports every violation at once.


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


@dataclasses.dataclass(frozen=True)
class Number:
    """An integer (``integer=True``; booleans are not) or a finite real number, with optional
    inclusive (``low``, ``high``) and exclusive (``above``, ``below``) bounds."""
    integer: bool = False
    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        return ((self.integer or _finite(value))
                and (self.low is None or value >= self.low)
                and (self.high is None or value <= self.high)
                and (self.above is None or value > self.above)
                and (self.below is None or value < self.below))

    def __str__(self) -> str:
        bounds = [f'{op} {bound}' for op, bound in (('>=', self.low), ('>', self.above),
                                                      ('<=', self.high), ('<', self.below))
                  if bound is not None]
        return ' '.join(['an integer' if self.integer else 'a finite number',
                         ' and '.join(bounds)]).strip()


@dataclasses.dataclass(frozen=True)
class OneOf:
    """One of a few values (compared with ==, types included)."""
    choices: tuple

    def accepts(self, value) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices)

    def __str__(self) -> str:
        return 'one of ' + ', '.join(repr(c) for c in self.choices)


@dataclasses.dataclass(frozen=True)
class Text:
    """A string; ``nonempty`` refuses ''."""
    nonempty: bool = False

    def accepts(self, value) -> bool:
        return isinstance(value, str) and (bool(value) or not self.nonempty)

    def __str__(self) -> str:
        return 'a non-empty string' if self.nonempty else 'a string'


@dataclasses.dataclass(frozen=True)
class Items:
    """A tuple (a list in JSON) whose items each follow ``item``; optionally non-empty and
    without repeats."""
    item: object
    nonempty: bool = False
    distinct: bool = False

    def accepts(self, value) -> bool:
        return (isinstance(value, (tuple, list)) and all(self.item.accepts(v) for v in value)
                and (bool(value) or not self.nonempty)
                and (not self.distinct or len(set(value)) == len(value)))

    def __str__(self) -> str:
        words = ('a', 'non-empty' if self.nonempty else '', 'list of',
                 'distinct' if self.distinct else '', 'items, each', str(self.item))
        return ' '.join(w for w in words if w)


def integer(low=None, high=None) -> Number:
    return Number(integer=True, low=low, high=high)


def real(low=None, high=None, *, above=None, below=None) -> Number:
    return Number(low=low, high=high, above=above, below=below)


FLAG = OneOf((False, True))
PROBABILITY = real(0, 1)
FRACTION_BELOW_ONE = real(0, below=1)   # a dropout rate: 1 would drop everything
POSITIVE = real(above=0)
COUNT = integer(1)
# The scalar metrics an evaluation records (postprocess.evaluator.Evaluator), to select the best by.
EVAL_METRICS = ('average_mAP', 'classification_mAP', 'accuracy')

RULES = {
    'seed': integer(0, 2**31 - 1),
    'seeds': Items(integer(0, 2**31 - 1), distinct=True),
    'data.root': Text(),
    'data.annotation_file': Text(nonempty=True),
    'data.modality': OneOf(('rgb', 'flow', 'all')),
    'data.feature_dim': COUNT,
    'data.class_names': Items(Text(nonempty=True), distinct=True),
    'data.num_segments': COUNT,
    'data.segment_seconds': POSITIVE,
    'data.use_duration': FLAG,
    'data.selection_fraction': real(0, below=1),
    'data.missing': OneOf(('error', 'skip')),
    'data.train.split_file': Text(nonempty=True),
    'data.train.feature_dir': Text(),
    'data.train.subset': Text(nonempty=True),
    'data.test.split_file': Text(nonempty=True),
    'data.test.feature_dir': Text(),
    'data.test.subset': Text(nonempty=True),
    'synthetic.enabled': FLAG,
    'synthetic.num_classes': COUNT,
    'synthetic.num_train': COUNT,
    'synthetic.num_test': COUNT,
    'synthetic.feature_dim': integer(4),
    'synthetic.min_segments': integer(5),   # room for two instances and a gap
    'synthetic.max_segments': integer(5),
    'synthetic.seed': integer(0, 2**63 - 1),
    'model.embed_dim': COUNT,
    'model.dropout_rate': FRACTION_BELOW_ONE,
    'model.r_act': COUNT,
    'model.r_bkg': COUNT,
    'model.selection_dropout': FRACTION_BELOW_ONE,
    'model.dtype': OneOf(('float32', 'bfloat16')),
    'loss.alpha': real(0),
    'loss.beta': real(0),
    'loss.margin': POSITIVE,
    'loss.cls_variant': OneOf(('release', 'paper')),
    'loss.be_variant': OneOf(('release', 'paper')),
    'loss.cls_scale': OneOf(('1', 'classes')),
    'optim.learning_rate': POSITIVE,
    'optim.lr_list': Items(POSITIVE),
    'optim.b1': FRACTION_BELOW_ONE,
    'optim.b2': FRACTION_BELOW_ONE,
    'optim.eps': POSITIVE,
    'optim.weight_decay': real(0),
    'train.batch_size': COUNT,
    'train.num_steps': COUNT,
    'train.num_devices': integer(0),
    'train.prefetch': COUNT,
    'train.prefetch_workers': COUNT,
    'train.data_on_device': OneOf(('auto', 'always', 'never')),
    'train.device_memory_fraction': real(above=0, high=1),
    'train.log_every_steps': COUNT,
    'train.init_from': Text(),
    'eval.every_steps': COUNT,
    'eval.tiou_thresholds': Items(real(above=0, high=1), nonempty=True, distinct=True),
    'eval.chunk_segments': COUNT,
    'eval.class_threshold': PROBABILITY,
    'checkpoint.every_steps': COUNT,
    'checkpoint.keep': COUNT,
    'checkpoint.select': OneOf(('selection', 'last', 'test')),
    'checkpoint.best_metric': OneOf(EVAL_METRICS),
    'checkpoint.best_mode': OneOf(('max', 'min')),
    'localize.theta_vid': PROBABILITY,
    'localize.upsample': COUNT,
    'localize.score_thresholds': Items(PROBABILITY, nonempty=True),
    'localize.magnitude_thresholds': Items(PROBABILITY, nonempty=True),
    'localize.min_run_length': COUNT,
    'localize.outer_ratio': real(0),
    'localize.p_act_weight': real(0),
    'localize.nms_iou': real(above=0, high=1),
    'localize.segment_frames': COUNT,
    'localize.fps': POSITIVE,
    'localize.use_duration': FLAG,
    'localize.families': Items(OneOf(('score', 'magnitude')), nonempty=True, distinct=True),
    'localize.fuse_magnitude': FLAG,
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


def _leaves(node, prefix: str = '') -> dict:
    """Dotted name -> value of every field below ``node`` (a ConfigDict or dict)."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            flat.update(_leaves(value, f'{prefix}{key}.'))
        else:
            flat[prefix + key] = value
    return flat


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def config_errors(cfg) -> list[str]:
    """Every way ``cfg`` breaks RULES and CONSTRAINTS, one phrase each (empty when valid)."""
    values = _leaves(cfg)
    invalid = [key for key, rule in RULES.items()
               if key in values and not rule.accepts(values[key])]
    missing = [key for key in RULES if key not in values]
    errors = [f'{key}={_shown(values[key])} (must be {RULES[key]})' for key in invalid]
    errors += [f'{key} is missing' for key in missing]
    errors += [f'{key} is not a known field' for key in values if key not in RULES]
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


def load_config(path: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` of the config file at ``path``, locks it, applies overrides."""
    if not os.path.isfile(path):
        raise UserError(f'{path}: config file not found')
    spec = importlib.util.spec_from_file_location('wtal_jax_user_config', path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a broken config file is the user's to fix: say where
        raise UserError(f'{path}: cannot load config: {type(e).__name__}: {e}') from e
    if not hasattr(module, 'get_config'):
        raise UserError(f'{path}: config file defines no get_config()')
    cfg = module.get_config()
    cfg.lock()
    apply_overrides(cfg, overrides, source=path)  # which validates the result, overrides or not
    return cfg


def _parse_range(text: str, key: str) -> tuple[float, ...]:
    """``START:STOP:STEP`` (STOP included) as floats, parsed as ``wtal-jax map`` parses it."""
    from wtal_jax.postprocess.evaluation import parse_tiou_thresholds  # NumPy only, no JAX
    try:
        return tuple(float(v) for v in parse_tiou_thresholds(text))
    except UserError as e:
        raise UserError(f'--config.{key}={text}: {e}') from None


def _parse_string_list(text: str, key: str) -> list[str]:
    """A comma list of strings, refused where the commas are ambiguous.

    ``Rock, paper, scissors,Knitting`` could be one class name or three; an item that starts with
    a space after a comma, or any quote, asks for the JSON form, which says it exactly.
    """
    items = text.split(',')
    if any(q in text for q in '"\'') or any(item.startswith(' ') for item in items[1:]):
        suggestion = json.dumps([item.strip().strip('"\'') for item in items if item.strip()])
        raise UserError(f'--config.{key}={text}: ambiguous comma list (a name may itself contain '
                        f"', ' or quotes); give a JSON list, e.g. --config.{key}='{suggestion}'")
    return [item for item in items if item.strip()]


def _json_list(text: str, key: str) -> list:
    """A JSON list of scalars (strings, numbers, booleans)."""
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError(text)
    for item in items:
        if not isinstance(item, (str, int, float, bool)):
            raise UserError(f'--config.{key}={text}: list items must be strings or numbers, '
                            f'got {json.dumps(item)}')
    return items


def _parse_value(text: str, current, key: str):
    """Parses ``text`` as the type of ``current`` (bool, int, float, str, tuple).

    Tuples take a JSON list (``["Rock, paper, scissors", "Knitting"]``), a comma list
    (``0.3,0.5,0.7``; refused for strings where ambiguous), or, for float tuples, a range
    ``START:STOP:STEP`` with STOP included (``0.5:0.95:0.05``).
    """
    try:
        if isinstance(current, bool):
            if text.lower() in ('1', 'true', 'yes'):
                return True
            if text.lower() in ('0', 'false', 'no'):
                return False
            raise ValueError(text)
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, (tuple, list)):
            element = current[0] if current else None  # an empty tuple gives no element type
            if text.strip().startswith('['):
                items = _json_list(text, key)
            elif isinstance(element, float) and ':' in text:
                return _parse_range(text, key)
            elif isinstance(element, (float, int)) and not isinstance(element, bool):
                items = [v for v in text.split(',') if v.strip()]
            else:
                items = _parse_string_list(text, key)
            if element is None:  # keep what JSON or the comma list says
                return tuple(items)
            if isinstance(element, str):
                for item in items:
                    if not isinstance(item, str):  # ["A", 1]: a number where names are expected
                        raise UserError(f'--config.{key}={text}: expected a list of strings, '
                                        f'got {json.dumps(item)}')
            return tuple(_parse_value(str(v), element, key) for v in items)
    except (ValueError, json.JSONDecodeError) as e:
        raise UserError(f'--config.{key}={text}: cannot parse as {type(current).__name__}') from e
    return text


def apply_overrides(cfg: ml_collections.ConfigDict, overrides, *, source: str = '') -> None:
    """Applies ``a.b=value`` strings (a leading ``--config.`` is accepted) in order."""
    for item in overrides:
        item = item.removeprefix('--').removeprefix('config.')
        if '=' not in item:
            raise UserError(f'override {item!r}: expected --config.KEY=VALUE')
        key, text = item.split('=', 1)
        *parents, leaf = key.split('.')
        node = cfg
        for name in parents:
            if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
                raise UserError(f'--config.{key}: no section {name!r} in {source or "config"}')
            node = node[name]
        if leaf not in node:
            raise UserError(f'--config.{key}: no such field in {source or "config"}')
        with node.ignore_type():
            node[leaf] = _parse_value(text, node[leaf], key)
    validate(cfg, source=source)


def to_dict(cfg: ml_collections.ConfigDict) -> dict:
    """A JSON-ready plain dict (tuples as lists) of the resolved config."""
    return json.loads(cfg.to_json())


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
    cfg = ml_collections.ConfigDict(fix(values))
    cfg.lock()
    validate(cfg, source=source)
    return cfg
