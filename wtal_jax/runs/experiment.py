"""What a config means: its data splits, its model, its evaluations, and loading a checkpoint.

The training loop (``loop.py``), ``evaluate``, ``detect``, the figures and the notebooks build
everything from a config through these functions, so they all read the data and restore models
the same way.
"""

import dataclasses
import os
import sys
from typing import NamedTuple

import jax
import numpy as np

from wtal_jax import config as config_lib
from wtal_jax.data import annotations, dataset, holdout, synthetic
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic
from wtal_jax.method import train
from wtal_jax.postprocess import evaluation, inference, localization, report
from wtal_jax.runs import checkpointing
from wtal_jax.runs.rundir import RunDir, best_key, warn

SELECTION = 'selection'   # the name of the held-out part of the training videos


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
    found = annotations.load_annotations(os.path.join(cfg.data.root, cfg.data.annotation_file))
    return annotations.class_names_from(found, (cfg.data.train.subset, cfg.data.test.subset), ())


def split_names(cfg) -> tuple[str, ...]:
    """The names ``evaluate --split`` accepts: the test subset, the selection split, train."""
    return (cfg.data.test.subset, SELECTION, cfg.data.train.subset)


def load_split(cfg, name: str, names: tuple[str, ...], *, progress: bool = True
               ) -> dataset.Split:
    """Loads a split by name (see :func:`split_names`) into memory, validated.

    The training subset's name gives its training part (without the selection videos), and
    ``selection`` the held-out part.
    """
    if name not in split_names(cfg):
        raise UserError(f'no split {name!r}: one of {", ".join(split_names(cfg))}')
    if name == cfg.data.test.subset:
        return _load(cfg, cfg.data.test, names, progress=progress)
    training, selection = load_training(cfg, names, progress=progress)
    if name == SELECTION and not len(selection):
        raise UserError(f'no selection split: checkpoint.select={cfg.checkpoint.select}, '
                        f'data.selection_fraction={cfg.data.selection_fraction:g} hold out no '
                        'training video')
    return selection if name == SELECTION else training


def load_training(cfg, names: tuple[str, ...], *, progress: bool = True
                  ) -> tuple[dataset.Split, dataset.Split]:
    """(training part, selection part) of the training split, read once.

    Videos are held out only where they select the checkpoint (``checkpoint.select=selection``):
    under 'last' or 'test' every training video trains, as in the release.
    """
    split = _load(cfg, cfg.data.train, names, progress=progress)
    fraction = cfg.data.selection_fraction if cfg.checkpoint.select == 'selection' else 0.0
    return holdout.holdout(split, fraction)


def _load(cfg, part, names, *, progress: bool) -> dataset.Split:
    return dataset.load_split(
        cfg.data.root, annotation_file=cfg.data.annotation_file, split_file=part.split_file,
        feature_dir=part.feature_dir, subset=part.subset, modality=cfg.data.modality,
        class_names=names, feature_dim=cfg.data.feature_dim,
        segment_seconds=cfg.data.segment_seconds, use_duration=cfg.data.use_duration,
        require_labels=part is cfg.data.train, missing=cfg.data.missing, progress=progress)


def data_fingerprint(split: dataset.Split) -> dict:
    """What identifies the training data without reading it again: ids and lengths, in order.

    A moved data folder keeps it; other videos, other lengths or another order change it.
    """
    import hashlib
    text = '\n'.join(f'{n} {int(s)}' for n, s in zip(split.names, split.num_segments))
    return {'videos': len(split), 'feature_dim': split.feature_dim,
            'sha256': hashlib.sha256(text.encode('utf-8')).hexdigest()}


# ---------------------------------------------------------------------------------------------
# Model

def run_seeds(cfg) -> tuple[int, ...]:
    """The seeds a run trains: ``seeds``, or the single ``seed``."""
    return tuple(int(s) for s in cfg.seeds) or (int(cfg.seed),)


class Built(NamedTuple):
    """The trainable pieces of a config: network, optimiser, step hyper-parameters, and the
    initial train state of every seed, stacked (leading seed axis)."""
    model: object
    tx: object
    hp: train.StepConfig
    state: train.TrainState


def build(cfg, names: tuple[str, ...]) -> Built:
    """Model, optimiser, step hyper-parameters and a fresh stacked train state for ``cfg``."""
    model = train.make_model(cfg, len(names))
    tx = train.make_optimizer(cfg.optim)
    states = [train.create_train_state(model, tx, seed=seed, feature_dim=cfg.data.feature_dim,
                                       num_segments=cfg.data.num_segments)
              for seed in run_seeds(cfg)]
    return Built(model, tx, train.StepConfig.from_config(cfg, len(names)),
                 train.stack_states(states))


def saved_state(state: train.TrainState, sums: dict | None = None) -> dict:
    """What a checkpoint holds: the stacked train state and the running metric sums of the
    training log's current window (zero at a log step), so a resumed run logs the same rows."""
    num_seeds = jax.tree.leaves(state)[0].shape[0]
    return {'train': state, 'sums': train.zero_metrics(num_seeds) if sums is None else sums}


def abstract_state(cfg, names, sharding=None):
    """The shape of a checkpoint of ``cfg`` (see :func:`saved_state`), to restore into."""
    return checkpointing.abstract_like(
        jax.eval_shape(lambda: saved_state(build(cfg, names).state)), sharding)


def save_checkpoint(run: RunDir, step: int, state: dict, cfg, names, *,
                    fingerprint: dict | None = None, metrics: dict | None = None,
                    extra: dict | None = None) -> bool:
    """Checksums ``state`` (a :func:`saved_state`) and starts saving it at ``step``.

    Returns False, saving nothing, when a value is not finite: a diverged state is never saved
    as a good checkpoint.
    """
    sums, finite = checkpointing.checksums(state)
    if not finite:
        return False
    meta = checkpoint_meta(cfg, names, fingerprint=fingerprint, metrics=metrics)
    run.save(step, state, dict(meta, **(extra or {}), checksums=sums), metrics)
    return True


# ---------------------------------------------------------------------------------------------
# Evaluation

class Evaluator:
    """Scores, detections and metrics of one split for any parameters (SPEC §5, §6).

    Packs the split's test-sampled features once (on the first local device); each call runs the
    compiled forward pass, the NumPy localisation and the mAP evaluation. The ground truth of the
    test split is the annotation file's whole subset, so a video without features or predictions
    counts its instances as missed (the official convention); the selection split and the
    training part of the training subset are evaluated on their own videos' ground truth.
    """

    def __init__(self, cfg, split: dataset.Split, model, *, split_name: str):
        self.packed = inference.on_device(inference.pack(
            split.features, num_segments=cfg.data.num_segments,
            chunk_size=cfg.eval.chunk_segments))
        # The packed copy is all that is needed from here on: do not hold the features twice.
        self.cfg, self.split_name = cfg, split_name
        self.split = dataclasses.replace(split, features=[])
        self.predictor = inference.Predictor(model, r_act=cfg.model.r_act,
                                             r_bkg=cfg.model.r_bkg)
        self.localize_cfg = localization.LocalizeConfig(**cfg.localize)
        part = cfg.data.test if split_name == cfg.data.test.subset else cfg.data.train
        gt = evaluation.load_ground_truth(os.path.join(cfg.data.root, cfg.data.annotation_file),
                                          part.subset)
        self.gt = gt if part is cfg.data.test else evaluation.restrict_ground_truth(
            gt, split.names + split.missing)
        self.tious = np.asarray(cfg.eval.tiou_thresholds, np.float64)

    def scores(self, params) -> list[localization.VideoScores]:
        """Per-video network outputs, in split order."""
        return self.predictor(params, self.packed, num_segments=self.cfg.data.num_segments,
                              durations=self.split.durations)

    def __call__(self, params, *, protocol: str = 'seconds', ambiguous=None
                 ) -> tuple[dict, dict, evaluation.DetectionResult, dict]:
        """Returns (metrics, ActivityNet results, DetectionResult, report) for one model.

        ``metrics`` are the compact figures a training log keeps (mAP per threshold, their
        average, the protocol report's other averages, video accuracy, classification mAP);
        ``report`` is everything of :func:`wtal_jax.postprocess.report.evaluate`.
        """
        scores = self.scores(params)
        results = localization.localize(dict(zip(self.split.names, scores)),
                                        self.split.class_names, self.localize_cfg)
        # mAP averages over the classes of the ground truth; a detection of a class that the
        # evaluated videos lack cannot change any AP, and load_predictions rejects its label.
        known = set(self.gt.class_names)
        scored = dict(results, results={
            video: [d for d in dets if d['label'] in known]
            for video, dets in results['results'].items()})
        p_act = np.stack([s.p_act for s in scores])
        figures, detection = report.evaluate(
            self.gt, evaluation.load_predictions(scored, self.gt), tiou_thresholds=self.tious,
            protocol=protocol, ambiguous=ambiguous,
            video_scores=report.VideoLevelScores(self.split.names, self.split.class_names, p_act),
            accuracy_threshold=self.cfg.eval.class_threshold)
        metrics = {
            'average_mAP': float(detection.average_map),
            'mAP': [float(v) for v in detection.map],
            'tiou_thresholds': [float(t) for t in self.tious],
            'averages': figures['averages'],
            'accuracy': float(figures['video_accuracy']),
            'classification_mAP': float(figures['classification_mAP']),
        }
        return metrics, results, detection, figures


def local_params(params, seed_index: int):
    """One seed's parameters as arrays on the first local device (from a stacked state that
    may be spread over the devices of several processes)."""
    def local(x):
        x = x.addressable_data(0) if isinstance(x, jax.Array) else x
        return x[seed_index]
    return jax.tree.map(local, params)


# ---------------------------------------------------------------------------------------------
# Checkpoints

def checkpoint_meta(cfg, names, *, fingerprint: dict | None = None,
                    metrics: dict | None = None) -> dict:
    """What a checkpoint carries besides the state: enough to use it without the data."""
    return {'class_names': list(names), 'feature_dim': cfg.data.feature_dim,
            'embed_dim': cfg.model.embed_dim, 'seeds': list(run_seeds(cfg)),
            'data': fingerprint or {}, 'metrics': metrics or {}}


class Checkpoint(NamedTuple):
    """A restored checkpoint: its run's config, classes, network, one seed's state, step."""
    cfg: object
    names: tuple[str, ...]
    model: object
    state: train.TrainState
    step: int
    workdir: str
    seed: int


def resolve(path: str) -> tuple[str, int | None]:
    """A run directory or a ``RUN/checkpoints/STEP`` folder -> (run directory, step or None)."""
    path = os.path.abspath(path)
    if os.path.basename(os.path.dirname(path)) == checkpointing.CHECKPOINT_DIR and \
            os.path.basename(path).isdigit():
        return os.path.dirname(os.path.dirname(path)), int(os.path.basename(path))
    return path, None


def _seed_index(cfg, seed: int | None, workdir: str) -> int:
    seeds = run_seeds(cfg)
    if seed is None:
        if len(seeds) > 1:
            raise UserError(f'{workdir} holds {len(seeds)} seeds ({", ".join(map(str, seeds))})'
                            ': choose one with --seed')
        return 0
    if seed not in seeds:
        raise UserError(f'{workdir} has no seed {seed} (it holds {", ".join(map(str, seeds))})')
    return seeds.index(seed)


def load_checkpoint(path: str, *, which: str = 'best', seed: int | None = None,
                    overrides=()) -> Checkpoint:
    """Restores one seed of a run directory's best or latest checkpoint (or a given step).

    'best' is the step chosen by the run's ``checkpoint.select`` rule for that seed ('last'
    runs: the latest). A damaged step is skipped with a warning, falling back to the newest
    intact one. ``overrides``: ``KEY=VALUE`` applied to the saved config (e.g. a moved
    ``data.root``).
    """
    workdir, step = resolve(path)
    with RunDir(workdir) as run:
        cfg = run.read_config()
        config_lib.apply_overrides(cfg, overrides, source=run.config_path)
        index = _seed_index(cfg, seed, workdir)
        saved = sorted(run.steps(), reverse=True)
        if not saved:
            raise UserError(f'{workdir}: no checkpoint in {checkpointing.CHECKPOINT_DIR}/')
        candidates = None if step is None else [step]
        key = best_key(cfg)
        if step is None and which == 'best' and key:
            best = run.best_step(key, cfg.checkpoint.best_mode, index)
            if best is not None:
                candidates = [best] + [s for s in saved if s != best]
        if step is not None and step not in saved:
            raise UserError(f'{workdir}: no checkpoint at step {step} (saved: '
                            f'{", ".join(map(str, sorted(saved)))})')
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        state, meta, found = run.restore(
            lambda meta: abstract_state(cfg, tuple(meta['class_names']), device),
            candidates=candidates)
    names = tuple(meta['class_names'])
    model = train.make_model(cfg, len(names))
    return Checkpoint(cfg, names, model, train.unstack_state(state['train'], index), found,
                      workdir, run_seeds(cfg)[index])


# ---------------------------------------------------------------------------------------------
# Detection on unannotated videos

def _video_name(spec: str) -> str:
    return os.path.splitext(os.path.basename(spec.split(',')[0]))[0]


def _duration_entry(path: str, video: str, value: object) -> float:
    """Seconds of one entry of a durations file: a number (or numeric string) or an object with
    a "duration", as THUMOS'14's durations.json has."""
    if isinstance(value, dict):
        if 'duration' not in value:
            raise UserError(f'{path}: video {video}: an object without "duration"; expected '
                            'VIDEO: SECONDS or VIDEO: {"duration": SECONDS}')
        value = value['duration']
    duration = annotations.seconds(value, f'{path}: video {video}: duration')
    if duration <= 0:
        raise UserError(f'{path}: video {video}: duration {duration} s is not positive')
    return duration


def read_durations(path: str) -> dict[str, float]:
    """Video id -> seconds, from a JSON of ``{VIDEO: SECONDS}`` or ``{VIDEO: {"duration":
    SECONDS, ...}}``, or from an annotation file (``{"database": ...}``, e.g. the official
    ActivityNet JSON), whose videos without a duration are left out."""
    raw = annotations.read_json(path)
    if not isinstance(raw, dict):
        raise UserError(f'{path}: expected a JSON object of video -> seconds or an annotation '
                        f'file, found a {type(raw).__name__}')
    if 'database' in raw:
        return {video: entry.duration for video, entry in
                annotations.load_annotations(path).items() if entry.duration is not None}
    return {str(video): _duration_entry(path, str(video), value) for video, value in raw.items()}


def match_durations(videos: list[str], durations: dict[str, float], source: str
                    ) -> tuple[list[str], np.ndarray]:
    """Each video's id and duration (seconds, (V,) float64) from ``durations``.

    A video found only without the ``v_`` prefix of feature releases (``v_ID.npy`` against the
    official JSON's ``ID``) takes the bare id, so its detections match the annotation file.
    """
    ids, missing = [], []
    for video in videos:
        bare = video[2:] if video.startswith('v_') else video
        ids.append(video if video in durations or bare not in durations else bare)
        if ids[-1] not in durations:
            missing.append(video)
    if missing:
        raise UserError(f'{source}: no duration for {len(missing)} of {len(videos)} videos '
                        f'(e.g. {", ".join(missing[:3])})')
    return ids, np.array([durations[v] for v in ids], np.float64)


def detect(checkpoint: str, feature_specs: list[str], *, overrides=(), output: str,
           which: str = 'best', seed: int | None = None,
           durations: str | None = None) -> dict:
    """Detections for feature files of videos with no annotations; writes a results JSON.

    Each spec is one ``.npy`` of shape (n, D), or ``RGB.npy,FLOW.npy`` concatenated along the
    features. The video id is the (first) file name without ``.npy`` (without a ``v_`` prefix
    where only the bare id has a duration). ``durations``: a file for :func:`read_durations`,
    needed by checkpoints that place detections by duration (``localize.use_duration``, the
    ActivityNet configs) and unused by the others (a warning says so).
    """
    ckpt = load_checkpoint(checkpoint, which=which, seed=seed, overrides=overrides)
    cfg = ckpt.cfg
    videos = [_video_name(spec) for spec in feature_specs]
    seconds = None
    if cfg.localize.use_duration:
        if durations is None:
            raise UserError(f'{ckpt.workdir} places detections by video duration '
                            '(localize.use_duration): give --durations FILE, a JSON of video -> '
                            'seconds or the annotation file (e.g. activity_net.v1-3.min.json)')
        videos, seconds = match_durations(videos, read_durations(durations), durations)
    elif durations is not None:
        warn(f'--durations {durations} is unused: {ckpt.workdir} places detections on the '
             'segment grid (localize.use_duration is False)')
    seen = {v for v in videos if videos.count(v) > 1}
    if seen:
        raise UserError(f'the same video id comes from several files: {sorted(seen)[:5]}')
    features = [dataset.load_feature_files(spec.split(','), feature_dim=cfg.data.feature_dim)
                for spec in feature_specs]
    packed = inference.pack(features, num_segments=cfg.data.num_segments,
                            chunk_size=cfg.eval.chunk_segments)
    predictor = inference.Predictor(ckpt.model, r_act=cfg.model.r_act, r_bkg=cfg.model.r_bkg)
    scores = predictor(ckpt.state.params, packed, num_segments=cfg.data.num_segments,
                       durations=seconds)
    results = localization.localize(dict(zip(videos, scores)), ckpt.names,
                                    localization.LocalizeConfig(**cfg.localize))
    write_json_atomic(output, results)
    return results
