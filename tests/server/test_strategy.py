"""AdapterFedAvg and ClientLevelDP on real Flower messages: weighting, declines, failures, client-level DP."""

import numpy as np
import pytest
from flwr.app import Error, Message

from common.privacy import epsilon_spent
from server.history import RoundHistory
from server.strategy import AdapterFedAvg, ClientLevelDP
from tests.flower_helpers import array_record, reply, train_message

NAMES = ("base_model.model.encoder.layer.0.attention.self.query.lora_B.weight", "base_model.model.classifier.bias")


def _metrics(weight, site, declined=0.0, reason=0):
    return {
        "num-examples": weight,
        "site-index": site,
        "declined": declined,
        "reason": reason,
        "epsilon-spent": 0.5,
        "lifetime-epsilon": 0.7,
        "noise-multiplier": 1.0,
        "sample-rate": 0.1,
        "steps": 10,
    }


def _arrays(value):
    return {NAMES[0]: np.full((4, 2), value, np.float32), NAMES[1]: np.full(3, value, np.float32)}


def _reply(value, weight, site, declined=0.0, reason=0):
    return reply(
        train_message(_arrays(0.0)), None if declined else _arrays(value), _metrics(weight, site, declined, reason)
    )


def test_fedavg_weights_by_the_public_weight_and_records_each_site(tmp_path):
    history = RoundHistory(tmp_path, 3)
    strategy = AdapterFedAvg(history=history)
    arrays, _ = strategy.aggregate_train(1, [_reply(0.0, 10, 0), _reply(1.0, 30, 1)])
    averaged = {k: v.numpy() for k, v in arrays.items()}
    assert np.allclose(averaged[NAMES[0]], 0.75) and np.allclose(averaged[NAMES[1]], 0.75)
    rows = history.entry(1)["sites"]
    assert [(r["site"], r["status"], r["reason"]) for r in rows] == [(0, "trained", "ok"), (1, "trained", "ok")]
    assert all(r["bytes"] > 0 and r["epsilon_spent"] == 0.5 and r["lifetime_epsilon"] == 0.7 for r in rows)


def test_failing_and_declining_sites_are_recorded_by_code_only_and_skipped(tmp_path):
    history = RoundHistory(tmp_path, 3)
    strategy = AdapterFedAvg(history=history, round_offset=2)
    failed = Message(
        Error(code=2, reason="Traceback ...\nValueError: label value 'Jane Doe-0'"),
        reply_to=train_message(_arrays(0.0)),
    )
    arrays, _ = strategy.aggregate_train(1, [failed, _reply(0.2, 5, 1, declined=1.0, reason=11), _reply(1.0, 20, 2)])
    assert np.allclose(arrays[NAMES[0]].numpy(), 1.0)  # only the site that trained counts
    entry = history.entry(3)  # offset: rounds finished before a resume
    assert entry["aggregated"]
    assert [(r["status"], r["reason"]) for r in entry["sites"]] == [
        ("failed", "site-error"),
        ("declined", "lifetime-budget-spent"),
        ("trained", "ok"),
    ]
    assert (
        "Jane" not in history.to_json() and entry["sites"][0]["error_code"] == 2
    )  # Flower's error text is never stored


def test_site_evaluations_become_the_run_metrics_weighted_by_test_reports(tmp_path):
    history = RoundHistory(tmp_path, 1)
    strategy = AdapterFedAvg(history=history)
    answered = [
        reply(
            train_message(_arrays(0.0)),
            None,
            {
                "num-examples": n,
                "site-index": site,
                "declined": 0.0,
                "reason": 0,
                "weighted-f1": f1,
                "micro-f1": f1,
                "macro-f1": f1,
            },
        )
        for site, n, f1 in ((0, 10, 0.9), (2, 30, 0.5))
    ]
    refused = reply(train_message(_arrays(0.0)), None, {"site-index": 1, "declined": 1.0, "reason": 17})
    strategy.aggregate_evaluate(1, [answered[0], refused, answered[1]])
    rows = history.entry(1)["site_evaluation"]
    assert [(r["site"], r["status"]) for r in rows] == [(0, "evaluated"), (1, "declined"), (2, "evaluated")]
    assert rows[1]["reason"] == "evaluation-not-allowed"
    assert history.site_evaluation_metrics()["weighted_f1"] == pytest.approx((10 * 0.9 + 30 * 0.5) / 40)


def test_too_few_replies_leave_the_global_adapter_unchanged(tmp_path):
    history = RoundHistory(tmp_path, 3)
    strategy = AdapterFedAvg(history=history, min_replies=2)
    assert strategy.aggregate_train(1, [_reply(1.0, 10, 0)]) == (None, None)
    assert history.entry(1)["aggregated"] is False and "too few" in history.entry(1)["note"]


def test_client_level_dp_clips_each_update_and_divides_by_the_sites_sampled(tmp_path):
    strategy = ClientLevelDP(noise_multiplier=0.0, clipping_norm=0.1, history=RoundHistory(tmp_path, 3))
    strategy.sent, strategy.sampled = array_record(_arrays(0.0)), 3  # three sites asked; one will not reply
    arrays, metrics = strategy.aggregate_train(1, [_reply(1.0, 10, 0), _reply(1.0, 999, 1)])
    update = np.concatenate([v.numpy().ravel() for v in arrays.values()])
    # Each update clipped to 0.1, uniform weights (999 changes nothing), the sum divided by 3 sampled sites, not 2.
    assert np.linalg.norm(update) == pytest.approx(2 * 0.1 / 3, rel=1e-4)
    assert metrics["sites-aggregated"] == 2 and metrics["sites-sampled"] == 3


def test_client_level_dp_noise_has_the_calibrated_scale(tmp_path):
    strategy = ClientLevelDP(noise_multiplier=2.0, clipping_norm=0.5, history=RoundHistory(tmp_path, 3))
    big = {NAMES[0]: np.zeros((200, 50), np.float32), NAMES[1]: np.zeros(3, np.float32)}
    strategy.sent, strategy.sampled = array_record(big), 4
    same = reply(train_message(big), big, _metrics(1, 0))
    arrays, _ = strategy.aggregate_train(1, [same])
    noise = arrays[NAMES[0]].numpy().ravel()
    assert noise.std() == pytest.approx(2.0 * 0.5 / 4, rel=0.05)  # σ C / n, n = sites sampled


def test_client_level_epsilon_with_unequal_sites_matches_an_independent_accountant():
    """Uniform weights and a fixed denominator: the sensitivity is C/n whatever the sites' sizes, so R rounds
    of multiplier σ compose to the recorded ε; Google's dp_accounting agrees."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    from common.privacy import calibrate_noise

    sigma = calibrate_noise(target_epsilon=1.0, delta=1e-5, sample_rate=1.0, steps=6)
    recorded = epsilon_spent([(sigma, 1.0, 6)], delta=1e-5)
    accountant = pld_privacy_accountant.PLDAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(sigma), 6)
    assert recorded <= 1.0 and accountant.get_epsilon(1e-5) == pytest.approx(recorded, rel=0.03)
