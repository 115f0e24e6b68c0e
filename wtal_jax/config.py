"""Configuration: the SPEC defaults, config files, and ``--config.a.b=value`` overrides.

A config file is a Python file with ``get_config() -> ml_collections.ConfigDict`` (see
``configs/``); variants start from :func:`default_config` and change only what differs. The
returned config is locked: a misspelt key is an error, not a silently ignored setting.
Overrides are parsed by the type of the field they replace (never ``eval``'d).
"""

import importlib.util
import json
import os

import ml_collections
import numpy as np

from wtal_jax.errors import UserError

THUMOS14_CLASSES = (
    'BaseballPitch', 'BasketballDunk', 'Billiards', 'CleanAndJerk', 'CliffDiving',
    'CricketBowling', 'CricketShot', 'Diving', 'FrisbeeCatch', 'GolfSwing', 'HammerThrow',
    'HighJump', 'JavelinThrow', 'LongJump', 'PoleVault', 'Shotput', 'SoccerPenalty',
    'TennisSwing', 'ThrowDiscus', 'VolleyballSpiking')


def _arange(start: float, stop: float, step: float) -> tuple[float, ...]:
    """The release builds its thresholds with np.arange; keep exactly those float values."""
    return tuple(float(v) for v in np.arange(start, stop, step))


def default_config() -> ml_collections.ConfigDict:
    """THUMOS'14 with the authors' release settings (SPEC §1-§6). Unlocked; callers lock it."""
    c = ml_collections.ConfigDict()
    c.seed = 0                        # one seed for init, dropout, data order and jitter

    c.data = d = ml_collections.ConfigDict()
    d.root = ''                       # dataset folder in the THUMOS'14 layout (SPEC §1)
    d.annotation_file = 'gt.json'     # relative to root
    d.modality = 'all'                # 'rgb' | 'flow' | 'all' ([rgb, flow] concatenated)
    d.feature_dim = 2048              # D after the modality choice (1024 per stream)
    d.class_names = THUMOS14_CLASSES  # () derives the sorted label set from the annotations
    d.num_segments = 750              # T, segments a video is sampled to
    d.segment_seconds = 16 / 25       # seconds per original segment (16 frames at 25 fps)
    d.use_duration = False            # True: seconds per segment = duration / n (ActivityNet)
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

    c.loss = l = ml_collections.ConfigDict()
    l.alpha = 5e-4                    # weight of L_um
    l.beta = 1.0                      # weight of L_be
    l.margin = 100.0                  # m, the maximum feature magnitude (Eq. 4, 7)
    l.cls_variant = 'release'         # 'release' (BCE) | 'paper' (Eq. 6)
    l.be_variant = 'release'          # 'release' (BCE to 1/C) | 'paper' (Eq. 8)

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
    t.prefetch_workers = 4            # host threads preparing batches (each ~50 ms at THUMOS size)
    t.log_every_steps = 10
    t.init_from = ''                  # run directory whose best parameters start training

    c.eval = e = ml_collections.ConfigDict()
    e.every_steps = 100               # the release evaluates after every step (1)
    e.split = 'test'                  # 'test' | 'train': which split is evaluated
    e.tiou_thresholds = _arange(0.1, 0.75, 0.1)
    e.chunk_segments = 8192           # segments per packed inference chunk (> T)
    e.class_threshold = 0.2           # theta for video accuracy

    c.checkpoint = k = ml_collections.ConfigDict()
    k.every_steps = 500
    k.keep = 2                        # most recent checkpoints kept
    k.best_metric = 'average_mAP'     # kept too: the best by this metric on eval.split
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
    apply_overrides(cfg, overrides, source=path)
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


def to_dict(cfg: ml_collections.ConfigDict) -> dict:
    """A JSON-ready plain dict (tuples as lists) of the resolved config."""
    return json.loads(cfg.to_json())


def from_dict(values: dict) -> ml_collections.ConfigDict:
    """Rebuilds a locked config saved by :func:`to_dict` (lists back to tuples)."""
    def fix(v):
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return tuple(fix(x) for x in v)
        return v
    cfg = ml_collections.ConfigDict(fix(values))
    cfg.lock()
    return cfg
