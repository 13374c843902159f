"""The DP mechanism itself: unpredictable noise, non-finite gradients, empty batches, patient-level clipping."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import common.training as training
from common.adapters import get_adapter_state
from common.labels import MIMIC_CXR
from common.model import build_classifier
from common.privacy import PrivacyLedger
from common.tokens import TokenizedReports, make_collate
from common.training import MultiLabelLoss, make_unit_collate, train_local, train_step

CPU = torch.device("cpu")


def _reports(n=60, seed=0):
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1000, 5000, size=int(rng.integers(4, 12))) for _ in range(n)]
    labels = rng.integers(0, 2, size=(n, len(MIMIC_CXR))).astype(np.float32)
    return TokenizedReports(ids, labels)


def _train(epsilon, seed=0, steps=3):
    model = build_classifier("tiny", MIMIC_CXR.labels).model
    data = _reports()
    ledger = PrivacyLedger.plan(
        target_epsilon=epsilon, delta=1e-3, n_examples=len(data), batch_size=20, steps=steps, max_grad_norm=1.0
    )
    train_local(model, data, ledger=ledger, steps=steps, batch_size=20, lr=0.5, pad_id=0, device=CPU, seed=seed)
    return get_adapter_state(model), ledger


def test_private_runs_with_the_same_seed_draw_different_noise_and_non_private_runs_repeat():
    first, _ = _train(2.0)
    second, _ = _train(2.0)
    assert any(not np.array_equal(first[k], second[k]) for k in first)
    plain_a, _ = _train(float("inf"))
    plain_b, _ = _train(float("inf"))
    assert all(np.array_equal(plain_a[k], plain_b[k]) for k in plain_a)


def _private_optimizer(model, dataset, *, sigma=0.0, clip=1.0, batch_size=4, collate=None):
    from opacus import PrivacyEngine

    params = [p for p in model.parameters() if p.requires_grad]
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate or make_collate(0))
    engine = PrivacyEngine(accountant="prv")
    hooks, optimizer, loader = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(params, lr=1.0),
        data_loader=loader,
        noise_multiplier=sigma,
        max_grad_norm=clip,
        wrap_model=False,
        poisson_sampling=True,
    )
    return hooks, optimizer, engine


def test_a_report_with_an_infinite_gradient_leaves_the_noisy_sum_finite_and_contributes_nothing():
    data = _reports(4)
    poisoned = build_classifier("tiny", MIMIC_CXR.labels).model
    clean = build_classifier("tiny", MIMIC_CXR.labels).model
    bad_token = 4999
    data.ids[0][0] = bad_token
    with torch.no_grad():  # a crafted state: this one token's embedding overflows the forward pass
        poisoned.base_model.model.encoder.embeddings.word_embeddings.weight[bad_token] = float("inf")
    updates = []
    for model, batch in ((poisoned, [data[i] for i in range(4)]), (clean, [data[i] for i in range(1, 4)])):
        hooks, optimizer, _ = _private_optimizer(model, data)
        optimizer.expected_batch_size = 4
        before = get_adapter_state(model)
        _, dropped = train_step(model, make_collate(0)(batch), optimizer, MultiLabelLoss(), CPU, micro_batch=2)
        hooks.cleanup()
        after = get_adapter_state(model)
        updates.append({k: after[k] - before[k] for k in after})
        if model is poisoned:
            assert dropped == 1
    for name in updates[0]:
        assert np.isfinite(updates[0][name]).all(), name
        # the poisoned report counts as a zero gradient: the update is the other three reports' (σ = 0)
        np.testing.assert_allclose(updates[0][name], updates[1][name], atol=1e-6, err_msg=name)


def test_an_empty_batch_gets_noise_and_an_accountant_step():
    model = build_classifier("tiny", MIMIC_CXR.labels).model
    hooks, optimizer, engine = _private_optimizer(model, _reports(8), sigma=1.0)
    before = get_adapter_state(model)
    empty = (torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, len(MIMIC_CXR)))
    for batch in (empty, []):  # Opacus' collate gives [] when the very first batch is empty
        loss, _ = train_step(model, batch, optimizer, MultiLabelLoss(), CPU)
        assert loss is None
    hooks.cleanup()
    after = get_adapter_state(model)
    assert engine.accountant.history and sum(h[2] for h in engine.accountant.history) == 2
    assert all(not np.array_equal(after[k], before[k]) for k in after)  # pure noise moved every array


def test_an_empty_first_batch_trains_and_is_counted(monkeypatch):
    seed = next(
        s for s in range(1000) if not (torch.rand(30, generator=torch.Generator().manual_seed(s)) < 1 / 30).any()
    )
    monkeypatch.setattr(training, "secure_generator", lambda device="cpu": torch.Generator().manual_seed(seed))
    model = build_classifier("tiny", MIMIC_CXR.labels).model
    data = _reports(30)
    ledger = PrivacyLedger.plan(target_epsilon=5.0, delta=1e-3, n_examples=30, batch_size=1, steps=3, max_grad_norm=1.0)
    result = train_local(model, data, ledger=ledger, steps=3, batch_size=1, lr=0.1, pad_id=0, device=CPU, seed=0)
    assert result.steps == 3 and result.empty_batches >= 1 and ledger.steps_taken == 3


def _per_example_grads(model, dataset, index):
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = []
    for i in index:
        model.zero_grad()
        ids, y = dataset[i]
        logits = model(input_ids=ids[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits
        MultiLabelLoss()(logits, y[None]).backward()
        grads.append({n: p.grad.detach().clone() for n, p in trainable.items()})
    return grads


def test_patient_level_clipping_bounds_a_patients_whole_contribution():
    """Two patients (3 reports and 1 report): each patient's summed gradient is clipped to C as one."""
    from common.training import UnitReports

    torch.manual_seed(0)
    model = build_classifier("tiny", MIMIC_CXR.labels).model
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    data = _reports(4)
    units = [[0, 1, 2], [3]]
    reference = _per_example_grads(model, data, range(4))
    clip = 1e-3  # far below every gradient: every patient is clipped
    expected = {}
    for unit in units:
        summed = {n: sum(reference[i][n] for i in unit) for n in reference[0]}
        norm = torch.sqrt(sum((g**2).sum() for g in summed.values()))
        for n, g in summed.items():
            expected[n] = expected.get(n, 0) + g * min(1.0, clip / float(norm + 1e-6))
    units_data = UnitReports(data, units)
    hooks, optimizer, _ = _private_optimizer(model, units_data, clip=clip, batch_size=2, collate=make_unit_collate(0))
    optimizer.expected_batch_size = 1
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    train_step(
        model, make_unit_collate(0)([units_data[0], units_data[1]]), optimizer, MultiLabelLoss(), CPU, micro_batch=2
    )
    hooks.cleanup()
    total = 0.0
    for n, p in params.items():
        step = before[n] - p.detach()  # SGD at lr 1 over an expected batch of 1: the clipped sum itself
        torch.testing.assert_close(step, expected[n], atol=1e-7, rtol=1e-4)
        total += float((step**2).sum())
    assert total**0.5 <= 2 * clip + 1e-6  # two patients, each at most C


def test_micro_batches_never_split_a_patient():
    owners = torch.tensor([0, 0, 0, 1, 2, 2])
    mask = torch.ones(6, 5, dtype=torch.long)
    pieces = training._pieces(mask, owners, micro_batch=2)
    for piece in pieces:
        for unit in set(owners[piece].tolist()):
            assert set(torch.nonzero(owners == unit).flatten().tolist()) <= set(piece.tolist())
    assert sorted(torch.cat(pieces).tolist()) == list(range(6))


@pytest.mark.parametrize("unit", ["report", "patient"])
def test_train_local_records_every_step_at_either_unit(unit):
    model = build_classifier("tiny", MIMIC_CXR.labels).model
    data = _reports(40)
    units = [list(range(i, min(i + 3, 40))) for i in range(0, 40, 3)] if unit == "patient" else None
    n = len(units) if units else 40
    ledger = PrivacyLedger.plan(target_epsilon=3.0, delta=1e-3, n_examples=n, batch_size=5, steps=4, max_grad_norm=1.0)
    result = train_local(
        model, data, ledger=ledger, steps=4, batch_size=5, lr=0.1, pad_id=0, device=CPU, seed=0, units=units
    )
    assert (
        result.steps == 4 and ledger.steps_taken == 4 and 0.95 * 3.0 < ledger.spent() <= 3.0
    )  # the planned steps spend the budget


def test_a_noise_share_is_a_clipped_sum_plus_noise_of_variance_sigma2_c2_over_m():
    """Distributed DP: with σ = 0 the share is the sum of the clipped per-example gradients of a Poisson
    sample (all reports at q = 1); with noise, m shares add up to the variance of one centralized step."""
    from common.training import private_gradient_sum

    model = build_classifier("tiny", MIMIC_CXR.labels).model
    data = _reports(6)
    clip = 1e-3
    exact = private_gradient_sum(
        model, data, noise_multiplier=0.0, noise_share=1, sample_rate=1.0, max_grad_norm=clip, pad_id=0, device=CPU
    )
    reference = _per_example_grads(model, data, range(6))
    names = sorted(exact)
    for name in names:
        expected = sum(
            g[name] * min(1.0, clip / float(torch.sqrt(sum((v**2).sum() for v in g.values())) + 1e-6))
            for g in reference
        )
        np.testing.assert_allclose(exact[name], expected.double().numpy(), atol=1e-9, rtol=1e-4)
    sigma, m = 3.0, 4
    shares = [
        private_gradient_sum(
            model,
            data,
            noise_multiplier=sigma,
            noise_share=m,
            sample_rate=1.0,
            max_grad_norm=clip,
            pad_id=0,
            device=CPU,
        )
        for _ in range(m)
    ]
    total = np.concatenate([sum(s[n] for s in shares).ravel() - m * exact[n].ravel() for n in names])
    assert total.std() == pytest.approx(sigma * clip, rel=0.05)  # m shares of σ²C²/m: one step's σC
    assert all(np.isfinite(v).all() and v.dtype == np.float64 for v in shares[0].values())
    after = private_gradient_sum(
        model, data, noise_multiplier=0.0, noise_share=1, sample_rate=1.0, max_grad_norm=clip, pad_id=0, device=CPU
    )
    assert all(np.allclose(after[n], exact[n]) for n in names)  # the model itself did not move
