"""The ``wtal-jax`` command (also ``python -m wtal_jax``).

Every subcommand takes ``--config.KEY=VALUE`` overrides where it takes a config. A problem with
the user's input ends in one line on stderr and exit status 2, never a traceback.
"""

import argparse
import importlib
import os
import sys
import types

from wtal_jax.errors import UserError


def _add_config_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument('--config', required=required,
                        help='config file (configs/*.py); fields overridable as '
                             '--config.section.field=value')
    parser.add_argument('--workdir', required=required, help='run directory')


def _config(args, overrides):
    from wtal_jax.runs import checkpointing
    from wtal_jax import config
    if args.config:
        return config.load_config(args.config, overrides)
    cfg = checkpointing.read_config(args.workdir)
    config.apply_overrides(cfg, overrides, source=os.path.join(args.workdir, 'config.json'))
    return cfg


def cmd_train(args, overrides) -> int:
    from wtal_jax.postprocess import evaluation
    from wtal_jax.runs import experiment
    if not args.workdir:  # --config alone would train into nowhere; --workdir alone resumes
        raise UserError('train needs --workdir (and --config, unless resuming a run there)')
    cfg = _config(args, overrides)
    metrics = experiment.train_and_evaluate(cfg, args.workdir, progress=not args.quiet)
    if metrics:
        print(f'final evaluation on {cfg.eval.split} (step {metrics["step"]}):')
        print(evaluation.format_table(types.SimpleNamespace(
            tiou_thresholds=metrics['tiou_thresholds'], map=metrics['mAP'],
            average_map=metrics['average_mAP'])))
    return 0


def cmd_evaluate(args, overrides) -> int:
    """Evaluates a run directory's best (or a given) checkpoint on its test split."""
    from wtal_jax import config as config_lib
    from wtal_jax.postprocess import evaluation
    from wtal_jax.runs import experiment
    from wtal_jax.io_utils import write_json_atomic
    source = args.checkpoint or args.workdir
    if not source:
        raise UserError('evaluate needs --workdir or --checkpoint')
    saved_cfg, names, model, state, step = experiment.load_checkpoint(source, which=args.which)
    cfg = config_lib.load_config(args.config, overrides) if args.config else saved_cfg
    if not args.config:
        config_lib.apply_overrides(cfg, overrides)
    split_name = args.split or cfg.eval.split
    experiment.prepare_dataset(cfg, progress=not args.quiet)
    split = experiment.load_split(cfg, split_name, names, progress=not args.quiet)
    evaluator = experiment.Evaluator(cfg, split, model, split_name=split_name)
    metrics, results, detection = evaluator(state.params)
    outdir = args.workdir or experiment.find_checkpoint(source)[0]
    results_path = os.path.join(outdir, f'results_{split_name}.json')
    metrics_path = os.path.join(outdir, f'metrics_{split_name}.json')
    write_json_atomic(results_path, results)
    write_json_atomic(metrics_path, {'step': step, 'split': split_name, **metrics,
                                     **evaluation.result_to_json(detection)}, indent=1)
    print(f'{split_name} split, checkpoint step {step}: accuracy {100 * metrics["accuracy"]:.1f}'
          f'  classification mAP {100 * metrics["classification_mAP"]:.1f}')
    print(evaluation.format_table(detection))
    print(f'wrote {results_path} and {metrics_path}')
    return 0


def cmd_map(args, overrides) -> int:
    """Standalone drop-in for the official ActivityNet detection evaluation."""
    from wtal_jax.postprocess import evaluation
    from wtal_jax.io_utils import write_json_atomic
    if overrides:
        raise UserError(f'map takes no config overrides: {" ".join(overrides)}')
    tious = evaluation.parse_tiou_thresholds(args.tiou_thresholds)
    gt = evaluation.load_ground_truth(args.ground_truth, args.subset)
    preds = evaluation.load_predictions(args.predictions, gt)
    if preds.num_outside_subset:
        print(f'warning: {preds.num_outside_subset} predictions are for videos outside subset '
              f'{args.subset!r}; they count as false positives, as in the official evaluation',
              file=sys.stderr)
    result = evaluation.evaluate_detection(gt, preds, tious)
    print(evaluation.format_table(result))
    if args.json:
        write_json_atomic(args.json, evaluation.result_to_json(result), indent=1)
    return 0


def cmd_detect(args, overrides) -> int:
    """Detections for videos without annotations, from their feature files."""
    from wtal_jax.runs import experiment
    detections = experiment.detect(args.checkpoint, args.features, overrides=overrides,
                                   output=args.output, which=args.which)
    print(f'wrote {sum(len(v) for v in detections["results"].values())} detections for '
          f'{len(detections["results"])} videos to {args.output}')
    return 0


def cmd_prepare(args, overrides) -> int:
    """A public release (annotations + features) into the layout ``train`` reads."""
    from wtal_jax.data import prepare
    if overrides:
        raise UserError(f'prepare takes no config overrides: {" ".join(overrides)}')
    summary = prepare.prepare(args.dataset, annotations=args.annotations, features=args.features,
                              out=args.out, subsets=args.subsets, force=args.force,
                              trust_pickle=args.trust_pickle, progress=not args.quiet)
    print(prepare.format_summary(summary))
    return 0


# Modules that register their own subcommands with ``add_parser(subparsers)``; each subparser
# sets ``func(args, overrides) -> exit status``. Imported lazily so optional extras (torch,
# matplotlib) are imported only by the commands that need them.
_COMMAND_MODULES = ('tools.bench', 'tools.torch_convert', 'tools.plotting', 'tools.ablation')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='wtal-jax', description='Weakly-supervised temporal action localisation by '
                                     'uncertainty modelling (UM, AAAI 2021) in JAX.')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('train', help='train (and evaluate) a model; resumes in --workdir')
    _add_config_args(p, required=False)
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('evaluate', help='localise and evaluate a checkpoint on the test split')
    _add_config_args(p, required=False)
    p.add_argument('--checkpoint', help='run directory or RUN/checkpoints/STEP')
    p.add_argument('--which', choices=('best', 'latest'), default='best')
    p.add_argument('--split', choices=('train', 'test'), help='default: eval.split')
    p.add_argument('--quiet', action='store_true')
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('map', help='mAP of an ActivityNet results file (official protocol)')
    p.add_argument('--ground-truth', required=True)
    p.add_argument('--predictions', required=True)
    p.add_argument('--subset', default='test')
    p.add_argument('--tiou-thresholds', default='0.1:0.7:0.1',
                   help='start:stop:step (stop included) or a comma list')
    p.add_argument('--json', help='also write the figures (fractions) to this JSON file')
    p.set_defaults(func=cmd_map)

    p = sub.add_parser('detect', help='detections for feature files of unannotated videos')
    p.add_argument('--checkpoint', required=True, help='run directory or RUN/checkpoints/STEP')
    p.add_argument('--which', choices=('best', 'latest'), default='best')
    p.add_argument('--output', default='detections.json')
    p.add_argument('features', nargs='+',
                   help='per video: one .npy of (n, D), or RGB.npy,FLOW.npy joined by a comma')
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser('prepare', help='turn a public release (official annotations + per-video '
                                       'features) into the layout train reads')
    p.add_argument('dataset', choices=('thumos14', 'activitynet'))
    p.add_argument('--annotations', nargs='+', required=True,
                   help='the official annotation file (activity_net.v1-3.min.json, gt.json); for '
                        "thumos14 also the per-class CLASS_val.txt/CLASS_test.txt files or their "
                        'folders; for a W-TALC single-file release its -Annotations folder')
    p.add_argument('--features', required=True,
                   help='folder of per-video .npy files (VIDEO.npy or v_VIDEO.npy; joint [rgb, '
                        'flow] or per stream: _rgb/_flow suffix or rgb/flow folders), or the '
                        'W-TALC single file (needs --trust-pickle)')
    p.add_argument('--out', required=True,
                   help='folder to write: gt.json, split_SUBSET.txt, features/SUBSET/{rgb,flow}/ '
                        '(symlinks), missing_features.txt')
    p.add_argument('--subsets', nargs='+',
                   help='annotation subsets to prepare (default: train test for thumos14, whose '
                        'validation videos become train; training validation for activitynet)')
    p.add_argument('--force', action='store_true',
                   help='replace what an earlier prepare wrote into --out')
    p.add_argument('--trust-pickle', action='store_true',
                   help='allow reading a W-TALC single-file release, a pickle that can run code: '
                        'only for a file from a source you trust')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    p.set_defaults(func=cmd_prepare)

    for name in _COMMAND_MODULES:
        importlib.import_module(f'wtal_jax.{name}').add_parser(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    overrides = [a for a in rest if a.startswith('--config.')]
    unknown = [a for a in rest if not a.startswith('--config.')]
    if unknown:
        parser.error(f'unrecognised arguments: {" ".join(unknown)}')
    try:
        return args.func(args, overrides)
    except UserError as e:
        print(f'wtal-jax {args.command}: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'wtal-jax {args.command}: interrupted', file=sys.stderr)
        return 130
