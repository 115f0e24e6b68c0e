"""Evaluation results as text tables: the paper-style mAP table of one evaluation and the full
protocol report of ``report``. Plain NumPy.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from wtal_jax.data.annotations import THUMOS14_CLASSES
from wtal_jax.postprocess.average_precision import DetectionResult
from wtal_jax.postprocess.report import QUOTED_THRESHOLDS, THUMOS14_EXCLUDED


def aligned_rows(rows: Sequence[Sequence[Sequence[str]]]) -> list[str]:
    """Lines of a text table whose rows are groups of cells.

    Every row has the same number of groups and cells per group. Each column is as wide as its
    widest cell: the first group's cells are left-aligned (labels), the others right-aligned
    (numbers); cells are joined by a space, groups by ``' | '``.
    """
    widths = [[max(len(row[g][i]) for row in rows) for i in range(len(group))]
              for g, group in enumerate(rows[0])]
    lines = []
    for row in rows:
        groups = [' '.join(cell.ljust(w) if g == 0 else cell.rjust(w)
                           for cell, w in zip(group, widths[g])) for g, group in enumerate(row)]
        lines.append(' | '.join(groups))
    return lines


def format_table(result: DetectionResult) -> str:
    """Two lines like the paper's Table 1: thresholds, then mAP in percent, one decimal.

    ``mAP@tIoU |  0.1  0.2 ...  0.7 |  AVG`` over ``mAP (%)  | 67.5 61.2 ... 12.1 | 41.9``.
    """
    return '\n'.join(aligned_rows([
        [['mAP@tIoU'], [f'{t:g}' for t in result.tiou_thresholds], ['AVG']],
        [['mAP (%)'], [f'{100 * m:.1f}' for m in result.map], [f'{100 * result.average_map:.1f}']],
    ]))


# ---------------------------------------------------------------------------------------------
# The protocol report


def _percent(value: float) -> str:
    return f'{100 * value:.1f}'


def _count(n: int, what: str) -> str:
    """'1 class', '2 classes'."""
    return f'{n} {what}' if n == 1 else f'{n} {what}es' if what.endswith('s') else f'{n} {what}s'


def _thumos14_note(videos: Sequence[str], classes: Sequence[str]) -> list[str]:
    """Which of the three THUMOS'14 test videos the release excludes are evaluated here: only
    for THUMOS'14 itself (its 20 classes and test video names), not for a set named like it."""
    if set(classes) != set(THUMOS14_CLASSES) or \
            not any(v.startswith('video_test_') for v in videos):
        return []
    kept = [v for v in THUMOS14_EXCLUDED if v in set(videos)]
    if not kept:
        return ["THUMOS'14 test videos 270, 1292 and 1496 are not evaluated, as in the",
                'release (codebases that keep two of them evaluate 212)']
    return [f'evaluated here although the release excludes them: {", ".join(kept)}']


def class_order(names: Sequence[str], order: Sequence[str] | None = None) -> list[str]:
    """``names`` in the order of ``order`` (a model's class list), the others after them
    sorted; without ``order``, sorted (THUMOS'14's class list is alphabetical)."""
    position = {c: i for i, c in enumerate(order or ())}
    return sorted(names, key=lambda c: (position.get(c, len(position)), c))


def format_report(figures: Mapping, *, written: str | None = None,
                  class_names: Sequence[str] | None = None) -> str:
    """The report of :func:`report` as text, at most 80 columns where the thresholds and class
    names allow: header, mAP per tIoU, averages, video-level metrics, per-class AP at the
    requested thresholds (percent, one decimal), the classes in the order of ``class_names``
    (default: sorted). ``written``: the JSON file holding the figures, named for the list of
    evaluated videos."""
    protocol = ('seconds (the official ActivityNet evaluation)' if figures['protocol'] == 'seconds'
                else 'snippet (16-frame snippet grid, W-TALC / CO2-Net / DELU)')
    lines = [f'protocol: {protocol}',
             f'subset {figures["subset"]!r}: {_count(len(figures["videos"]), "video")}, '
             f'{_count(len(figures["ap"]), "class")}, '
             f'{_count(figures["num_instances"], "instance")}',
             f'{_count(figures["num_predictions"], "prediction")} evaluated']
    if written:
        lines.append(f'the evaluated videos: "videos" in {written}')
    if 'ambiguous_dropped' in figures:
        lines.append(f'{figures["ambiguous_dropped"]} predictions overlapping ambiguous segments '
                     'dropped')
    lines += _thumos14_note(figures['videos'], list(figures['ap']))
    if figures['videos_without_predictions']:
        lines.append(f'{_count(len(figures["videos_without_predictions"]), "video")} without '
                     'predictions')

    by_tiou = figures['mAP_by_tiou']
    lines += [''] + aligned_rows([
        [['mAP@tIoU'], list(by_tiou)],
        [['mAP (%)'], [_percent(m) for m in by_tiou.values()]]])
    # ActivityNet papers quote 0.5 / 0.75 / 0.95 beside the average: those columns come last.
    quoted = [f'{t:.12g}' for t in QUOTED_THRESHOLDS[figures['family']]]
    averages = figures['averages']
    lines += [''] + aligned_rows([
        [['average over'], list(averages) + quoted],
        [['mAP (%)'], [_percent(m) for m in averages.values()]
         + [_percent(by_tiou[t]) for t in quoted]]])
    if 'video_accuracy' in figures:
        lines += ['', f'video accuracy {_percent(figures["video_accuracy"])} % (class set '
                      f'{{c : score >= {figures["accuracy_threshold"]:g}}} equals the labels)',
                  f'classification mAP {_percent(figures["classification_mAP"])} %']
    heads = [f'{t:g}' for t in figures['tiou_thresholds']]
    ap = figures['ap']
    lines += [''] + aligned_rows(
        [[['AP (%) at tIoU'], heads, ['AVG']]]
        + [[[name], [_percent(a) for a in ap[name]], [_percent(float(np.mean(ap[name])))]]
           for name in class_order(ap, class_names)]
        + [[['mAP'], [_percent(m) for m in figures['mAP']], [_percent(figures['average_mAP'])]]])
    return '\n'.join(lines)
