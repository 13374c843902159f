"""The one evaluation of an adapter on held-out reports, with thresholds chosen where it costs no privacy."""

from __future__ import annotations

import numpy as np

from common import thresholds as T
from common.metrics import compute_metrics
from common.training import predict_probs

LABEL_KINDS = {
    "synthetic-mimic": "mimic-cxr",
    "mimic-cxr": "mimic-cxr",
    "synthetic-ctrate": "ct-rate",
    "ct-rate": "ct-rate",
}


def choose_thresholds(
    cfg, classifier, data, device, *, private: bool, autocast_dtype=None, val_probs=None
) -> tuple[np.ndarray | float, str]:
    """Per-label thresholds and the rule that chose them (see common/thresholds.py); `val_probs`: the
    validation split's probabilities when the caller already has them."""
    if cfg.thresholds == "0.5":
        return 0.5, "fixed at 0.5 (--thresholds 0.5)"
    if not private:
        probs = (
            val_probs
            if val_probs is not None
            else predict_probs(
                classifier.model,
                data.dataset(data.val),
                pad_id=classifier.pad_id,
                device=device,
                autocast_dtype=autocast_dtype,
            )
        )
        return T.tune(data.reports.labels[data.val], probs), "tuned per label on the validation split (no DP: free)"
    kind = LABEL_KINDS.get(cfg.dataset)
    if kind is None:
        return 0.5, "0.5: under DP, no public reports exist for this label set"
    difficulty = cfg.synthetic_difficulty if cfg.dataset.startswith("synthetic") else "realistic"
    public = T.public_reports(
        kind,
        max_length=cfg.max_length,
        tokenizer=classifier.tokenizer,
        uncertainty=cfg.uncertainty,
        difficulty=difficulty,
    )
    probs = predict_probs(
        classifier.model, public, pad_id=classifier.pad_id, device=device, autocast_dtype=autocast_dtype
    )
    return T.tune(public.labels.numpy(), probs), (
        f"tuned per label on {len(public):,} public synthetic reports ({difficulty}) scored by the "
        "final DP model (post-processing: no private report, no epsilon)"
    )


def evaluate(
    classifier, data, index, device, *, thresholds=0.5, autocast_dtype=None, probs=None
) -> tuple[dict, np.ndarray]:
    """Metrics (at `thresholds`, plus weighted F1 at 0.5) and the probabilities of reports `index`
    (`probs`: already computed by the caller)."""
    if probs is None:
        probs = predict_probs(
            classifier.model,
            data.dataset(index),
            pad_id=classifier.pad_id,
            device=device,
            autocast_dtype=autocast_dtype,
        )
    targets = data.reports.labels[index]
    metrics = compute_metrics(targets, probs, data.label_names, threshold=thresholds)
    metrics["weighted_f1_at_0.5"] = compute_metrics(targets, probs, data.label_names)["weighted_f1"]
    return metrics, probs
