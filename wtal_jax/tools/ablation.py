"""``wtal-jax ablate``: the paper's ablations (Table 3: losses and scores; Table 5: margin m), as
named sweeps (:mod:`wtal_jax.tools.sweep`).

Each setting of a study is one run directory ``WORKDIR/STUDY/SETTING`` that trains all its seeds
at once; a run that finished (its ``report.json`` is there, written last) is not trained again,
and an interrupted one resumes from its latest checkpoint. The study then writes
``WORKDIR/STUDY.json``, ``STUDY.md`` and ``STUDY.png``: per setting the selected, last-step and
best-on-test average mAP (mean ± sample standard deviation over seeds, and n; see the sweep's
docstring), beside the paper's number. Where the chosen settings include the config's own values
(Table 3's (d), Table 5's m = 100 under the default config), every other setting is compared
with it seed by seed (``wtal-jax compare``); no setting is added to the study for it.

Table 3 trains settings (a) and (b) identically (alpha = beta = 0): they differ only in how the
test scores are formed, so with the same seeds their networks are the same.
"""

import os

from wtal_jax.errors import UserError
from wtal_jax.tools import sweep
from wtal_jax.tools.sweep import KINDS, aggregate, format_markdown, plot_table  # noqa: F401

# A setting of a study is a point of a sweep.
Setting = sweep.Point

STUDIES = {
    'table3': (
        # SPEC §7: 32.5 is the fused baseline (b); the softmax-only baseline is ≈ 22.6,
        # derived from the text ("fusion improves the average mAP by 9.9 %").
        Setting('a', '(a) baseline, softmax score', (
            'loss.alpha=0', 'loss.beta=0', 'localize.fuse_magnitude=False'), '22.6', True),
        Setting('b', '(b) baseline, fused score', (
            'loss.alpha=0', 'loss.beta=0', 'localize.fuse_magnitude=True'), '32.5'),
        Setting('c', '(c) + L_um', (
            'loss.alpha=5e-4', 'loss.beta=0', 'localize.fuse_magnitude=True'), '40.2'),
        Setting('d', '(d) + L_um + L_be (full)', (
            'loss.alpha=5e-4', 'loss.beta=1', 'localize.fuse_magnitude=True'), '41.9'),
    ),
    'table5': tuple(
        Setting(f'm{m}', f'm = {m}', (f'loss.margin={m}',), paper)
        for m, paper in ((10, '39.6'), (25, '41.1'), (50, '41.8'), (100, '41.9'),
                         (150, '41.7'), (200, '41.9'), (250, '41.6'))),
}


def select_settings(study: str, keys: str | None = None) -> tuple[Setting, ...]:
    """The settings of ``study``, or the comma-separated ``keys`` of it, in table order."""
    if study not in STUDIES:
        raise UserError(f'unknown study {study!r}: one of {", ".join(STUDIES)}')
    settings = STUDIES[study]
    if not keys:
        return settings
    wanted = [k.strip() for k in keys.split(',') if k.strip()]
    known = {s.key for s in settings}
    unknown = [k for k in wanted if k not in known]
    if unknown:
        raise UserError(f'{study} has no setting {", ".join(unknown)}; its settings are '
                        f'{", ".join(s.key for s in settings)}')
    return tuple(s for s in settings if s.key in wanted)


def run_study(study: str, *, config_path: str, overrides=(), seeds: int = 3,
              workdir: str = 'runs/ablate', settings: str | None = None,
              progress: bool = True, log=print) -> dict:
    """Trains every setting, its seeds at once (skipping finished runs), writes
    STUDY.json/.md/.png.

    Returns the table as written to ``STUDY.json`` (fractions, not percent).
    """
    if seeds < 1:
        raise UserError(f'--seeds must be at least 1, got {seeds}')
    chosen = select_settings(study, settings)
    varied = {o.split('=', 1)[0] for s in chosen for o in s.overrides}
    clash = [o for o in overrides if o.removeprefix('--').removeprefix('config.')
             .split('=', 1)[0] in varied]
    if clash:
        log(f'note: the study sets {", ".join(sorted(varied))} itself; your '
            f'{" ".join(clash)} is overridden per setting')
    return sweep.run_sweep(chosen, name=study, config_path=config_path, overrides=overrides,
                           seeds=seeds, runs_dir=os.path.join(workdir, study),
                           out_base=os.path.join(workdir, study), add_default=False,
                           progress=progress, log=log)
