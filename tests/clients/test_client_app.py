"""The ClientApp called with real Flower messages: what leaves a site, its policy, its lifetime ledger."""

import json
import math

import numpy as np
import pytest

from clients.client_app import app
from common.adapters import adapter_names, full_model_bytes, get_adapter_state, state_bytes
from common.config import RunConfig
from common.labels import MIMIC_CXR
from common.model import LoraSpec, build_classifier
from common.records import Reason
from tests.flower_helpers import array_record, context, evaluate_message, train_message

ALLOWED = {"max-epsilon": 5.0, "lifetime-epsilon": 20.0, "max-delta": 2e-3}


def _cfg(tmp_path, **changes):
    base = dict(
        model="tiny",
        synthetic_reports=300,
        batch_size=16,
        delta=1e-3,
        rounds=3,
        epochs=3,
        epsilon=2.0,
        aggregation="fedavg",
        out=str(tmp_path / "run"),
        synthetic_difficulty="easy",
    )
    return RunConfig(**{**base, **changes})


def _global(cfg):
    return get_adapter_state(
        build_classifier(cfg.model, MIMIC_CXR.labels, lora=LoraSpec(frozen_a=cfg.aggregation == "ffa")).model
    )


def _node(tmp_path, **policy):
    return {"state-dir": str(tmp_path / "site-state"), **ALLOWED, **policy}


def _train(cfg, arrays, node, *, server_round=1, run_id=1, partition=0):
    ctx = context(cfg, partition=partition, **node)
    ctx.run_id = run_id
    return app(train_message(arrays, server_round), ctx)


def _reason(reply) -> Reason:
    return Reason(int(reply.content["metrics"]["reason"]))


def test_reply_holds_only_adapter_arrays_and_data_independent_numbers(tmp_path):
    cfg = _cfg(tmp_path)
    arrays = _global(cfg)
    reply = _train(cfg, arrays, _node(tmp_path))
    content = reply.content
    assert _reason(reply) == Reason.OK
    assert (
        set(content.array_records) == {"arrays"}
        and set(content.metric_records) == {"metrics"}
        and not content.config_records
    )
    sent = {k: v.numpy() for k, v in content["arrays"].items()}
    assert list(sent) == adapter_names(
        build_classifier("tiny", MIMIC_CXR.labels).model
    )  # LoRA A/B + head, nothing else
    assert all(v.dtype == np.float32 and v.shape == arrays[k].shape for k, v in sent.items())
    # Only the ledger's numbers, a reason code and the public weight: no loss, no timing, no exact count.
    assert set(content["metrics"]) == {
        "declined",
        "reason",
        "site-index",
        "num-examples",
        "epsilon-spent",
        "lifetime-epsilon",
        "noise-multiplier",
        "sample-rate",
        "steps",
    }
    metrics = content["metrics"]
    assert (
        metrics["num-examples"] == round(1 / metrics["sample-rate"]) * 16
    )  # derived from q and the batch, not counted
    assert not all(np.array_equal(sent[k], arrays[k]) for k in sent)  # it trained


def test_minilm_sends_under_one_percent_of_the_model():
    model = build_classifier("minilm", MIMIC_CXR.labels).model
    record = array_record(get_adapter_state(model))
    wire = sum(len(a.data) for a in record.values())
    assert wire < 0.01 * full_model_bytes(model)
    ffa = build_classifier("minilm", MIMIC_CXR.labels, lora=LoraSpec(frozen_a=True)).model
    assert state_bytes(get_adapter_state(ffa)) < 0.55 * state_bytes(get_adapter_state(model))  # FFA-LoRA: about half


def test_the_run_ledger_accumulates_then_the_site_declines(tmp_path):
    cfg = _cfg(tmp_path, rounds=2)
    arrays, node = _global(cfg), _node(tmp_path)
    spent = []
    for server_round in (1, 2):
        reply = _train(cfg, arrays, node, server_round=server_round)
        spent.append(reply.content["metrics"]["epsilon-spent"])
        arrays = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    assert 0 < spent[0] < spent[1] <= cfg.epsilon and spent[1] > 0.9 * cfg.epsilon
    third = _train(cfg, arrays, node, server_round=3)  # beyond the planned rounds: the run's budget cannot afford it
    assert _reason(third) == Reason.RUN_BUDGET_SPENT and "arrays" not in third.content.array_records
    assert third.content["metrics"]["epsilon-spent"] == pytest.approx(spent[1])


def test_a_round_lost_in_a_crash_stays_spent_and_the_resumed_run_cannot_pass_its_target(tmp_path):
    """The server crashed after the site charged round 2; the resumed run sends round 2 again."""
    cfg = _cfg(tmp_path, rounds=2)
    arrays, node = _global(cfg), _node(tmp_path)
    first = _train(cfg, arrays, node, server_round=1)
    lost = _train(cfg, arrays, node, server_round=2)  # its reply never reached the server
    assert _reason(first) == _reason(lost) == Reason.OK
    again = _train(cfg, arrays, node, server_round=2)
    assert _reason(again) == Reason.RUN_BUDGET_SPENT and "arrays" not in again.content.array_records
    assert again.content["metrics"]["epsilon-spent"] == lost.content["metrics"]["epsilon-spent"] <= cfg.epsilon


@pytest.fixture
def hospital(tmp_path):
    """A deployed site: its own reports in the MIMIC-CXR layout, named by its node config."""
    from common.layouts import write_mimic_cxr
    from common.synthetic import generate

    folder = tmp_path / "hospital"
    write_mimic_cxr(generate("mimic-cxr", n_reports=240, seed=5), folder, seed=5)
    return {
        "data-path": str(folder),
        "data-format": "mimic-cxr",
        "partition-id": 0,
        "state-dir": str(tmp_path / "hospital-state"),
        **ALLOWED,
    }


def _deployed(cfg, arrays, node, *, run_id):
    ctx = context(cfg, **node)
    ctx.node_config.pop("num-partitions")
    ctx.run_id = run_id
    return app(train_message(arrays, 1), ctx)


def test_a_new_run_output_and_seed_cannot_reset_the_lifetime_ledger(tmp_path, hospital):
    """Two runs with different run.out and seeds on the same site data add up; the third is declined."""
    node = {**hospital, "lifetime-epsilon": 3.0}
    arrays = _global(_cfg(tmp_path))
    runs = [
        _cfg(tmp_path, dataset="mimic-cxr", warm_start="none", rounds=1, out=str(tmp_path / name), seed=seed)
        for name, seed in (("a", 0), ("b", 1), ("c", 2))
    ]
    first = _deployed(runs[0], arrays, node, run_id=11)
    second = _deployed(runs[1], arrays, node, run_id=12)
    life = [r.content["metrics"]["lifetime-epsilon"] for r in (first, second)]
    assert _reason(first) == _reason(second) == Reason.OK and life[1] > life[0] > 0
    assert (
        life[1] > first.content["metrics"]["epsilon-spent"] * 1.2
    )  # composed (about sqrt(2) x for two equal runs), not reset
    third = _deployed(runs[2], arrays, node, run_id=13)
    assert _reason(third) == Reason.LIFETIME_BUDGET_SPENT and "arrays" not in third.content.array_records


@pytest.mark.parametrize(
    "changes, policy, reason",
    [
        ({"epsilon": math.inf}, {}, Reason.NON_PRIVATE_REFUSED),
        ({"epsilon": 8.0}, {}, Reason.EPSILON_ABOVE_POLICY),
        ({"delta": 3e-3}, {}, Reason.DELTA_ABOVE_POLICY),
        ({"dp_level": "client"}, {}, Reason.CLIENT_LEVEL_REFUSED),
        ({"dp_level": "distributed"}, {}, Reason.DISTRIBUTED_REFUSED),
        ({"model": "minilm"}, {"models": "tiny"}, Reason.MODEL_NOT_ALLOWED),
        ({}, {"privacy-unit": "patient"}, Reason.UNIT_REFUSED),
    ],
)
def test_each_policy_violation_is_declined_with_its_reason_and_no_arrays(tmp_path, changes, policy, reason):
    cfg = _cfg(tmp_path, **changes)
    reply = _train(cfg, _global(_cfg(tmp_path)), _node(tmp_path, **policy))
    assert _reason(reply) == reason and reply.content["metrics"]["declined"] == 1.0
    assert "arrays" not in reply.content.array_records


def _crafted(arrays, how):
    arrays = {k: v.copy() for k, v in arrays.items()}
    head = next(k for k in arrays if "classifier" in k and k.endswith("weight"))
    if how == "inf":
        arrays[head][0, 0] = np.inf
    elif how == "nan":
        arrays[head][0, 0] = np.nan
    elif how == "huge":
        arrays[head][0, 0] = 3e38
    elif how == "shape":
        arrays[head] = arrays[head][:, :-1]
    elif how == "dtype":
        arrays[head] = arrays[head].astype(np.float64)
    elif how == "extra":
        arrays["base_model.model.encoder.embeddings.word_embeddings.weight"] = np.zeros((2, 2), np.float32)
    return arrays


@pytest.mark.parametrize(
    "how, reason",
    [
        ("inf", Reason.ADAPTER_NOT_FINITE),
        ("nan", Reason.ADAPTER_NOT_FINITE),
        ("huge", Reason.ADAPTER_OUT_OF_RANGE),
        ("shape", Reason.ADAPTER_REJECTED),
        ("dtype", Reason.ADAPTER_REJECTED),
        ("extra", Reason.ADAPTER_REJECTED),
    ],
)
def test_each_hostile_adapter_is_declined_before_training(tmp_path, how, reason):
    cfg = _cfg(tmp_path)
    reply = _train(cfg, _crafted(_global(cfg), how), _node(tmp_path))
    assert _reason(reply) == reason and "arrays" not in reply.content.array_records
    assert reply.content["metrics"].get("steps", 0) == 0  # nothing was charged or trained


def test_a_changed_frozen_a_is_declined_and_an_equal_one_accepted(tmp_path):
    cfg = _cfg(tmp_path, aggregation="ffa")
    model = build_classifier("tiny", MIMIC_CXR.labels, lora=LoraSpec(frozen_a=True)).model
    full = get_adapter_state(model, trainable_only=False)
    a_name = next(k for k in full if ".lora_A." in k)
    assert _reason(_train(cfg, full, _node(tmp_path))) == Reason.OK  # the shared start itself is fine
    changed = {**full, a_name: full[a_name] + np.float32(0.01)}  # within range, but not the shared A
    assert _reason(_train(cfg, changed, _node(tmp_path), run_id=2)) == Reason.FROZEN_CHANGED


def test_two_requests_for_the_same_round_do_not_share_noise(tmp_path):
    """A replayed round must not carry the same noise: the difference of two replies is not the noise-free one."""
    cfg = _cfg(tmp_path, rounds=4)
    arrays, node = _global(cfg), _node(tmp_path)
    first = _train(cfg, arrays, node, server_round=1)
    second = _train(cfg, arrays, node, server_round=1)  # the same round and adapter, asked twice
    a = {k: v.numpy() for k, v in first.content["arrays"].items()}
    b = {k: v.numpy() for k, v in second.content["arrays"].items()}
    assert any(not np.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert second.content["metrics"]["steps"] == 2 * first.content["metrics"]["steps"]  # and the replay was charged


def test_no_error_text_or_data_value_reaches_the_server(tmp_path):
    csv = tmp_path / "reports.csv"
    csv.write_text("text,patient_name,edema\nsmall effusion,Jane Doe-0,1\nno edema,John Roe-1,0\n")
    cfg = _cfg(tmp_path, dataset="csv", label_columns="patient_name")  # the server names a sensitive column
    node = _node(tmp_path, **{"data-path": str(csv), "data-format": "csv", "label-columns": "patient_name"})
    node.pop("state-dir")
    node["state-dir"] = str(tmp_path / "csv-state")
    ctx = context(cfg, **node)
    ctx.node_config.pop("num-partitions")
    reply = app(train_message(_global(_cfg(tmp_path)), 1), ctx)
    assert not reply.has_error() and reply.content["metrics"]["declined"] == 1.0
    text = json.dumps({k: float(v) for k, v in reply.content["metrics"].items()})
    assert "Jane" not in text and "Doe" not in text
    log = (tmp_path / "csv-state" / "site.log").read_text()
    assert "Jane Doe-0" in log  # the details stay in the site's own log


def test_labels_the_site_does_not_allow_are_declined(tmp_path):
    csv = tmp_path / "reports.csv"
    csv.write_text("text,patient_name,edema,patient_id\nsmall effusion,Jane,1,p1\nno edema,John,0,p2\n")
    cfg = _cfg(tmp_path, dataset="csv", label_columns="patient_name")
    node = {
        "data-path": str(csv),
        "data-format": "csv",
        "label-columns": "edema",
        "state-dir": str(tmp_path / "s"),
        "partition-id": 0,
    }
    ctx = context(cfg, **node)
    ctx.node_config.pop("num-partitions")
    reply = app(train_message(_global(_cfg(tmp_path)), 1), ctx)
    assert _reason(reply) == Reason.LABELS_NOT_ALLOWED


def test_a_deployed_site_without_data_path_refuses(tmp_path):
    cfg = _cfg(tmp_path)
    ctx = context(cfg, **{"state-dir": str(tmp_path / "s")})
    ctx.node_config.pop("num-partitions")  # not Flower's simulation: a hospital's SuperNode
    reply = app(train_message(_global(cfg), 1), ctx)
    assert _reason(reply) == Reason.NO_DATA and "arrays" not in reply.content.array_records
    typo = context(cfg, **{"data_path": "/data", "state-dir": str(tmp_path / "s")})
    assert _reason(app(train_message(_global(cfg), 1), typo)) != Reason.OK  # an unknown key is an error, not a default


def test_evaluation_releases_only_what_the_policy_allows(tmp_path):
    from clients.policy import SitePolicy
    from clients.site import session

    cfg = _cfg(tmp_path)
    arrays = _global(cfg)
    # A head bias that outweighs everything else: every even label predicted positive for every report, every odd one
    # negative. The released F1 then follows from the site's test labels alone, so it shows which adapter was scored.
    bias = next(k for k in arrays if "classifier" in k and k.endswith("bias"))
    arrays[bias] = np.where(np.arange(len(arrays[bias])) % 2 == 0, 8.0, -8.0).astype(np.float32)
    refused = app(evaluate_message(arrays), context(cfg, **_node(tmp_path)))
    assert _reason(refused) == Reason.EVALUATION_NOT_ALLOWED and set(refused.content["metrics"]) == {
        "declined",
        "reason",
        "site-index",
    }
    node = _node(tmp_path, **{"allow-evaluation": "final"})
    ctx = context(cfg, **node)
    first = app(evaluate_message(arrays), ctx)
    metrics = first.content["metrics"]
    assert _reason(first) == Reason.OK and not first.content.array_records
    s = session(cfg, SitePolicy.from_node_config(ctx.node_config, environ={}))
    truth = np.nan_to_num(s.data.reports.labels[s.test]) > 0.5
    positives, n = truth.sum(axis=0), len(truth)
    even = np.arange(truth.shape[1]) % 2 == 0
    f1 = np.where(
        even, 2 * positives / (positives + n), 0.0
    )  # all predicted positive: tp = positives, fp = n - positives
    assert metrics["num-examples"] == n > 0 and positives[even].sum() > 0
    assert metrics["weighted-f1"] == pytest.approx((f1 * positives).sum() / positives.sum(), rel=1e-6)
    assert metrics["macro-f1"] == pytest.approx(f1.mean(), rel=1e-6)
    tp, fp, fn = positives[even].sum(), (n - positives[even]).sum(), positives[~even].sum()
    assert metrics["micro-f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-6)
    again = app(evaluate_message(arrays), context(cfg, **node))  # a second query in the same run: refused
    assert _reason(again) == Reason.EVALUATION_ALREADY_RELEASED


def test_a_crash_right_after_training_never_under_counts(tmp_path, monkeypatch):
    import clients.handlers as handlers
    from common.ledger import all_ledgers

    cfg = _cfg(tmp_path)

    def crash(*args, **kwargs):
        raise MemoryError("the machine died after the round was charged")

    monkeypatch.setattr(handlers, "train_local", crash)
    reply = _train(cfg, _global(cfg), _node(tmp_path))
    assert _reason(reply) == Reason.SITE_ERROR
    ledgers = all_ledgers(tmp_path / "site-state")
    assert len(ledgers) == 1 and sum(r.steps for r in ledgers[0].releases) > 0  # charged before training


def test_sites_hold_disjoint_patients(tmp_path):
    from clients.policy import SitePolicy
    from clients.site import session

    cfg = _cfg(tmp_path)
    patients = []
    for k in range(3):
        s = session(cfg, SitePolicy.from_node_config({"partition-id": k, "num-partitions": 3}, environ={}))
        patients.append({s.data.reports.patient_ids[i] for i in s.train})
    assert not (patients[0] & patients[1]) and not (patients[1] & patients[2]) and not (patients[0] & patients[2])
