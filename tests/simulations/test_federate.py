"""`radfl federate` end to end on Flower's simulation engine with the tiny model."""

import json
import subprocess

import pytest

from simulations.cli import main

ARGS = [
    "federate",
    "--model",
    "tiny",
    "--synthetic-reports",
    "300",
    "--rounds",
    "2",
    "--batch-size",
    "16",
    "--epochs",
    "2",
    "--delta",
    "1e-3",
    "--epsilon",
    "2",
    "--synthetic-difficulty",
    "easy",
    "--quiet",
]


def _flower_processes() -> set[str]:
    """Running (not zombie) Flower and Ray processes."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    names = ("flower-superlink", "flower-superexec", "flwr-simulation", "raylet", "gcs_server")
    return {
        line.split()[0]
        for line in out.splitlines()
        if any(n in line for n in names) and not line.split()[1].startswith("Z")
    }


@pytest.fixture(scope="module")
def federated(tmp_path_factory):
    out = tmp_path_factory.mktemp("fed") / "run"
    before = _flower_processes()
    assert main([*ARGS, "--out", str(out)]) == 0
    assert _flower_processes() <= before  # no SuperLink, SuperExec or Ray process left behind
    return out


def test_federate_writes_the_one_record_schema(federated):
    from common.run_record import validate

    record = json.loads((federated / "metrics.json").read_text())
    validate(record)
    assert record["mode"] == "federated"
    assert set(record["metrics"]) >= {"weighted_f1", "micro_f1", "macro_f1", "per_label"}
    fed = record["federation"]
    assert fed["sites"] == 3 and fed["rounds"] == 2 and fed["partition"] == "iid"
    assert [s["site"] for s in fed["per_site"]] == [0, 1, 2]
    for site in fed["per_site"]:
        assert set(site) >= {
            "site",
            "epsilon_spent",
            "lifetime_epsilon",
            "noise_multiplier",
            "sample_rate",
            "steps",
            "declined_rounds",
        }
        assert 0 < site["epsilon_spent"] <= 2.0 and site["declined_rounds"] == 0 and site["trained_rounds"] == 2
    assert record["privacy"]["epsilon_spent"] == max(s["epsilon_spent"] for s in fed["per_site"])
    assert 0 < fed["bytes_up_per_round"] < fed["full_model_bytes"] and fed["bytes_down_per_round"] > 0
    assert [h["round"] for h in record["history"]] == [1, 2] and all(
        h["weighted_f1"] is not None for h in record["history"]
    )
    assert (federated / "adapter" / "adapter_config.json").is_file()
    # Each stage of a round is timed for `radfl bench`: one train exchange and one checkpoint per round.
    stages = record["timing"]["stages"]
    assert stages["train"]["calls"] == 2 and stages["checkpoint"]["calls"] == 2 and stages["evaluation"]["calls"] == 2
    assert all(stage["seconds"] > 0 for stage in stages.values())


def test_resume_continues_from_the_last_checkpoint_and_never_resets_epsilon(federated):
    # The server died after round 1's checkpoint; the sites had already trained round 2.
    state_file = federated / "checkpoints" / "state.json"
    state = json.loads(state_file.read_text())
    spent_before = json.loads((federated / "metrics.json").read_text())["privacy"]["epsilon_spent"]
    state["round"], state["history"] = 1, state["history"][:1]
    state_file.write_text(json.dumps(state))
    assert main([*ARGS, "--out", str(federated)]) == 0
    record = json.loads((federated / "metrics.json").read_text())
    assert [h["round"] for h in record["history"]] == [1, 2]  # round 1 was not redone
    round2 = record["history"][1]["sites"]
    # Each site's ledger (kept on the site's disk) already holds round 2: the budget is spent, so it declines.
    assert [(s["status"], s["reason"]) for s in round2] == [("declined", "run-budget-spent")] * 3
    assert record["privacy"]["epsilon_spent"] == pytest.approx(spent_before)
