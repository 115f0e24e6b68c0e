"""Figures of a run: feature magnitudes, one video's timeline, training curves (``[viz]`` extra).

Three figures, each a function returning a matplotlib ``Figure``:

* :func:`magnitude_figure`: histograms of the feature magnitude ``||f_t||`` of action and
  background segments of the test split (inside / outside ground-truth instances), before
  training (fresh init with the run's seed) and after (the run's checkpoint) -- the paper's Fig. 2.
* :func:`timeline_figure`: for one video and one class, the fused score, the normalised
  magnitude, the proposals and detections, and the ground truth, one above the other on a time
  axis in seconds -- the paper's Fig. 4.
* :func:`curves_figure`: the three losses and the evaluation mAPs of ``metrics.jsonl``.

Figures are built on the Agg canvas directly (no ``pyplot``), so they leave matplotlib's global
state alone: a notebook keeps its inline backend and displays them as it displays any figure.
``wtal-jax plot --workdir RUN`` writes the three as PNG files.

The data the figures draw from comes from :func:`load_run`, which loads a run directory (or a
``checkpoints/STEP`` folder, or a converted checkpoint) with its test split once.
"""

import dataclasses
import os
import re
import sys

import numpy as np

from wtal_jax.data import dataset, sampling
from wtal_jax.postprocess import localization
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_atomic

# ``rundir`` and the evaluator (and with them JAX) is imported inside the functions that need it, so that the
# figure functions work on metrics files and arrays without JAX.

_COLORS = {'action': '#d62728', 'background': '#1f77b4', 'score': '#d62728',
           'softmax': '#7f7f7f', 'magnitude': '#2ca02c', 'proposal': '#c7c7c7',
           'detection': '#ff7f0e', 'gt': '#2ca02c', 'gt_other': '#bdbdbd'}
_OUTSIDE = dict(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize='small')  # keeps data visible
_LOSSES = (('loss_cls', 'L_cls (classification)'), ('loss_um', 'L_um (uncertainty modelling)'),
           ('loss_be', 'L_be (background entropy)'))


# ---------------------------------------------------------------------------------------------
# matplotlib


def require_matplotlib():
    """Imports matplotlib, or says how to install it (one line, as every UserError)."""
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401
    except ImportError:
        raise UserError('figures need matplotlib: pip install -e .[viz]') from None
    return matplotlib


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize=(8.0, 4.0), **subplot_kw):
    """A Figure on the Agg canvas and its axes (``squeeze=False``: always a 2-D array)."""
    matplotlib = require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = matplotlib.figure.Figure(figsize=figsize, layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def save_png(fig, path: str, *, dpi: int = 110) -> str:
    """Writes ``fig`` to ``path`` as PNG through the atomic writer; returns ``path``."""
    write_atomic(path, lambda f: fig.savefig(f, format='png', dpi=dpi), binary=True)
    return path


# ---------------------------------------------------------------------------------------------
# A run and its test split


@dataclasses.dataclass
class RunView:
    """A checkpoint with the split it is evaluated on: what the figures draw from.

    Attributes:
      workdir: the run directory.
      cfg: its config (with any overrides applied).
      names: class names, in label-column order.
      model, state, step: the network, the restored train state and its step.
      split: the evaluated split (the test subset), without its features (packed in the
        evaluator).
      seed: which seed of the run.
      evaluator: :class:`wtal_jax.postprocess.evaluator.Evaluator` of that split.
    """
    workdir: str
    cfg: object
    names: tuple[str, ...]
    model: object
    state: object
    step: int
    split: dataset.Split
    evaluator: object  # wtal_jax.postprocess.evaluator.Evaluator
    seed: int = 0
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def params(self):
        """The checkpoint's parameters."""
        return self.state.params

    def initial_params(self):
        """Parameters of a fresh init with the run's seed: the network before training."""
        from wtal_jax import config as config_lib
        if 'init' not in self._cache:
            from wtal_jax import training
            seeds = config_lib.run_seeds(self.cfg)
            state = training.build(self.cfg, self.names).state
            self._cache['init'] = training.unstack_state(state, seeds.index(self.seed)).params
        return self._cache['init']

    def outputs(self, params=None) -> list[localization.VideoOutput]:
        """Per-video network outputs in split order; the checkpoint's when ``params`` is None."""
        if params is not None:
            return self.evaluator.outputs(params)
        if 'outputs' not in self._cache:
            self._cache['outputs'] = self.evaluator.outputs(self.params)
        return self._cache['outputs']

    def scores(self, params=None) -> list[localization.VideoScores]:
        """Per-video scores for localisation in split order (the method's ``scores``)."""
        return [self.evaluator.method.scores(out, hp=self.evaluator.hp)
                for out in self.outputs(params)]

    def evaluate(self):
        """(metrics, ActivityNet results, DetectionResult, report) of the checkpoint, computed once
        (see :meth:`wtal_jax.postprocess.evaluator.Evaluator.__call__`)."""
        if 'evaluation' not in self._cache:
            self._cache['evaluation'] = self.evaluator(self.params)
        return self._cache['evaluation']

    def video_index(self, video: str | None = None) -> int:
        """Index of ``video`` in the split; by default the first video with ground truth."""
        if video is None:
            for i, gt in enumerate(self.split.gt):
                if len(gt.classes):
                    return i
            raise UserError(f'{self.workdir}: no {self.split_name} video has ground truth')
        if video not in self.split.names:
            raise UserError(f'video {video!r} is not in the {self.split_name} split '
                            f'({len(self.split)} videos, e.g. {self.split.names[0]})')
        return self.split.names.index(video)

    @property
    def split_name(self) -> str:
        return self.evaluator.split_name

    @property
    def localize_config(self) -> localization.LocalizeConfig:
        return self.evaluator.localize_cfg


def load_run(path: str, *, which: str = 'best', seed: int | None = None, overrides=(),
             progress: bool = False) -> RunView:
    """Loads a run directory (or ``RUN/checkpoints/STEP``) and its evaluation split.

    ``which``: 'best' or 'latest' checkpoint. ``overrides``: ``KEY=VALUE`` strings applied to the
    saved config, e.g. ``data.root=/data/thumos14`` where the run was trained elsewhere (a
    relative ``data.root`` is relative to the current directory).
    """
    from wtal_jax.data import splits
    from wtal_jax.postprocess.evaluator import Evaluator
    from wtal_jax.runs import rundir
    ckpt = rundir.load_checkpoint(path, which=which, seed=seed, overrides=overrides)
    cfg = ckpt.cfg
    splits.prepare_dataset(cfg, progress=progress)
    split_name = cfg.data.test.subset
    split = splits.load_split(cfg, split_name, ckpt.names, progress=progress)
    evaluator = Evaluator(cfg, split, ckpt.model, split_name=split_name)
    return RunView(workdir=ckpt.workdir, cfg=cfg, names=ckpt.names, model=ckpt.model,
                   state=ckpt.state, step=ckpt.step, split=evaluator.split, evaluator=evaluator,
                   seed=ckpt.seed)


# ---------------------------------------------------------------------------------------------
# Figure 1: feature magnitudes of action and background segments (paper Fig. 2)


def action_mask(gt: dataset.GroundTruth, num_segments: int, num_sampled: int,
                segment_seconds: float, *, fixed: bool = False) -> np.ndarray:
    """Which test-sampled segments lie inside a ground-truth instance (any class).

    Sampled segment i is original segment ``j = sampling.test_indices(n, T)[i]``, spanning
    ``[j, j + 1) * segment_seconds``; it is an action segment when its centre lies in an instance.

    Returns:
      (num_sampled,) bool.
    """
    index = sampling.test_indices(num_segments, max(num_sampled, 1), fixed=fixed)[:num_sampled]
    centre = (index + 0.5) * segment_seconds
    seg = np.asarray(gt.segments, np.float64).reshape(-1, 2)
    return np.any((centre[:, None] >= seg[None, :, 0]) & (centre[:, None] <= seg[None, :, 1]),
                  axis=1)


def _segment_seconds(cfg, split: dataset.Split, v: int) -> float:
    """Seconds per original segment of video ``v``, as ``data.load_split`` clips by."""
    if cfg.data.use_duration and np.isfinite(split.durations[v]):
        return float(split.durations[v]) / int(split.num_segments[v])
    return float(cfg.data.segment_frames / cfg.data.fps)


def segment_magnitudes(run: RunView, params=None) -> tuple[np.ndarray, np.ndarray]:
    """Feature magnitudes of all action and all background segments of the split.

    Returns:
      (action, background): 1-D float64 arrays, concatenated over videos.
    """
    action, background = [], []
    for v, out in enumerate(run.outputs(params)):
        if 'magnitudes' not in out.outputs:
            raise UserError(f'{run.workdir}: method {run.cfg.method} gives no feature magnitudes')
        magnitudes = np.asarray(out.outputs['magnitudes'])[:out.length]
        mask = action_mask(run.split.gt[v], int(run.split.num_segments[v]),
                           out.length, _segment_seconds(run.cfg, run.split, v),
                           fixed=run.cfg.data.test_sampling == 'fixed')
        action.append(magnitudes[mask])
        background.append(magnitudes[~mask])
    return (np.concatenate(action).astype(np.float64),
            np.concatenate(background).astype(np.float64))


def plot_magnitude_histograms(panels: dict, *, margin: float | None = None, bins: int = 40,
                              sharex: bool = False):
    """Histograms of action and background magnitudes, one panel per entry of ``panels``.

    Args:
      panels: title -> (action magnitudes, background magnitudes), 1-D arrays.
      margin: the loss margin m, drawn as a dashed line where it is inside a panel's range.
      sharex: one magnitude axis (and bins) for all panels, to compare scales; else each panel
        spans its own values.
    Returns:
      Figure with one axes per panel, each with two histograms (density) and a legend.
    """
    fig, axes = new_figure(1, len(panels), figsize=(5.0 * len(panels), 3.6),
                           sharex=sharex)
    ranges = {title: np.concatenate(pair) for title, pair in panels.items()}
    if sharex:
        everything = np.concatenate(list(ranges.values()))
        ranges = {title: everything for title in ranges}
    for ax, (title, (action, background)) in zip(axes[0], panels.items()):
        values = ranges[title]
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
        for name, x in (('action', action), ('background', background)):
            ax.hist(x, bins=edges, density=True, alpha=0.55, color=_COLORS[name],
                    label=f'{name} ({x.size} segments, mean {np.mean(x) if x.size else 0:.3g})')
        if margin is not None and low <= margin <= high:
            ax.axvline(margin, color='k', ls='--', lw=1, label=f'margin m = {margin:g}')
        ax.set_title(title)
        ax.set_xlabel('feature magnitude ||f_t||')
        ax.set_ylabel('density')
        ax.legend(fontsize='small')
    return fig


def magnitude_figure(run: RunView, panels: dict | None = None, *, bins: int = 40,
                     sharex: bool = False):
    """Paper Fig. 2: magnitudes of action vs background segments, before and after training.

    ``panels`` (title -> parameters, None for the checkpoint's) replaces the default pair, e.g.
    to compare two runs' parameters on this run's split (then ``sharex=True`` shows the scales).
    """
    if panels is None:
        panels = {f'before training (init, seed {run.cfg.seed})': run.initial_params(),
                  f'after training (step {run.step})': None}
    data_ = {title: segment_magnitudes(run, params) for title, params in panels.items()}
    fig = plot_magnitude_histograms(data_, margin=float(run.cfg.loss.margin), bins=bins,
                                    sharex=sharex)
    fig.suptitle(f'feature magnitudes on the {run.split_name} split: {run.workdir}',
                 fontsize='medium')
    return fig


# ---------------------------------------------------------------------------------------------
# Figure 2: one video's timeline (paper Fig. 4)


@dataclasses.dataclass(frozen=True)
class Timeline:
    """Everything the timeline figure of one video and class shows, in seconds.

    Attributes:
      video, class_name, p_act: the video, the class and its video-level score.
      times: (L,) centres of the upsampled positions, seconds.
      fused: (L,) fused score of the class (Eq. 3, min-max normalised), as localisation uses it.
      softmax: (L,) segment softmax of the class, unfused.
      magnitude: (L,) normalised magnitude u.
      proposals: (P, 3) [start, end, score] of every proposal before NMS.
      detections: (D, 3) [start, end, score] after NMS (what is evaluated).
      gt: (G, 2) ground-truth instances of the class; gt_other: (H, 2) of other classes.
      selected: whether the class passes theta_vid (else localisation does not look at it,
        unless it is the arg-max class).
    """
    video: str
    class_name: str
    p_act: float
    times: np.ndarray
    fused: np.ndarray
    softmax: np.ndarray
    magnitude: np.ndarray
    proposals: np.ndarray
    detections: np.ndarray
    gt: np.ndarray
    gt_other: np.ndarray
    selected: bool


def _class_detections(vs: localization.VideoScores, cfg: localization.LocalizeConfig,
                      class_idx: int) -> np.ndarray:
    det = localization.localize_video(vs, cfg)
    keep = det.class_idx == class_idx
    return np.column_stack([det.segments[keep], det.score[keep]]).reshape(-1, 3)


def video_timeline(run: RunView, video: str | None = None,
                   class_name: str | None = None) -> Timeline:
    """The data of :func:`timeline_figure` (default video: the first with ground truth;
    default class: its first ground-truth class, else its highest-scoring one)."""
    v = run.video_index(video)
    out, gt = run.outputs()[v], run.split.gt[v]
    vs = run.evaluator.method.scores(out, hp=run.evaluator.hp)
    if class_name is None:
        c = int(gt.classes[0]) if len(gt.classes) else int(np.argmax(vs.p_act))
    elif class_name in run.names:
        c = run.names.index(class_name)
    else:
        raise UserError(f'class {class_name!r} is not one of {", ".join(run.names)}')
    cfg = run.localize_config
    num_sampled = vs.scores.shape[0]
    fused = vs.scores[:, c]
    sequences = [f.sequence for f in vs.families if f.sequence is not None]
    u = sequences[0] if sequences else np.zeros(num_sampled)
    softmax = np.asarray(out.outputs.get('cas_softmax', vs.scores))[:num_sampled, c]
    k = localization.seconds_per_position(vs.num_segments, num_sampled, cfg, vs.duration)
    up = lambda x: localization.upsample(x, cfg.upsample)
    fused_up = up(fused)
    # Proposals are the pool before NMS: the same localisation with a suppression that only
    # drops exact duplicates (IoU >= 1).
    pool = dataclasses.replace(cfg, nms_iou=1.0)
    gt_seg = np.asarray(gt.segments, np.float64).reshape(-1, 2)
    return Timeline(
        video=run.split.names[v], class_name=run.names[c], p_act=float(vs.p_act[c]),
        times=(np.arange(fused_up.size) + 0.5) * k, fused=fused_up,
        softmax=up(softmax), magnitude=up(u),
        proposals=_class_detections(vs, pool, c), detections=_class_detections(vs, cfg, c),
        gt=gt_seg[gt.classes == c], gt_other=gt_seg[gt.classes != c],
        selected=bool(c in vs.classes))


def plot_timeline(t: Timeline, *, magnitude_thresholds=(0.4, 0.6), max_detections: int = 30):
    """Four stacked axes sharing the time axis: scores, magnitude, detections, ground truth."""
    fig, axes = new_figure(4, 1, figsize=(11.5, 7.0), sharex=True,
                           gridspec_kw={'height_ratios': [2, 1.4, 1.6, 0.7]})
    ax_score, ax_mag, ax_det, ax_gt = axes[:, 0]
    note = '' if t.selected else ' -- below theta_vid, not localised'
    ax_score.set_title(f'{t.video}: {t.class_name} (p_act = {t.p_act:.3f}){note}')
    ax_score.plot(t.times, t.fused, color=_COLORS['score'], lw=1.5, label='fused score (Eq. 3)')
    ax_score.plot(t.times, t.softmax, color=_COLORS['softmax'], lw=1, ls='--',
                  label='segment softmax')
    ax_score.set_ylabel('score')
    ax_score.set_ylim(-0.05, 1.05)
    ax_score.legend(**_OUTSIDE)

    ax_mag.plot(t.times, t.magnitude, color=_COLORS['magnitude'], lw=1.5,
                label='normalised magnitude u')
    if magnitude_thresholds:
        ax_mag.axhspan(min(magnitude_thresholds), max(magnitude_thresholds), color='0.9',
                       label='magnitude thresholds')
    ax_mag.set_ylabel('magnitude u')
    ax_mag.set_ylim(-0.05, 1.05)
    ax_mag.legend(**_OUTSIDE)

    if len(t.proposals):
        ax_det.hlines(t.proposals[:, 2], t.proposals[:, 0], t.proposals[:, 1],
                      color=_COLORS['proposal'], lw=1, label=f'proposals ({len(t.proposals)})')
    shown = t.detections[np.argsort(-t.detections[:, 2], kind='stable')[:max_detections]]
    if len(shown):
        ax_det.hlines(shown[:, 2], shown[:, 0], shown[:, 1], color=_COLORS['detection'], lw=2.5,
                      label=f'detections (top {len(shown)} of {len(t.detections)})')
        ax_det.legend(**_OUTSIDE)
    else:
        ax_det.text(0.5, 0.5, 'no detections of this class', transform=ax_det.transAxes,
                    ha='center', va='center')
    ax_det.set_ylabel('detection score')

    for segs, color, label in ((t.gt_other, _COLORS['gt_other'], 'other classes'),
                               (t.gt, _COLORS['gt'], t.class_name)):
        if len(segs):
            ax_gt.broken_barh([(s, e - s) for s, e in segs], (0.1, 0.8), color=color,
                              label=label)
    ax_gt.set_ylim(0, 1)
    ax_gt.set_yticks([])
    ax_gt.set_ylabel('ground truth')
    ax_gt.set_xlabel('time (s)')
    if len(t.gt) or len(t.gt_other):
        ax_gt.legend(**_OUTSIDE)
    end = t.times[-1] + (t.times[1] - t.times[0] if t.times.size > 1 else 1.0) / 2
    ax_gt.set_xlim(0, end)
    return fig


def timeline_figure(run: RunView, video: str | None = None, class_name: str | None = None):
    """Paper Fig. 4 for one video and class: see :func:`video_timeline`, :func:`plot_timeline`."""
    return plot_timeline(video_timeline(run, video, class_name),
                         magnitude_thresholds=_magnitude_thresholds(run))


def _magnitude_thresholds(run: RunView) -> tuple[float, ...]:
    """The thresholds of the first family on a shared sequence (UM's magnitude family)."""
    out = run.outputs()[0]
    vs = run.evaluator.method.scores(out, hp=run.evaluator.hp)
    shared = [f for f in vs.families if f.sequence is not None]
    return tuple(shared[0].thresholds) if shared else ()


# ---------------------------------------------------------------------------------------------
# Figure 3: training curves


def curves_figure(rows_or_workdir):
    """The three losses against the step, and the evaluation mAPs (percent) per tIoU and average.

    Args:
      rows_or_workdir: a run directory, or the rows of its ``metrics.jsonl``.
    Returns:
      Figure with four axes: L_cls, L_um, L_be, and the evaluation mAP.
    """
    rows = rows_or_workdir
    if isinstance(rows_or_workdir, (str, os.PathLike)):
        from wtal_jax.runs.rundir import METRICS_FILE, RunDir
        rows = RunDir(rows_or_workdir).read_metrics()
        if not rows:
            raise UserError(f'{rows_or_workdir}: no {METRICS_FILE} (a converted '
                            'checkpoint has no training curves)')
    seed = rows[0].get('seed') if rows else None   # a run of several seeds: its first
    rows = [r for r in rows if r.get('seed') == seed]
    train_rows = [r for r in rows if r.get('split') == 'train']
    selection_rows = [r for r in rows if r.get('split') == 'selection']
    eval_rows = [r for r in rows if 'average_mAP' in r and r.get('split') != 'selection']
    fig, axes = new_figure(2, 2, figsize=(10.0, 6.0))
    steps = [r['step'] for r in train_rows]
    for ax, (key, title) in zip(axes.flat, _LOSSES):
        ax.plot(steps, [r[key] for r in train_rows], lw=1.2)
        ax.set_title(title)
        ax.set_xlabel('step')
        ax.set_ylabel('loss')
    ax = axes[1, 1]
    if eval_rows:
        steps = [r['step'] for r in eval_rows]
        maps = np.array([r['mAP'] for r in eval_rows]) * 100
        for j, t in enumerate(eval_rows[-1]['tiou_thresholds']):
            ax.plot(steps, maps[:, j], lw=0.8, alpha=0.7, label=f'tIoU {t:g}')
        ax.plot(steps, [100 * r['average_mAP'] for r in eval_rows], color='k', lw=2.2,
                marker='o', ms=3, label='average')
        if selection_rows:
            ax.plot([r['step'] for r in selection_rows],
                    [100 * r['average_mAP'] for r in selection_rows], color='k', ls='--',
                    lw=1.2, label='average, selection split')
        ax.legend(fontsize='x-small', ncol=2)
    else:
        ax.text(0.5, 0.5, 'no evaluation yet', transform=ax.transAxes, ha='center')
    split = eval_rows[-1]['split'] if eval_rows else 'test'
    ax.set_title(f'detection mAP on {split}')
    ax.set_xlabel('step')
    ax.set_ylabel('mAP (%)')
    return fig


# ---------------------------------------------------------------------------------------------
# Writing the figures


def _safe(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', name)


def write_figures(run: RunView, out: str, *, video: str | None = None,
                  class_name: str | None = None) -> list[str]:
    """Writes magnitudes.png, timeline_VIDEO_CLASS.png and curves.png (if metrics exist) into
    ``out`` (created if missing); returns their paths.

    Every figure is drawn before the first is written, so that an unknown video or class (or
    any other failure) leaves the figures already in ``out`` as they were.
    """
    timeline = video_timeline(run, video, class_name)  # checks the video and class names
    name = f'timeline_{_safe(timeline.video)}_{_safe(timeline.class_name)}.png'
    thresholds = _magnitude_thresholds(run)
    figures = {'magnitudes.png': magnitude_figure(run),
               name: plot_timeline(timeline, magnitude_thresholds=thresholds)}
    from wtal_jax.runs.rundir import METRICS_FILE, RunDir
    rows = [r for r in RunDir(run.workdir).read_metrics() if r.get('seed', run.seed) == run.seed]
    if rows:
        figures['curves.png'] = curves_figure(rows)
    else:
        print(f'note: {run.workdir} has no {METRICS_FILE}: no curves.png',
              file=sys.stderr)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f'{out}: exists and is not a folder; --out takes a folder')
    os.makedirs(out, exist_ok=True)
    return [save_png(fig, os.path.join(out, file)) for file, fig in figures.items()]
