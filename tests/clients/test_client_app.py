"""The ClientApp called with real Flower messages: what leaves a site, and its privacy ledger."""

import json

import numpy as np
import pytest
from flwr.app import RecordDict

from clients.client_app import app
from common.adapters import adapter_names, full_model_bytes, get_adapter_state, state_bytes
from common.config import RunConfig
from common.labels import MIMIC_CXR
from common.model import LoraSpec, build_classifier
from tests.flower_helpers import array_record, context, evaluate_message, train_message


def _cfg(tmp_path, **changes):
    base = dict(model="tiny", synthetic_reports=300, batch_size=16, delta=1e-3, rounds=3, local_epochs=1, epsilon=2.0,
                aggregation="fedavg", out=str(tmp_path / "run"))
    return RunConfig(**{**base, **changes})


def _global(cfg):
    return get_adapter_state(build_classifier(cfg.model, MIMIC_CXR.labels, lora=LoraSpec(frozen_a=cfg.aggregation == "ffa")).model)


@pytest.fixture
def site_state(tmp_path):
    return {"state-dir": str(tmp_path / "site-state")}


def test_reply_holds_only_adapter_arrays_and_scalar_metrics(tmp_path, site_state):
    cfg = _cfg(tmp_path)
    arrays = _global(cfg)
    reply = app(train_message(arrays), context(cfg, **site_state))
    content = reply.content
    assert set(content.array_records) == {"arrays"} and set(content.metric_records) == {"metrics"} and not content.config_records
    sent = {k: v.numpy() for k, v in content["arrays"].items()}
    reference = build_classifier("tiny", MIMIC_CXR.labels).model
    assert list(sent) == adapter_names(reference)  # exactly the PEFT adapter state: LoRA A/B + head
    assert all(".lora_A." in k or ".lora_B." in k or "classifier" in k for k in sent)
    assert all(v.dtype == np.float32 and v.shape == arrays[k].shape for k, v in sent.items())
    n_train = content["metrics"]["num-examples"]
    assert all(v.shape[0] != n_train for v in sent.values())  # nothing per example
    for key, value in content["metrics"].items():
        assert isinstance(value, (int, float)), key  # scalars only: no text, no token ids, no lists
    assert n_train > 16 and content["metrics"]["declined"] == 0.0  # examples, not batches
    assert not all(np.array_equal(sent[k], arrays[k]) for k in sent)  # it trained


def test_minilm_sends_under_one_percent_of_the_model():
    model = build_classifier("minilm", MIMIC_CXR.labels).model
    record = array_record(get_adapter_state(model))
    wire = sum(len(a.data) for a in record.values())
    assert wire < 0.01 * full_model_bytes(model)
    ffa = build_classifier("minilm", MIMIC_CXR.labels, lora=LoraSpec(frozen_a=True)).model
    assert state_bytes(get_adapter_state(ffa)) < 0.55 * state_bytes(get_adapter_state(model))  # FFA-LoRA: about half


def test_ledger_accumulates_over_rounds_then_the_site_declines(tmp_path, site_state):
    cfg = _cfg(tmp_path, rounds=2)
    arrays = _global(cfg)
    ctx = context(cfg, **site_state)
    spent = []
    for server_round in (1, 2):
        reply = app(train_message(arrays, server_round), ctx)
        spent.append(reply.content["metrics"]["epsilon-spent"])
        arrays = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    assert 0 < spent[0] < spent[1] <= cfg.epsilon and spent[1] > 0.9 * cfg.epsilon
    ledger = json.loads(ctx.state.config_records["privacy-ledger"]["json"])
    # σ fixed for the whole run (the accountant merges equal (σ, q) entries and adds their steps)
    assert all(h[0] == ledger["noise_multiplier"] for h in ledger["history"])
    assert sum(h[2] for h in ledger["history"]) == ledger["planned_steps"]
    third = app(train_message(arrays, 3), ctx)  # beyond the planned rounds: the budget cannot afford it
    assert third.content["metrics"]["declined"] == 1.0 and "arrays" not in third.content.array_records
    assert third.content["metrics"]["epsilon-spent"] == pytest.approx(spent[1])


def test_ledger_survives_a_lost_context_through_the_site_file(tmp_path, site_state):
    cfg = _cfg(tmp_path, rounds=2)
    arrays = _global(cfg)
    first = app(train_message(arrays, 1), context(cfg, **site_state))
    # A restarted SuperNode (or a resumed run) has an empty context.state: ε must not reset.
    second = app(train_message(arrays, 2), context(cfg, state=RecordDict(), **site_state))
    assert second.content["metrics"]["epsilon-spent"] > first.content["metrics"]["epsilon-spent"]
    assert second.content["metrics"]["steps"] == 2 * first.content["metrics"]["steps"]


def test_ffa_lora_sends_no_a_and_keeps_a_unchanged(tmp_path, site_state):
    from clients.site import session
    from common.data import Site

    cfg = _cfg(tmp_path, aggregation="ffa")
    arrays = _global(cfg)
    a_before = {n: p.detach().clone() for n, p in build_classifier("tiny", MIMIC_CXR.labels).model.named_parameters() if ".lora_A." in n}
    reply = app(train_message(arrays), context(cfg, **site_state))
    sent = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    assert sent and not any(".lora_A." in k for k in sent) and any(".lora_B." in k for k in sent)
    trained = session(cfg, Site(0, 3, "site-0")).classifier.model
    for name, param in trained.named_parameters():
        if ".lora_A." in name:
            assert np.array_equal(param.detach().numpy(), a_before[name].numpy()), name


def test_evaluate_reports_metrics_on_the_site_test_split(tmp_path, site_state):
    cfg = _cfg(tmp_path)
    reply = app(evaluate_message(_global(cfg)), context(cfg, partition=1, **site_state))
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] > 0 and 0 <= metrics["weighted-f1"] <= 1 and metrics["site-index"] == 1
    assert not reply.content.array_records


def test_sites_hold_disjoint_patients(tmp_path):
    from clients.site import session
    from common.data import Site

    cfg = _cfg(tmp_path)
    patients = []
    for k in range(3):
        s = session(cfg, Site(k, 3, f"site-{k}"))
        patients.append({s.data.reports.patient_ids[i] for i in s.train})
    assert not (patients[0] & patients[1]) and not (patients[1] & patients[2]) and not (patients[0] & patients[2])
