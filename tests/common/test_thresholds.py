"""Decision thresholds: the best F1 per label, and under DP chosen without touching a private report."""

import numpy as np
import pytest
import torch

from common.config import RunConfig
from common.evaluation import choose_thresholds
from common.labels import MIMIC_CXR
from common.model import build_classifier
from common.thresholds import GRID, PUBLIC_SIZES, public_count, tune


def test_tune_picks_the_grid_threshold_with_the_best_f1_and_half_without_positives():
    rng = np.random.default_rng(0)
    targets = (rng.random((300, 3)) < [0.1, 0.4, 0.0]).astype(np.float32)
    probs = np.clip(0.3 * targets + 0.5 * rng.random((300, 3)), 0, 1)
    chosen = tune(targets, probs)

    def f1(j, t):
        y, p = targets[:, j] > 0.5, probs[:, j] >= t
        return 2 * np.sum(p & y) / max(p.sum() + y.sum(), 1)

    for j in (0, 1):
        assert f1(j, chosen[j]) == pytest.approx(max(f1(j, t) for t in GRID))
    assert chosen[2] == 0.5


class _PrivateData:
    """Stands for a site's reports: any read of them fails the test."""

    val = test = train = np.arange(3)

    def dataset(self, index):
        raise AssertionError("a private report was read to choose thresholds under DP")


@pytest.mark.parametrize("difficulty", ["easy", "realistic"])
def test_thresholds_under_dp_read_no_private_report_and_use_the_runs_public_generator(difficulty):
    torch.manual_seed(0)
    classifier = build_classifier("tiny", MIMIC_CXR.labels)
    cfg = RunConfig(model="tiny", epsilon=1.0, synthetic_difficulty=difficulty)
    thresholds, rule = choose_thresholds(cfg, classifier, _PrivateData(), torch.device("cpu"), private=True)
    assert np.shape(thresholds) == (14,) and f"({difficulty})" in rule and "no epsilon" in rule
    with pytest.raises(AssertionError, match="private report"):  # without DP the validation split is used
        choose_thresholds(
            cfg.replace(epsilon=float("inf")), classifier, _PrivateData(), torch.device("cpu"), private=False
        )


def test_real_data_under_dp_uses_the_realistic_public_generator_and_csv_stays_at_half():
    classifier = build_classifier("tiny", MIMIC_CXR.labels)
    cfg = RunConfig(model="tiny", dataset="mimic-cxr", data="unused", synthetic_difficulty="easy")
    _, rule = choose_thresholds(cfg, classifier, _PrivateData(), torch.device("cpu"), private=True)
    assert "(realistic)" in rule
    thresholds, rule = choose_thresholds(
        cfg.replace(dataset="csv"), classifier, _PrivateData(), torch.device("cpu"), private=True
    )
    assert thresholds == 0.5 and "no public reports" in rule


def test_the_public_set_is_the_first_prefix_with_enough_positives_of_every_label():
    labels = np.zeros((1_500, 2), dtype=np.float32)
    labels[:, 0] = 1.0
    labels[np.arange(0, 1_500, 40), 1] = 1.0  # one in 40: 25 positives in the first 1,000
    assert public_count(labels) == 1_000
    labels[np.arange(0, 1_500, 20), 1] = 1.0  # one in 20: 38 in the first 750
    assert public_count(labels) == PUBLIC_SIZES[0] == 750
    labels[:, 1] = np.nan  # never positive: the whole set
    assert public_count(labels) == 1_500


def test_the_rule_reports_how_many_public_reports_it_scored():
    classifier = build_classifier("tiny", MIMIC_CXR.labels)
    cfg = RunConfig(model="tiny", epsilon=1.0, synthetic_difficulty="easy")
    _, rule = choose_thresholds(cfg, classifier, _PrivateData(), torch.device("cpu"), private=True)
    assert "tuned per label on 750 public synthetic reports (easy)" in rule
