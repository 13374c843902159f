"""The server's run state: evaluation where it holds reports, checkpoints every round, resume."""

import json

import numpy as np
import pytest

from common.config import RunConfig
from common.errors import InputError
from server.federation import FederationRun, client_noise_multiplier


def _cfg(tmp_path, **changes):
    base = dict(
        model="tiny",
        synthetic_reports=200,
        rounds=3,
        delta=1e-3,
        out=str(tmp_path / "fed"),
        synthetic_difficulty="easy",
    )
    return RunConfig(**{**base, **changes})


def test_checkpoint_each_round_and_resume_from_the_last(tmp_path):
    cfg = _cfg(tmp_path)
    run = FederationRun(cfg)
    assert run.done_rounds == 0 and run.remaining_rounds == 3
    start = run.arrays()
    moved = {k: v + 0.01 * (i + 1) for i, (k, v) in enumerate(start.items())}
    run.history.record_train(1, [{"site": 0, "status": "trained", "reason": "ok"}], True)
    monitored = run.end_round(1, moved)  # before the last round: a fixed subset of the server-held test split
    assert monitored["n_examples"] == min(len(run.evaluator.data.test), 512)
    assert (tmp_path / "fed" / "checkpoints" / "round-001" / "adapter_config.json").is_file()

    resumed = FederationRun(cfg)  # a new server process on the same output folder
    assert resumed.done_rounds == 1 and resumed.remaining_rounds == 2
    assert all(np.allclose(resumed.arrays()[k], moved[k]) for k in moved)
    assert resumed.history.entries[0]["round"] == 1 and resumed.history.entries[0]["aggregated"]
    assert json.loads((tmp_path / "fed" / "checkpoints" / "state.json").read_text())["round"] == 1
    with pytest.raises(InputError, match="another configuration"):
        FederationRun(cfg.replace(lr=0.5))


def test_a_deployed_server_holds_no_reports(tmp_path):
    run = FederationRun(_cfg(tmp_path, dataset="mimic-cxr", warm_start="none"))
    assert run.evaluator.data is None and run.evaluator.evaluate(final=True) is None


def test_client_level_noise_is_calibrated_to_epsilon_over_all_rounds(tmp_path):
    from common.privacy import epsilon_spent

    cfg = _cfg(tmp_path, dp_level="client", epsilon=2.0)
    sigma = client_noise_multiplier(cfg)
    # Calibrated to the target, not merely below it (any larger σ would also stay below 2).
    assert 0.95 * 2.0 < epsilon_spent([(sigma, 1.0, cfg.rounds)], delta=cfg.delta) <= 2.0
    assert client_noise_multiplier(cfg.replace(client_noise=0.3)) == 0.3


@pytest.mark.parametrize(
    "rounds,monitor,evaluated",
    [(6, 5, [1, 2, 3, 4, 5, 6]), (47, 5, [8, 16, 24, 31, 39, 47]), (47, 0, [47]), (3, 1, [2, 3]), (2, 9, [1, 2])],
)
def test_monitor_rounds_spread_the_evaluations_and_the_last_is_always_evaluated(tmp_path, rounds, monitor, evaluated):
    run = FederationRun(_cfg(tmp_path, rounds=rounds, monitor_rounds=monitor))
    assert [r for r in range(1, rounds + 1) if run.monitored(r)] == evaluated
    assert run.end_round(1, None) is None if 1 not in evaluated else run.end_round(1, None)["n_examples"] > 0
    assert (tmp_path / "fed" / "checkpoints" / "round-001").is_dir()  # every round is checkpointed
