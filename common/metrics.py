"""Multi-label classification metrics: weighted F1 (the paper's headline), micro, macro, samples.

Predictions are probabilities thresholded at 0.5 or at per-label thresholds (common/thresholds.py
says where they may come from). Labels that are NaN (uncertain under the `ignore` policy) are left
out of the label they belong to.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

THRESHOLD = 0.5


def compute_metrics(targets: np.ndarray, probs: np.ndarray, label_names, *, threshold=THRESHOLD) -> dict:
    """Weighted/micro/macro/samples F1 and per-label precision, recall, F1, support and AUROC.

    `threshold` is one number or one per label."""
    targets = np.asarray(targets, dtype=np.float32)
    probs = np.asarray(probs, dtype=np.float32)
    if targets.shape != probs.shape:
        raise ValueError(f"targets {targets.shape} and probabilities {probs.shape} differ in shape")
    known = ~np.isnan(targets)
    truth = np.nan_to_num(targets, nan=0.0).astype(int)
    pred = (probs >= np.asarray(threshold, dtype=np.float32)).astype(int)
    # An ignored cell counts as a true negative: it can neither help nor hurt a label's F1.
    pred_masked = np.where(known, pred, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = {
            f"{avg}_f1": float(f1_score(truth, pred_masked, average=avg, zero_division=0))
            for avg in ("weighted", "micro", "macro", "samples")
        }
        precision, recall, f1, support = precision_recall_fscore_support(
            truth, pred_masked, average=None, zero_division=0
        )
    per_label = {}
    for j, name in enumerate(label_names):
        y, p = truth[known[:, j], j], probs[known[:, j], j]
        auroc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None  # undefined with one class
        per_label[name] = {
            "precision": float(precision[j]),
            "recall": float(recall[j]),
            "f1": float(f1[j]),
            "support": int(support[j]),
            "auroc": auroc,
        }
    aurocs = [v["auroc"] for v in per_label.values() if v["auroc"] is not None]
    result["macro_auroc"] = float(np.mean(aurocs)) if aurocs else None
    result["n_examples"] = int(len(targets))
    result["per_label"] = per_label
    return result
