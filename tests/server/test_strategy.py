"""AdapterFedAvg on real Flower messages: weighting, failures, declines, client-level DP."""

import numpy as np
import pytest
from flwr.app import Error, Message
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

from server.strategy import AdapterFedAvg
from tests.flower_helpers import array_record, reply, train_message

NAMES = ("base_model.model.encoder.layer.0.attention.self.query.lora_B.weight", "base_model.model.classifier.bias")


def _metrics(n, site, declined=0.0):
    return {"num-examples": n, "site-index": site, "declined": declined, "epsilon-spent": 0.5, "noise-multiplier": 1.0,
            "sample-rate": 0.1, "steps": 10, "train-loss": 0.3, "train-seconds": 1.0}


def _arrays(value):
    return {NAMES[0]: np.full((4, 2), value, np.float32), NAMES[1]: np.full(3, value, np.float32)}


def _reply(value, n, site, declined=0.0):
    return reply(train_message(_arrays(0.0)), None if declined else _arrays(value), _metrics(n, site, declined))


def test_fedavg_weights_by_training_examples():
    strategy = AdapterFedAvg()
    arrays, metrics = strategy.aggregate_train(1, [_reply(0.0, 10, 0), _reply(1.0, 30, 1)])
    averaged = {k: v.numpy() for k, v in arrays.items()}
    assert np.allclose(averaged[NAMES[0]], 0.75) and np.allclose(averaged[NAMES[1]], 0.75)
    assert [row["status"] for row in strategy.train_rows[1]] == ["trained", "trained"]
    assert all(row["bytes"] > 0 for row in strategy.train_rows[1])


def test_failing_and_declining_sites_are_recorded_and_skipped():
    rounds = []
    strategy = AdapterFedAvg(on_train_round=lambda r, rows, ok: rounds.append((r, rows, ok)), round_offset=2)
    failed = Message(Error(code=2, reason="Traceback ...\nRuntimeError: disk full"), reply_to=train_message(_arrays(0.0)))
    arrays, _ = strategy.aggregate_train(1, [failed, _reply(0.2, 5, 1, declined=1.0), _reply(1.0, 20, 2)])
    assert np.allclose(arrays[NAMES[0]].numpy(), 1.0)  # only the site that trained counts
    global_round, rows, aggregated = rounds[0]
    assert global_round == 3 and aggregated  # offset: rounds finished before a resume
    assert [r["status"] for r in rows] == ["failed", "declined", "trained"]
    assert rows[0]["error"] == "RuntimeError: disk full" and rows[0]["error_code"] == 2


def test_too_few_replies_leave_the_global_adapter_unchanged():
    rounds = []
    strategy = AdapterFedAvg(min_replies=2, on_train_round=lambda r, rows, ok: rounds.append(ok))
    assert strategy.aggregate_train(1, [_reply(1.0, 10, 0)]) == (None, None)
    assert rounds == [False]


def test_client_level_dp_wrapper_clips_and_noises_our_aggregate():
    inner = AdapterFedAvg()
    dp = DifferentialPrivacyServerSideFixedClipping(inner, noise_multiplier=0.0, clipping_norm=0.1, num_sampled_clients=2)
    dp.current_arrays = array_record(_arrays(0.0))  # the global arrays of this round (set by configure_train)
    arrays, _ = dp.aggregate_train(1, [_reply(1.0, 10, 0), _reply(1.0, 10, 1)])
    update = np.concatenate([v.numpy().ravel() for v in arrays.values()])
    assert np.linalg.norm(update) == pytest.approx(0.1, rel=1e-4)  # each update clipped to norm 0.1
    assert len(inner.train_rows[1]) == 2
