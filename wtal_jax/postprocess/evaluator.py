"""The evaluator: a split's scores, detections and metrics for any parameters (SPEC §5, §6).

Inference (compiled, on the device) -> localisation (NumPy) -> mAP and the protocol report
(NumPy). The training loop's evaluations, ``evaluate``, the figures and the notebooks all
evaluate through :class:`Evaluator`.
"""

import dataclasses
import os
from typing import NamedTuple

import numpy as np

from wtal_jax import config as config_lib
from wtal_jax import method as method_lib
from wtal_jax.data import dataset
from wtal_jax.postprocess import average_precision, eval_files, inference, localization, report


class Evaluation(NamedTuple):
    """One model evaluated on one split.

    Attributes:
      metrics: the compact figures a training log keeps (mAP per threshold, their average,
        the protocol report's other averages, video accuracy, classification mAP).
      results: the ActivityNet results dict of the detections.
      detection: the :class:`~wtal_jax.postprocess.average_precision.DetectionResult` at the
        config's thresholds.
      figures: everything of :func:`wtal_jax.postprocess.report.evaluate` (every protocol).
    """
    metrics: dict
    results: dict
    detection: average_precision.DetectionResult
    figures: dict


class Evaluator:
    """Scores, detections and metrics of one split for any parameters (SPEC §5, §6).

    Packs the split's test-sampled features once (on the first local device); each call runs the
    compiled forward pass, the NumPy localisation and the mAP evaluation. The ground truth of the
    test split is the annotation file's whole subset, so a video without features or predictions
    counts its instances as missed (the official convention); the selection split and the
    training part of the training subset are evaluated on their own videos' ground truth.
    """

    def __init__(self, cfg, split: dataset.Split, model, *, split_name: str):
        """``model``: the network (a Flax module) of ``cfg``'s method."""
        self.packed = inference.on_device(inference.pack(
            split.features, num_segments=cfg.data.num_segments,
            chunk_size=cfg.eval.chunk_segments, fixed=cfg.data.test_sampling == 'fixed'))
        # The packed copy is all that is needed from here on: do not hold the features twice.
        self.cfg, self.split_name = cfg, split_name
        self.split = dataclasses.replace(split, features=[])
        self.method, self.hp = method_lib.load(cfg.method), config_lib.frozen(cfg)
        self.predictor = inference.Predictor(self.method, model, self.hp)
        self.localize_cfg = localization.LocalizeConfig.from_config(cfg)
        part = cfg.data.test if split_name == cfg.data.test.subset else cfg.data.train
        gt = eval_files.load_ground_truth(os.path.join(cfg.data.root, cfg.data.annotation_file),
                                          part.subset)
        self.gt = gt if part is cfg.data.test else eval_files.restrict_ground_truth(
            gt, split.names + split.missing)
        self.tious = np.asarray(cfg.eval.tiou_thresholds, np.float64)

    def outputs(self, params) -> list[localization.VideoOutput]:
        """Per-video network outputs of the method, in split order."""
        return self.predictor(params, self.packed, num_segments=self.cfg.data.num_segments,
                              durations=self.split.durations)

    def scores(self, params) -> list[localization.VideoScores]:
        """Per-video scores for localisation (the method's ``scores``), in split order."""
        return [self.method.scores(video, hp=self.hp) for video in self.outputs(params)]

    def __call__(self, params, *, protocol: str = 'seconds', ambiguous=None) -> Evaluation:
        """Scores, localises and evaluates one model on the split."""
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
            self.gt, eval_files.load_predictions(scored, self.gt), tiou_thresholds=self.tious,
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
        return Evaluation(metrics, results, detection, figures)
