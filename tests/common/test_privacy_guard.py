"""Guard against silent corruption of LoRA updates under Opacus (reported for some peft/opacus pairs).

For tiny BERT and tiny ALBERT (whose layers share weights) with LoRA and the mean-pooling head,
Opacus' per-sample gradients must equal per-example autograd gradients for every trainable
parameter, in a padded batch of reports of different lengths.
"""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from common.adapters import get_adapter_state
from common.guard import autocast_is_safe, choose_grad_sample_mode, per_sample_gradient_error
from common.labels import MIMIC_CXR
from common.model import build_classifier
from common.privacy import PrivacyLedger
from common.tokens import TokenizedReports, make_collate
from common.training import MultiLabelLoss, train_local, train_step

LENGTHS = (5, 9, 12, 7)


def _batch(n_labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(1000, 5000, (n,), generator=g) for n in LENGTHS]
    targets = torch.randint(0, 2, (len(LENGTHS), n_labels), generator=g).float()
    return make_collate(0)(list(zip(ids, targets, strict=True))), ids, targets


@pytest.mark.parametrize("model_name", ["tiny", "tiny-albert"])
@pytest.mark.parametrize("mode", ["hooks", "functorch"])
def test_opacus_per_sample_gradients_equal_per_example_autograd(model_name, mode):
    model = build_classifier(model_name, MIMIC_CXR.labels).model
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert (
        any(".lora_A." in n for n in names)
        and any(".lora_B." in n for n in names)
        and any("classifier" in n for n in names)
    )
    assert per_sample_gradient_error(model, mode) < 1e-6


@pytest.mark.parametrize("mode", ["hooks", "functorch"])
def test_bf16_autocast_keeps_per_sample_gradients_within_tolerance(mode):
    """Mixed precision is used for DP only where this holds (checked at start-up on CUDA)."""
    model = build_classifier("tiny", MIMIC_CXR.labels).model
    error = per_sample_gradient_error(model, mode, autocast_dtype=torch.bfloat16)
    assert 0 < error < 0.05  # not bit-exact (bf16), but close
    assert autocast_is_safe(model, mode, torch.bfloat16) and not autocast_is_safe(model, mode, None)


def test_the_guard_catches_cross_example_interference(monkeypatch):
    """A loss that mixes examples (a batch-wide statistic) breaks per-example gradients: the guard must fail."""
    import common.guard

    class BatchCoupledLoss(MultiLabelLoss):
        def forward(self, logits, targets):
            return super().forward(logits - logits.mean(dim=0, keepdim=True), targets)

    monkeypatch.setattr(common.guard, "MultiLabelLoss", BatchCoupledLoss)
    model = build_classifier("tiny", MIMIC_CXR.labels).model
    assert per_sample_gradient_error(model, "hooks") > 1e-3
    with pytest.raises(RuntimeError, match="refusing to train under DP"):
        choose_grad_sample_mode(model, "auto")


def test_auto_mode_picks_the_fastest_mode_that_passes():
    model = build_classifier("tiny", MIMIC_CXR.labels).model
    assert choose_grad_sample_mode(model, "auto") == "hooks"
    assert choose_grad_sample_mode(model, "ghost") == "ghost"  # an explicit choice is respected


def _dp_setup(micro_chunks, seed=0):
    from opacus import PrivacyEngine

    torch.manual_seed(seed)
    model = build_classifier("tiny", MIMIC_CXR.labels).model
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    params = [p for p in model.parameters() if p.requires_grad]
    dataset = TokenizedReports([np.arange(1, n + 1) for n in LENGTHS], np.zeros((len(LENGTHS), len(MIMIC_CXR))))
    loader = DataLoader(dataset, batch_size=len(LENGTHS), collate_fn=make_collate(0))
    engine = PrivacyEngine(accountant="prv")
    hooks, optimizer, _ = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(params, lr=1.0),
        data_loader=loader,
        noise_multiplier=0.0,
        max_grad_norm=0.05,
        wrap_model=False,
    )
    return model, optimizer, hooks, engine


def test_micro_batches_give_the_same_clipped_update_and_one_accountant_step():
    (batch, _, _) = _batch(len(MIMIC_CXR), seed=1)
    states = []
    for micro in (0, 1, 3):
        model, optimizer, hooks, engine = _dp_setup(micro)
        before = get_adapter_state(model)
        train_step(model, batch, optimizer, MultiLabelLoss(), torch.device("cpu"), micro_batch=micro)
        after = get_adapter_state(model)
        hooks.cleanup()
        assert engine.accountant.history == [(0.0, 1.0, 1)]  # one step, however the batch was cut
        states.append({k: after[k] - before[k] for k in after})
    for other in states[1:]:
        for name in states[0]:
            np.testing.assert_allclose(other[name], states[0][name], atol=1e-7, rtol=1e-5, err_msg=name)
    assert any(np.abs(v).max() > 0 for v in states[0].values())


def test_a_dp_step_changes_the_adapter_and_nothing_else(small_reports, tiny_classifier):
    model = tiny_classifier.model
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapter_before = get_adapter_state(model)
    ids = tiny_classifier.tokenizer(small_reports.texts[:200], truncation=True, max_length=64)["input_ids"]
    dataset = TokenizedReports([np.asarray(x) for x in ids], small_reports.labels[:200])
    ledger = PrivacyLedger.plan(
        target_epsilon=1.0, delta=1e-3, n_examples=200, batch_size=50, steps=4, max_grad_norm=1.0
    )
    result = train_local(
        model, dataset, ledger=ledger, steps=4, batch_size=50, lr=1e-2, pad_id=0, device=torch.device("cpu"), seed=0
    )
    assert result.steps == 4 and ledger.steps_taken == 4 and 0.95 < ledger.spent() <= 1.0
    after = get_adapter_state(model)
    for name in adapter_before:  # every LoRA A, B and head array moved
        assert not np.allclose(after[name], adapter_before[name]), name
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, base_before[name]), name
        assert not hasattr(p, "grad_sample") or p.grad_sample is None  # Opacus cleaned up
    assert math.isfinite(result.mean_loss)
