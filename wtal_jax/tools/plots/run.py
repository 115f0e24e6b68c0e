"""A run's checkpoint with the split it is evaluated on: what the figures of a run draw from."""

import dataclasses
import os

from wtal_jax.data import dataset
from wtal_jax.errors import UserError
from wtal_jax.postprocess import localization

# ``rundir`` and the evaluator (and with them JAX) are imported inside the functions that need
# them, so that the figure functions work on metrics files and arrays without JAX.


def run_label(workdir: str) -> str:
    """The name a figure gives a run: its folder's name, never an absolute path."""
    return os.path.basename(os.path.normpath(workdir)) or 'run'


def describe(run: str, method: str, seed: int, step: int) -> str:
    """'RUN (METHOD), seed S, step N': how every figure of a checkpoint names it."""
    return f'{run} ({method}), seed {seed}, step {step}'


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

    @property
    def label(self) -> str:
        """The run's folder name (see :func:`run_label`)."""
        return run_label(self.workdir)

    @property
    def method_name(self) -> str:
        """The short name of the run's method (``Method.name``)."""
        return self.evaluator.method.name

    @property
    def title(self) -> str:
        """See :func:`describe`."""
        return describe(self.label, self.method_name, self.seed, self.step)

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

    def has_output(self, name: str) -> bool:
        """Whether the method's video outputs hold ``name`` (e.g. 'magnitudes')."""
        outputs = self.outputs()
        return bool(outputs) and name in outputs[0].outputs

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

    def class_index(self, class_name: str) -> int:
        """Index of ``class_name`` among the run's classes."""
        if class_name not in self.names:
            raise UserError(f'class {class_name!r} is not one of {", ".join(self.names)}')
        return self.names.index(class_name)

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
