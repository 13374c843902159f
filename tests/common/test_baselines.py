"""Classic baselines: TF-IDF + logistic regression and its DP-SGD twin (privacy contract and learning)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.baselines import _train_linear, dp_logreg, hashed_features, run_baselines, tfidf_logreg
from common.data import PreparedData
from common.errors import InputError
from common.metrics import compute_metrics
from common.partition import dataset_splits
from common.privacy import PrivacyLedger, epsilon_spent
from common.synthetic import generate
from common.thresholds import tune

SMALL = 2**10  # hashed dims in tests: 8× faster than the default, same code path


@pytest.fixture(scope="module")
def reports():
    return generate("mimic-cxr", n_reports=400, seed=0).to_report_set()


@pytest.fixture(scope="module")
def split(reports):
    train, val, test = dataset_splits(reports, seed=0)
    pick = lambda index: [reports.texts[i] for i in index]  # noqa: E731
    return pick(train), reports.labels[train], pick(val), reports.labels[val], pick(test), reports.labels[test]


def _weighted_f1(targets, probs, names, threshold=0.5):
    return compute_metrics(targets, probs, names, threshold=threshold)["weighted_f1"]


def _trivial_f1(train_y, test_y, names) -> float:
    """The better text-blind predictor: train prevalence (≈ all negative) or every label positive."""
    prevalence = np.broadcast_to(np.nanmean(train_y, axis=0), test_y.shape)
    return max(_weighted_f1(test_y, prevalence, names), _weighted_f1(test_y, np.ones_like(test_y), names))


def test_tfidf_logreg_learns_far_beyond_a_trivial_predictor(reports, split):
    train_x, train_y, val_x, val_y, test_x, test_y = split
    both = tfidf_logreg(train_x, train_y, val_x + test_x, seed=0)
    val_probs, probs = both[: len(val_x)], both[len(val_x) :]
    assert probs.shape == test_y.shape and probs.min() >= 0 and probs.max() <= 1
    trivial = _trivial_f1(train_y, test_y, reports.label_names)
    learned = _weighted_f1(test_y, probs, reports.label_names)
    assert learned > 0.65 and learned > trivial + 0.3, (learned, trivial)
    tuned = tune(val_y, val_probs)
    assert _weighted_f1(test_y, probs, reports.label_names, threshold=tuned) > trivial + 0.3


def test_tfidf_logreg_constant_and_ignored_labels_predict_their_constant():
    texts = ["small left effusion", "no effusion seen", "large right effusion", "heart size normal"] * 5
    labels = np.zeros((20, 3), np.float32)
    labels[:, 1] = 1.0
    labels[:, 2] = np.nan
    labels[::4, 2] = 1.0  # known only where positive: NaN cells must not be read as negatives
    probs = tfidf_logreg(texts, labels, ["left effusion", "normal heart"], seed=0)
    np.testing.assert_array_equal(probs, [[0, 1, 1], [0, 1, 1]])


def test_tuned_thresholds_pick_the_best_f1_and_fall_back_to_one_half():
    targets = np.array([[1, 0, 1], [1, 0, 0], [0, 0, np.nan], [0, 0, 0]], np.float32)
    probs = np.array([[0.3, 0.9, 0.8], [0.25, 0.8, 0.1], [0.1, 0.7, 0.5], [0.05, 0.6, 0.2]], np.float32)
    thresholds = tune(targets, probs)
    assert thresholds[0] == pytest.approx(0.25)  # F1 = 1 on (0.1, 0.25]: the tie goes to the one nearest 0.5
    assert thresholds[1] == 0.5  # no positive in validation
    assert thresholds[2] == 0.5  # F1 = 1 on (0.2, 0.8] once the NaN row (0.5) is ignored; read as a negative: 0.55


def test_dp_featurizer_is_data_independent(split):
    train_x = split[0]
    alone = hashed_features(train_x[:1]).toarray()
    among_others = hashed_features(train_x[:50]).toarray()[:1]
    reordered = hashed_features(train_x[50:100] + train_x[:1]).toarray()[-1:]
    np.testing.assert_array_equal(alone, among_others)
    np.testing.assert_array_equal(alone, reordered)
    assert math.isclose(float(np.linalg.norm(alone)), 1.0, rel_tol=1e-5)


def test_dp_logreg_records_an_epsilon_within_target_that_the_accountant_confirms(split):
    train_x, train_y, *_, test_x, test_y = split
    probs, privacy = dp_logreg(train_x, train_y, test_x, epsilon=1.0, delta=1e-3, seed=0, epochs=20, n_features=SMALL)
    assert probs.shape == test_y.shape and np.isfinite(probs).all()
    assert privacy["noise_multiplier"] > 0 and privacy["steps"] == privacy["planned_steps"] > 0
    assert privacy["accountant"] == "prv" and privacy["epsilon_spent"] <= 1.0
    history = [(privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"])]
    assert privacy["epsilon_spent"] == pytest.approx(epsilon_spent(history, delta=1e-3, accountant="prv"), rel=1e-9)
    assert privacy["epsilon_spent"] > 0.95  # calibrated to the target, not far below it


def test_dp_noise_is_not_seeded_while_the_non_private_twin_is_deterministic(reports, split):
    train_x, train_y, *_, test_x, test_y = split
    private = dict(epsilon=1.0, delta=1e-3, seed=7, epochs=20, n_features=SMALL, accountant="rdp")  # rdp: faster here
    first, _ = dp_logreg(train_x, train_y, test_x, **private)
    second, _ = dp_logreg(train_x, train_y, test_x, **private)
    assert not np.allclose(first, second)
    runs = [
        dp_logreg(train_x, train_y, test_x, epsilon=math.inf, delta=1e-3, seed=7, n_features=SMALL) for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1]["epsilon_spent"] == "inf" and runs[0][1]["noise_multiplier"] == 0.0
    assert (
        _weighted_f1(test_y, runs[0][0], reports.label_names) > _trivial_f1(train_y, test_y, reports.label_names) + 0.3
    )


def _tiny_problem(n=12, d=64):
    rng = np.random.default_rng(0)
    features = hashed_features(
        [" ".join(rng.choice(["aa", "bb", "cc", "dd", "ee"], 6)) for _ in range(n)], n_features=d
    )
    labels = (rng.random((n, 3)) < 0.4).astype(np.float32)
    return features, labels


@pytest.mark.parametrize("noise, sample_rate", [(1.0, 1.0), (0.0, 0.5)], ids=["noise", "poisson-sampling"])
def test_noise_and_sampling_each_draw_from_os_entropy(noise, sample_rate):
    """Each source alone: noise with every report in every batch (q = 1), then sampling without noise."""
    features, labels = _tiny_problem()
    weights = []
    for _ in range(2):
        ledger = PrivacyLedger(
            1.0, 1e-5, "prv", max_grad_norm=0.05, noise_multiplier=noise, sample_rate=sample_rate, planned_steps=4
        )
        model = _train_linear(features, labels, ledger=ledger, batch_size=round(12 * sample_rate), steps=4, lr=1.0)
        weights.append(model.weight.detach().clone())
    assert not torch.equal(weights[0], weights[1])


def test_ghost_clipping_equals_per_example_clipping_by_hand():
    features, labels = _tiny_problem()
    labels[0, 1] = np.nan
    # σ = 0 and q = 1 (every report in the one batch): the step is exactly -lr · mean of clipped gradients.
    ledger = PrivacyLedger(1.0, 1e-5, "prv", max_grad_norm=0.05, noise_multiplier=0.0, sample_rate=1.0, planned_steps=1)
    model = _train_linear(features, labels, ledger=ledger, batch_size=12, steps=1, lr=1.0)
    x = torch.from_numpy(features.toarray())
    y = torch.from_numpy(labels)
    errors = (torch.sigmoid(torch.zeros(12, 3)) - torch.nan_to_num(y)) * ~torch.isnan(y) / 3  # ∂loss/∂logits
    norms = errors.norm(dim=1) * (x.norm(dim=1) ** 2 + 1).sqrt()
    clipped = errors * (0.05 / (norms + 1e-6)).clamp(max=1.0)[:, None]
    torch.testing.assert_close(model.weight.detach(), -(clipped.T @ x) / 12, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(model.bias.detach(), -clipped.sum(dim=0) / 12, atol=1e-6, rtol=1e-4)
    assert ledger.steps_taken == 1


@pytest.mark.parametrize("epsilon", [0.0, -1.0, float("nan")])
def test_bad_budget_is_an_input_error(split, epsilon):
    with pytest.raises(InputError) as error:
        dp_logreg(split[0], split[1], split[4], epsilon=epsilon, delta=1e-3, seed=0)
    assert "\n" not in str(error.value)


def test_no_training_reports_is_an_input_error(reports, split):
    empty = np.zeros((0, len(reports.label_names)), np.float32)
    for call in (
        lambda: tfidf_logreg([], empty, split[4], seed=0),
        lambda: dp_logreg([], empty, split[4], epsilon=1.0, delta=1e-3, seed=0),
        lambda: run_baselines(
            PreparedData(reports, [], np.array([], int), np.arange(5), np.arange(5, 10)),
            epsilon=1.0,
            delta=1e-3,
            seed=0,
        ),
    ):
        with pytest.raises(InputError) as error:
            call()
        assert "\n" not in str(error.value) and "training report" in str(error.value)


def test_run_baselines_returns_plain_metrics_and_the_privacy_record():
    reports = generate("mimic-cxr", n_reports=200, seed=1).to_report_set()
    train, val, test = dataset_splits(reports, seed=0)
    data = PreparedData(reports, [], train, val, test)
    result = run_baselines(data, epsilon=1.0, delta=1e-3, seed=0, accountant="rdp")
    assert set(result) == {"tfidf_logreg", "dp_logreg"}
    assert result["tfidf_logreg"]["metrics"]["n_examples"] == len(test)
    assert result["tfidf_logreg"]["val_metrics"]["n_examples"] == len(val)
    assert result["tfidf_logreg"]["metrics"]["weighted_f1"] > 0.5
    dp = result["dp_logreg"]
    assert dp["epsilon"] == 1.0 and dp["metrics"]["n_examples"] == len(test) and dp["seconds"] > 0
    assert (
        dp["privacy"]["epsilon_spent"] <= 1.0
        and dp["privacy"]["delta"] == 1e-3
        and dp["privacy"]["accountant"] == "rdp"
    )
    assert set(run_baselines(data, epsilon=math.inf, delta=1e-3, seed=0)) == {"tfidf_logreg"}
