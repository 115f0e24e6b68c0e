"""Feature magnitudes of action and background segments before and after training (the paper's
Fig. 2), for a method whose video outputs hold ``magnitudes`` ((T,) per video)."""

import numpy as np

from wtal_jax import config
from wtal_jax.data import dataset, sampling
from wtal_jax.errors import UserError
from wtal_jax.tools.plots.canvas import COLORS, new_figure
from wtal_jax.tools.plots.run import RunView

OUTPUT = 'magnitudes'  # the video output this figure draws


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
    return float(config.segment_seconds(cfg))


def segment_magnitudes(run: RunView, params=None) -> tuple[np.ndarray, np.ndarray]:
    """Feature magnitudes of all action and all background segments of the split.

    Returns:
      (action, background): 1-D float64 arrays, concatenated over videos.
    """
    action, background = [], []
    for v, out in enumerate(run.outputs(params)):
        if OUTPUT not in out.outputs:
            raise UserError(f'{run.workdir}: method {run.method_name} gives no feature '
                            'magnitudes')
        magnitudes = np.asarray(out.outputs[OUTPUT])[:out.length]
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
            ax.hist(x, bins=edges, density=True, alpha=0.55, color=COLORS[name],
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
    A method's ``loss.margin``, where it has one, is drawn as a dashed line.
    """
    if panels is None:
        panels = {f'before training (init, seed {run.seed})': run.initial_params(),
                  f'after training (step {run.step})': None}
    data_ = {title: segment_magnitudes(run, params) for title, params in panels.items()}
    margin = run.cfg.loss.get('margin')
    fig = plot_magnitude_histograms(data_, margin=None if margin is None else float(margin),
                                    bins=bins, sharex=sharex)
    fig.suptitle(f'feature magnitudes on the {run.split_name} split: {run.title}',
                 fontsize='medium')
    return fig
