"""matplotlib on the Agg canvas (no ``pyplot``, so matplotlib's global state is left alone: a
notebook keeps its inline backend), the colours the figures share, and the PNG writer."""

import re

import numpy as np

from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_atomic

COLORS = {'action': '#d62728', 'background': '#1f77b4', 'score': '#d62728',
          'softmax': '#7f7f7f', 'sequence': '#2ca02c', 'proposal': '#c7c7c7',
          'detection': '#ff7f0e', 'gt': '#2ca02c', 'gt_other': '#bdbdbd', 'tail': '0.7',
          'selected': '#9467bd'}
OUTSIDE = dict(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize='small')  # data visible


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


def safe_name(name: str) -> str:
    """``name`` with every run of characters other than letters, digits, '_', '.', '-' as '_'
    (a video or class name inside a file name)."""
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', name)


def figure_texts(fig) -> list[str]:
    """Every text of ``fig``: its title, and each axes' title, labels and legend entries
    (what a reader sees written on it)."""
    texts = [fig.get_suptitle()]  # '' when there is none
    for ax in fig.get_axes():
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.texts]
        if ax.get_legend() is not None:
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    return [t for t in texts if t]


def value_range(values: np.ndarray, *, low: float = 0.0, high: float = 1.0,
                pad: float = 0.05) -> tuple[float, float]:
    """Axis limits covering [low, high] and ``values``, padded by ``pad``."""
    return (min(low, float(np.min(values))) - pad, max(high, float(np.max(values))) + pad)
