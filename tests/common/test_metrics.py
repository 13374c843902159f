import numpy as np
import pytest

from common.metrics import compute_metrics


def test_weighted_f1_weights_labels_by_support():
    # label a: support 3, F1 1.0 ; label b: support 1, F1 0.0 -> weighted 0.75, macro 0.5
    targets = np.array([[1, 0], [1, 0], [1, 1], [0, 0]], np.float32)
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.4], [0.1, 0.3]], np.float32)
    m = compute_metrics(targets, probs, ["a", "b"])
    assert m["weighted_f1"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(0.5)
    assert m["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 1))  # tp 3, fn 1, fp 0
    assert m["per_label"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3, "auroc": 1.0}
    assert m["per_label"]["b"]["auroc"] == pytest.approx(1.0)  # ranks right, threshold too high
    assert m["n_examples"] == 4


def test_ignored_labels_and_undefined_auroc():
    targets = np.array([[1, np.nan], [0, 0], [1, 0]], np.float32)
    probs = np.array([[0.9, 0.9], [0.2, 0.1], [0.6, 0.2]], np.float32)
    m = compute_metrics(targets, probs, ["a", "b"])
    assert (
        m["per_label"]["b"]["precision"] == 0.0 and m["per_label"]["b"]["support"] == 0
    )  # the NaN cell is not a false positive
    assert m["per_label"]["b"]["auroc"] is None  # one class only: undefined
    assert m["per_label"]["a"]["f1"] == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        compute_metrics(np.zeros((2, 2)), np.zeros((2, 3)), ["a", "b"])


@pytest.mark.parametrize("seed", range(8))
def test_the_bootstraps_fast_weighted_f1_equals_sklearn(seed):
    """`simulations.report._fast_weighted_f1` (the paired bootstrap's F1) against sklearn and `compute_metrics`."""
    from sklearn.metrics import f1_score

    from simulations.report import _fast_weighted_f1

    rng = np.random.default_rng(seed)
    n, n_labels = int(rng.integers(5, 80)), int(rng.integers(3, 10))
    targets = (rng.random((n, n_labels)) < rng.random(n_labels)).astype(np.float32)
    targets[:, 0] = 0  # a label without a positive: no weight, whatever is predicted
    probs = rng.random((n, n_labels)).astype(np.float32)
    probs[:, 1] = 0.0  # a label never predicted
    probs[rng.random((n, n_labels)) < 0.1] = 0.5  # exactly at the threshold: predicted positive
    expected = f1_score(targets.astype(int), (probs >= 0.5).astype(int), average="weighted", zero_division=0)
    assert _fast_weighted_f1(targets, probs) == pytest.approx(expected, abs=1e-12)
    names = [str(j) for j in range(n_labels)]
    targets[rng.random((n, n_labels)) < 0.2] = np.nan  # ignored cells, left out as compute_metrics leaves them out
    assert _fast_weighted_f1(targets, probs) == pytest.approx(
        compute_metrics(targets, probs, names)["weighted_f1"], abs=1e-12
    )


def test_the_bootstraps_fast_weighted_f1_without_any_positive_is_zero_like_sklearn():
    from simulations.report import _fast_weighted_f1

    assert _fast_weighted_f1(np.zeros((6, 3), np.float32), np.ones((6, 3), np.float32)) == 0.0
    assert (
        compute_metrics(np.zeros((6, 3), np.float32), np.ones((6, 3), np.float32), ["a", "b", "c"])["weighted_f1"]
        == 0.0
    )
