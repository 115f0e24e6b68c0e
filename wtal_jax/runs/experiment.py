"""Orchestration: data from a config, the training loop, evaluation and detection runs.

``train_and_evaluate`` is the one long function; everything it calls is testable on its own.
"""

import json
import math
import os
import sys
import time

import jax
import numpy as np

from wtal_jax.runs import checkpointing
from wtal_jax.data import dataset, pipeline
from wtal_jax.postprocess import evaluation, inference, localization
from wtal_jax import config as config_lib
from wtal_jax.data import synthetic
from wtal_jax.method import train
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic

METRICS_FILE = 'metrics.jsonl'


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


# ---------------------------------------------------------------------------------------------
# Data

def prepare_dataset(cfg, *, progress: bool = True) -> None:
    """Generates the synthetic data set into ``data.root`` when the config asks for it."""
    if cfg.synthetic.enabled:
        params = {k: v for k, v in cfg.synthetic.items() if k != 'enabled'}
        synthetic.ensure(cfg.data.root, progress=progress, **params)
    if not cfg.data.root:
        raise UserError('data.root is empty: pass --config.data.root=FOLDER')


def class_names(cfg) -> tuple[str, ...]:
    """The configured class list, or the sorted labels of the train and test subsets."""
    if cfg.data.class_names:
        return tuple(cfg.data.class_names)
    annotations = dataset.load_annotations(os.path.join(cfg.data.root, cfg.data.annotation_file))
    return dataset.class_names_from(annotations, (cfg.data.train.subset, cfg.data.test.subset), ())


def load_split(cfg, split: str, names: tuple[str, ...], *, progress: bool = True) -> dataset.Split:
    """Loads ``cfg.data.train`` or ``cfg.data.test`` into memory, validated."""
    part = cfg.data[split]
    return dataset.load_split(
        cfg.data.root, annotation_file=cfg.data.annotation_file, split_file=part.split_file,
        feature_dir=part.feature_dir, subset=part.subset, modality=cfg.data.modality,
        class_names=names, feature_dim=cfg.data.feature_dim,
        segment_seconds=cfg.data.segment_seconds, use_duration=cfg.data.use_duration,
        require_labels=split == 'train', progress=progress)


# ---------------------------------------------------------------------------------------------
# Evaluation

class Evaluator:
    """Scores, detections and metrics of one split for any parameters (SPEC §5, §6).

    Packs the split's test-sampled features once; each call runs the compiled forward pass,
    the NumPy localisation and the mAP evaluation.
    """

    def __init__(self, cfg, split: dataset.Split, model, *, split_name: str):
        self.cfg, self.split, self.split_name = cfg, split, split_name
        self.packed = inference.on_device(inference.pack(
            split.features, num_segments=cfg.data.num_segments,
            chunk_size=cfg.eval.chunk_segments))
        self.predictor = inference.Predictor(model, r_act=cfg.model.r_act,
                                             r_bkg=cfg.model.r_bkg)
        self.localize_cfg = localization.LocalizeConfig(**cfg.localize)
        gt_path = os.path.join(cfg.data.root, cfg.data.annotation_file)
        self.gt = evaluation.load_ground_truth(gt_path, cfg.data[split_name].subset)
        self.tious = np.asarray(cfg.eval.tiou_thresholds, np.float64)

    def scores(self, params) -> list[localization.VideoScores]:
        """Per-video network outputs, in split order."""
        return self.predictor(params, self.packed, num_segments=self.cfg.data.num_segments,
                              durations=self.split.durations)

    def __call__(self, params) -> tuple[dict, dict, list]:
        """Returns (metrics, ActivityNet results, per-video scores)."""
        scores = self.scores(params)
        results = localization.localize(dict(zip(self.split.names, scores)),
                                        self.split.class_names, self.localize_cfg)
        # mAP averages over the classes of the ground truth; a detection of a class that the
        # evaluated subset lacks cannot change any AP, and load_predictions rejects its label.
        known = set(self.gt.class_names)
        scored = dict(results, results={
            video: [d for d in dets if d['label'] in known]
            for video, dets in results['results'].items()})
        detection = evaluation.evaluate_detection(
            self.gt, evaluation.load_predictions(scored, self.gt), self.tious)
        p_act = np.stack([s.p_act for s in scores])
        metrics = {
            'average_mAP': float(detection.average_map),
            'mAP': [float(v) for v in detection.map],
            'tiou_thresholds': [float(t) for t in self.tious],
            'accuracy': float(evaluation.video_accuracy(
                p_act, self.split.labels, self.cfg.eval.class_threshold)),
            'classification_mAP': float(evaluation.classification_map(p_act, self.split.labels)),
        }
        return metrics, results, detection


# ---------------------------------------------------------------------------------------------
# Model and checkpoints

def build(cfg, names: tuple[str, ...]):
    """Model, optimiser, step hyper-parameters and a fresh train state for ``cfg``."""
    model = train.make_model(cfg, len(names))
    tx = train.make_optimizer(cfg.optim)
    state = train.create_train_state(model, tx, seed=cfg.seed, feature_dim=cfg.data.feature_dim,
                                     num_segments=cfg.data.num_segments)
    return model, tx, train.StepConfig.from_config(cfg), state


def checkpoint_meta(cfg, names, metrics: dict | None = None) -> dict:
    """What a checkpoint carries besides the state: enough to use it without the data."""
    return {'class_names': list(names), 'feature_dim': cfg.data.feature_dim,
            'embed_dim': cfg.model.embed_dim, 'metrics': metrics or {}}


def find_checkpoint(path: str, *, which: str = 'best'):
    """Resolves a run directory or a ``checkpoints/STEP`` folder to (workdir, step).

    ``which``: 'best' (by the config's metric, falling back to the latest) or 'latest'.
    """
    path = os.path.abspath(path)
    if os.path.basename(os.path.dirname(path)) == checkpointing.CHECKPOINT_DIR and \
            os.path.basename(path).isdigit():
        return os.path.dirname(os.path.dirname(path)), int(os.path.basename(path))
    cfg = checkpointing.read_config(path)
    manager = checkpointing.open_manager(path, read_only=True)
    step = None
    if which == 'best':
        step = checkpointing.best_step(
            manager, checkpointing.metric_key(cfg.eval.split, cfg.checkpoint.best_metric),
            cfg.checkpoint.best_mode)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise UserError(f'{path}: no checkpoint in {checkpointing.CHECKPOINT_DIR}/')
    return path, step


def load_checkpoint(path: str, *, which: str = 'best'):
    """(cfg, class names, model, state, step) of a run directory or checkpoint folder."""
    workdir, step = find_checkpoint(path, which=which)
    cfg = checkpointing.read_config(workdir)
    manager = checkpointing.open_manager(workdir, read_only=True)
    if step not in manager.all_steps():
        raise UserError(f'{workdir}: no checkpoint at step {step}')
    meta = manager.restore(step, args=checkpointing.ocp.args.Composite(
        meta=checkpointing.ocp.args.JsonRestore())).meta
    names = tuple(meta['class_names'])
    model = train.make_model(cfg, len(names))
    tx = train.make_optimizer(cfg.optim)
    abstract = jax.eval_shape(lambda: train.create_train_state(
        model, tx, seed=cfg.seed, feature_dim=cfg.data.feature_dim,
        num_segments=cfg.data.num_segments))
    state, _ = checkpointing.restore(manager, step, abstract)
    return cfg, names, model, state, step


# ---------------------------------------------------------------------------------------------
# Metrics file

def read_metrics(workdir: str) -> list[dict]:
    """All rows of ``metrics.jsonl`` (training and evaluation), in order."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _append_metrics(workdir: str, row: dict) -> None:
    with open(os.path.join(workdir, METRICS_FILE), 'a') as f:
        f.write(json.dumps(row) + '\n')


def _truncate_metrics(workdir: str, step: int) -> None:
    """On resume, drops rows written after the restored step (they will be written again)."""
    rows = [r for r in read_metrics(workdir) if r['step'] <= step]
    path = os.path.join(workdir, METRICS_FILE)
    if os.path.exists(path):
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            f.writelines(json.dumps(r) + '\n' for r in rows)
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Training

# Fields that may change between a run and its resumption: how long, how often, where from.
RESUMABLE_CHANGES = ('train.num_steps', 'train.log_every_steps', 'train.prefetch',
                     'train.prefetch_workers', 'train.num_devices', 'eval.every_steps',
                     'eval.chunk_segments', 'checkpoint.every_steps', 'data.root')


def _flatten(tree: dict, prefix: str = '') -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[prefix + key] = value
    return flat


def _check_same_run(workdir: str, cfg) -> None:
    """Refuses to resume a run under a config that would change what it trains."""
    saved = _flatten(config_lib.to_dict(checkpointing.read_config(workdir)))
    wanted = _flatten(config_lib.to_dict(cfg))
    changed = sorted(k for k in saved.keys() | wanted.keys()
                     if saved.get(k) != wanted.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        details = ', '.join(f'{k}: {saved.get(k)!r} -> {wanted.get(k)!r}' for k in changed[:4])
        raise UserError(f'{workdir} holds a run trained with another config ({details}); '
                        f'use a new --workdir to train this one')


def num_devices(requested: int) -> int:
    """Local devices to train on: ``requested``, or all of them for 0."""
    available = jax.local_device_count()
    if requested > available:
        raise UserError(f'train.num_devices={requested} but only {available} local devices')
    return requested or available


def _format_postfix(metrics: dict, rate: float, last_eval: float | None) -> str:
    text = (f"loss {metrics['loss']:.4f} cls {metrics['loss_cls']:.4f} "
            f"um {metrics['loss_um']:.1f} be {metrics['loss_be']:.4f} | {rate:.2f} steps/s")
    return text + ('' if last_eval is None else f' | mAP {100 * last_eval:.2f}')


def train_and_evaluate(cfg, workdir: str, *, progress: bool = True) -> dict:
    """Trains ``cfg`` in ``workdir`` (resuming from its latest checkpoint), evaluating on the way.

    Returns the last evaluation metrics.
    """
    from tqdm import tqdm

    prepare_dataset(cfg, progress=progress)
    # Saved absolute, so that the run can be evaluated or plotted from any directory.
    cfg.data.root = os.path.abspath(cfg.data.root)
    names = class_names(cfg)
    train_split = load_split(cfg, 'train', names, progress=progress)
    eval_split = load_split(cfg, cfg.eval.split, names, progress=progress)
    for split_name, split in (('train', train_split), (cfg.eval.split, eval_split)):
        if split.num_clipped:
            print(f'note: {split.num_clipped} annotations of the {split_name} split end after '
                  f'their video and were clipped', file=sys.stderr)
    model, tx, hp, state = build(cfg, names)
    devices = num_devices(cfg.train.num_devices)
    if cfg.train.batch_size % devices:
        raise UserError(f'batch size {cfg.train.batch_size} does not divide {devices} devices')

    os.makedirs(workdir, exist_ok=True)
    best_key = checkpointing.metric_key(cfg.eval.split, cfg.checkpoint.best_metric)
    manager = checkpointing.open_manager(workdir, keep=cfg.checkpoint.keep,
                                         best_metric=best_key, best_mode=cfg.checkpoint.best_mode)
    start = manager.latest_step()
    if start is not None:
        _check_same_run(workdir, cfg)
        state, _ = checkpointing.restore(manager, start, checkpointing.abstract_like(state))
        _truncate_metrics(workdir, start)
        print(f'resuming from step {start} in {workdir}', file=sys.stderr)
    else:
        start = 0
        if cfg.train.init_from:
            _, init_names, _, init_state, init_step = load_checkpoint(cfg.train.init_from)
            if init_names != names:
                raise UserError(f'{cfg.train.init_from}: classes differ from the data set')
            found, wanted = (jax.tree.map(np.shape, p) for p in (init_state.params, state.params))
            if found != wanted:
                raise UserError(f'{cfg.train.init_from}: parameter shapes {found} do not fit '
                                f'this config ({wanted}): check data.feature_dim and '
                                f'model.embed_dim')
            state = state.replace(params=init_state.params, opt_state=tx.init(init_state.params))
            print(f'initialised from {cfg.train.init_from} (step {init_step})', file=sys.stderr)
    checkpointing.write_config(workdir, cfg)

    evaluator = Evaluator(cfg, eval_split, model, split_name=cfg.eval.split)
    batches = pipeline.TrainBatches(
        train_split.features, train_split.labels, num_segments=cfg.data.num_segments,
        batch_size=cfg.train.batch_size, seed=cfg.seed)
    step_fn = train.compile_train_step(model, tx, hp, devices)

    def last_good() -> str:
        latest = manager.latest_step()
        return f'step {latest} in {workdir}' if latest is not None else 'none'

    def evaluate_and_save(step: int, with_eval: bool) -> dict | None:
        # The loss of a step is computed before its update: an update that overflowed shows
        # only in the parameters, and must not be saved as a good checkpoint.
        if not all(bool(jax.numpy.isfinite(x).all()) for x in jax.tree.leaves(state.params)):
            raise TrainingDiverged(f'non-finite parameters after step {step}; last good '
                                   f'checkpoint: {last_good()}')
        metrics = None
        if with_eval:
            metrics, _, _ = evaluator(state.params)
            _append_metrics(workdir, {'step': step, 'split': cfg.eval.split, **metrics})
        scalars = None if metrics is None else {
            checkpointing.metric_key(cfg.eval.split, k): v for k, v in metrics.items()
            if isinstance(v, float)}
        checkpointing.save(manager, step, state, checkpoint_meta(cfg, names, scalars), scalars)
        return metrics

    last_eval, window, window_start = None, [], time.perf_counter()
    shown = {'metrics': None, 'rate': 0.0}
    bar = tqdm(total=cfg.train.num_steps, initial=start, disable=not progress, unit='step',
               dynamic_ncols=True)
    stream = pipeline.prefetch(
        lambda s: train.shard_batch(batches.batch(s), devices), start, cfg.train.num_steps,
        buffer_size=cfg.train.prefetch, num_workers=cfg.train.prefetch_workers)
    try:
        for step_index, batch in stream:
            state, metrics = step_fn(state, batch)
            step = step_index + 1
            values = train.host_metrics(metrics)
            if not all(math.isfinite(v) for v in values.values()):
                raise TrainingDiverged(
                    f'non-finite loss at step {step} ({values}); last good checkpoint: '
                    f'{last_good()}')
            window.append(values)
            if step % cfg.train.log_every_steps == 0 or step == cfg.train.num_steps:
                mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                rate = len(window) / (time.perf_counter() - window_start)
                _append_metrics(workdir, {'step': step, 'split': 'train', **mean,
                                          'steps_per_second': rate})
                shown = {'metrics': mean, 'rate': rate}
                window = []
            if step % cfg.eval.every_steps == 0 or step == cfg.train.num_steps:
                last_eval = evaluate_and_save(step, True)['average_mAP']
            elif step % cfg.checkpoint.every_steps == 0:
                evaluate_and_save(step, False)
            if not window:  # a log step: restart the rate window after any evaluation
                window_start = time.perf_counter()
            if shown['metrics']:
                bar.set_postfix_str(_format_postfix(shown['metrics'], shown['rate'], last_eval),
                                    refresh=False)
            bar.update(1)
    finally:
        stream.close()
        bar.close()
        manager.wait_until_finished()
    evaluations = [r for r in read_metrics(workdir) if r['split'] == cfg.eval.split]
    return evaluations[-1] if evaluations else {}


# ---------------------------------------------------------------------------------------------
# Detection on unannotated videos

def _video_name(spec: str) -> str:
    return os.path.splitext(os.path.basename(spec.split(',')[0]))[0]


def detect(checkpoint: str, feature_specs: list[str], *, overrides=(), output: str,
           which: str = 'best') -> dict:
    """Detections for feature files of videos with no annotations; writes a results JSON.

    Each spec is one ``.npy`` of shape (n, D), or ``RGB.npy,FLOW.npy`` concatenated along the
    features. The video id is the (first) file name without ``.npy``.
    """
    from wtal_jax import config as config_lib
    cfg, names, model, state, _ = load_checkpoint(checkpoint, which=which)
    config_lib.apply_overrides(cfg, overrides)
    videos = [_video_name(spec) for spec in feature_specs]
    seen = {v for v in videos if videos.count(v) > 1}
    if seen:
        raise UserError(f'the same video id comes from several files: {sorted(seen)[:5]}')
    features = [dataset.load_feature_files(spec.split(','), feature_dim=cfg.data.feature_dim)
                for spec in feature_specs]
    packed = inference.pack(features, num_segments=cfg.data.num_segments,
                            chunk_size=cfg.eval.chunk_segments)
    predictor = inference.Predictor(model, r_act=cfg.model.r_act, r_bkg=cfg.model.r_bkg)
    scores = predictor(state.params, packed, num_segments=cfg.data.num_segments)
    results = localization.localize(dict(zip(videos, scores)), names,
                                    localization.LocalizeConfig(**cfg.localize))
    write_json_atomic(output, results)
    return results
