"""The final report of a training run (``report.json``): every seed's numbers under an honest
selection rule.

From the evaluation rows of ``metrics.jsonl`` (the test split and, by default, the held-out
selection split, evaluated every ``eval.every_steps``), for every seed:

* **selected**: the test numbers at the step chosen by ``checkpoint.select`` — the best step on
  the selection split (the default), the last step, or the best step on the test split;
* **last**: the test numbers at the last step (no selection at all);
* **test_selection**: the test numbers at the best step on the test split itself. That is model
  selection on the test set — the authors' release protocol, which the paper's tables use —
  always labelled as such.

Then the mean and sample standard deviation (ddof = 1; 0 for one seed) over the seeds of every
number. Plain Python and NumPy.
"""

import numpy as np

from wtal_jax.errors import UserError

RULES = {
    'selection': 'best step on the selection split (held-out training videos)',
    'last': 'last step',
    'test': 'best step on the test split (test-set selection)',
}
SCALARS = ('average_mAP', 'accuracy', 'classification_mAP')


def best_index(values, mode: str) -> int:
    """The index of the best of ``values`` (N numbers, one per evaluation in step order) under
    ``mode`` ('max' or 'min'); of equal best values, the first: the earliest step.

    The one rule that picks a best step: for the report's 'selected' and 'test_selection'
    (:func:`seed_report`), for ``evaluate``'s best checkpoint (``RunDir.best_step``) and for the
    checkpoint kept as each seed's best (``checkpoints.open_manager``).
    """
    values = np.asarray(values, np.float64)
    return int(np.argmax(values) if mode == 'max' else np.argmin(values))


def _best(rows: list[dict], metric: str, mode: str) -> dict | None:
    """The row with the best ``metric`` (:func:`best_index`: equal values, the earliest)."""
    if not rows:
        return None
    return rows[best_index([r[metric] for r in rows], mode)]


def _numbers(row: dict) -> dict:
    """The reported numbers of one evaluation row, with its step."""
    out = {'step': row['step'], 'mAP': list(row['mAP']),
           'tiou_thresholds': list(row['tiou_thresholds'])}
    out.update({k: row[k] for k in SCALARS if k in row})
    if 'averages' in row:
        out['averages'] = dict(row['averages'])
    return out


def seed_report(rows: list[dict], seed: int, *, select: str, test_split: str,
                selection_split: str, num_steps: int, metric: str = 'average_mAP',
                mode: str = 'max') -> dict:
    """One seed's selected, last and test-selection numbers from its evaluation rows."""
    test = [r for r in rows if r.get('split') == test_split and r.get('seed') == seed]
    last = [r for r in test if r['step'] == num_steps]
    if not last:
        raise UserError(f'seed {seed}: no {test_split} evaluation at step {num_steps} in '
                        'metrics.jsonl (a run trained past train.num_steps? resume with at '
                        'least its last step)')
    best_test = _best(test, metric, mode)
    if select == 'selection':
        chosen = _best([r for r in rows if r.get('split') == selection_split
                        and r.get('seed') == seed], metric, mode)
        if chosen is None:
            raise UserError(f'seed {seed}: no {selection_split} evaluation to select on')
        selected = next(r for r in test if r['step'] == chosen['step'])
        selection = {'step': chosen['step'], metric: chosen[metric]}
    else:
        selected = last[-1] if select == 'last' else best_test
        selection = None
    report = {'seed': seed, 'selected': _numbers(selected), 'last': _numbers(last[-1]),
              'test_selection': _numbers(best_test)}
    if selection is not None:
        report['selection_split'] = selection
    return report


def _mean_std(values) -> dict:
    values = np.asarray(values, np.float64)
    std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1:])
    return {'mean': values.mean(axis=0).tolist(), 'std': np.asarray(std).tolist()}


def summarize(per_seed: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every number, per kind of selection."""
    summary = {}
    for kind in ('selected', 'last', 'test_selection'):
        entries = [p[kind] for p in per_seed]
        out = {'mAP': _mean_std([e['mAP'] for e in entries])}
        for key in SCALARS:
            if all(key in e for e in entries):
                out[key] = _mean_std([e[key] for e in entries])
        if all('averages' in e for e in entries):
            out['averages'] = {r: _mean_std([e['averages'][r] for e in entries])
                               for r in entries[0]['averages']}
        summary[kind] = out
    return summary


def run_report(rows: list[dict], *, seeds, select: str, test_split: str, num_steps: int,
               selection_split: str = 'selection', metric: str = 'average_mAP',
               mode: str = 'max', videos: dict | None = None, class_names=None,
               protocol: str | None = None) -> dict:
    """The report of a run: the rule, every seed's numbers, their means and deviations.

    ``class_names`` (the C classes, in the model's order) and ``protocol`` (of the evaluation,
    e.g. 'seconds') are written when given: ``wtal-jax compare`` refuses to pair runs whose
    classes or protocol differ (a report without ``protocol`` means 'seconds').
    """
    per_seed = [seed_report(rows, s, select=select, test_split=test_split,
                            selection_split=selection_split, num_steps=num_steps,
                            metric=metric, mode=mode) for s in seeds]
    result = {'select': select, 'rule': RULES[select], 'test_split': test_split,
              'num_steps': num_steps, 'seeds': list(seeds), 'metric': metric,
              'std': 'sample standard deviation over seeds (ddof=1); 0 for one seed',
              'videos': videos or {}, 'per_seed': per_seed, 'summary': summarize(per_seed),
              'tiou_thresholds': per_seed[0]['last']['tiou_thresholds']}
    if class_names is not None:
        result['class_names'] = list(class_names)
    if protocol is not None:
        result['protocol'] = protocol
    return result


def _cell(stats: dict, index=None) -> str:
    mean, std = stats['mean'], stats['std']
    if index is not None:
        mean, std = mean[index], std[index]
    return f'{100 * mean:5.1f} ± {100 * std:4.1f}'


def format_report(report: dict) -> str:
    """The report as a table (80 columns): mAP (%) per tIoU, average and video-level metrics,
    mean ± std over seeds, for the selected step, the last step and the test-set selection;
    then every seed's average."""
    seeds, summary = report['seeds'], report['summary']
    kinds = ('selected', 'last', 'test_selection')
    lines = [f"{report['test_split']} split, {len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
             f"({', '.join(map(str, seeds))}), {report['num_steps']} steps; mAP (%), "
             'mean ± std over seeds',
             f"selected = {report['rule']}",
             f"{'':12s} {'selected':>13s} {'last step':>13s} {'best on test*':>13s}"]
    for i, t in enumerate(report['tiou_thresholds']):
        lines.append(f'{"tIoU " + format(t, "g"):12s} ' +
                     ' '.join(f'{_cell(summary[k]["mAP"], i):>13s}' for k in kinds))
    rows = [('AVG', lambda s: s['average_mAP'])]
    # The other protocols' averages (over 0.1:0.5, 0.1:0.9, ... or 0.5:0.95), when recorded.
    if all('averages' in summary[k] for k in kinds):
        rows += [(f'avg {name}', lambda s, name=name: s['averages'][name])
                 for name in summary['selected']['averages']]
    rows += [(label, lambda s, key=key: s[key]) for key, label in
             (('accuracy', 'accuracy'), ('classification_mAP', 'class mAP'))
             if all(key in summary[k] for k in kinds)]
    for label, get in rows:
        lines.append(f'{label:12s} ' + ' '.join(f'{_cell(get(summary[k])):>13s}' for k in kinds))
    for p in report['per_seed']:
        avg = ' / '.join(f"{100 * p[k]['average_mAP']:.1f}" for k in kinds)
        lines.append(f"seed {p['seed']}: AVG {avg} (selected step {p['selected']['step']}, "
                     f"best on test at step {p['test_selection']['step']})")
    lines.append("* test-set selection: the best test step itself (the release's protocol)")
    return '\n'.join(lines)
