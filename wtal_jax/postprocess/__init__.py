"""From a trained network to numbers (SPEC §5-§6), for any method: ``inference`` (its compiled
forward pass over test videos, JAX), then plain NumPy that never imports JAX: ``localization``
(proposals, NMS), ``eval_files`` (ground truth, predictions), ``snippet`` (the snippet-grid
protocol), ``average_precision`` (mAP), ``report`` (every protocol) and ``tables`` (text);
``evaluator`` runs the whole chain for one split."""
