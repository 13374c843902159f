"""The training step, the loss and the prediction function, checked against per-example computations."""

import numpy as np
import pytest
import torch

from common.labels import MIMIC_CXR
from common.model import build_classifier
from common.tokens import TokenizedReports, make_collate
from common.training import MultiLabelLoss, make_optimizer, predict_probs, train_step

CPU = torch.device("cpu")
LENGTHS = (9, 3, 12, 5, 11, 4, 7)  # not in length order: batching by length must not reorder the rows


def _model(seed=0):
    """A tiny random-init classifier whose LoRA and head are far from their start, so every report gets its own logits."""
    torch.manual_seed(seed)
    model = build_classifier("tiny", MIMIC_CXR.labels).model
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)
    return model


def _reports(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1000, 5000, size=n) for n in lengths]
    labels = rng.integers(0, 2, size=(len(lengths), len(MIMIC_CXR))).astype(np.float32)
    return TokenizedReports(ids, labels)


def test_predict_probs_returns_rows_in_dataset_order():
    model, data = _model(), _reports()
    probs = predict_probs(model, data, pad_id=0, device=CPU, batch_size=3)  # three length-sorted batches
    model.eval()
    with torch.no_grad():  # each report alone: no padding, no batch, no order to get wrong
        alone = np.stack(
            [
                torch.sigmoid(
                    model(input_ids=ids[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits[0]
                ).numpy()
                for ids, _ in (data[i] for i in range(len(data)))
            ]
        )
    assert probs.shape == (len(LENGTHS), len(MIMIC_CXR))
    np.testing.assert_allclose(probs, alone, atol=1e-5, rtol=0)
    distances = np.abs(alone[:, None, :] - alone[None, :, :]).max(axis=2)
    assert distances[~np.eye(len(alone), dtype=bool)].min() > 1e-3  # any swap of two rows would be seen


def _bce(logit: float, target: float) -> float:
    p = 1.0 / (1.0 + np.exp(-logit))
    return -(target * np.log(p) + (1 - target) * np.log(1 - p))


def test_multilabel_loss_leaves_nan_targets_out():
    g = torch.Generator().manual_seed(0)
    n, n_labels = 5, 4
    logits = torch.randn(n, n_labels, generator=g)
    targets = torch.randint(0, 2, (n, n_labels), generator=g).float()
    targets[0, 1] = targets[2, 3] = targets[3, 0] = float("nan")
    targets[4] = float("nan")  # a report with no known label contributes nothing at all
    known = [(i, j) for i in range(n) for j in range(n_labels) if not np.isnan(float(targets[i, j]))]
    # Binary cross-entropy per known cell, summed per report, averaged over all labels (one loss per report).
    per_report = [
        sum(_bce(float(logits[i, j]), float(targets[i, j])) for i2, j in known if i2 == i) / n_labels for i in range(n)
    ]
    torch.testing.assert_close(
        MultiLabelLoss(reduction="none")(logits, targets),
        torch.tensor(per_report, dtype=torch.float32),
        atol=1e-6,
        rtol=1e-5,
    )
    assert float(MultiLabelLoss(reduction="sum")(logits, targets)) == pytest.approx(sum(per_report), rel=1e-5)

    x = logits.clone().requires_grad_(True)
    loss = MultiLabelLoss()(x, targets)
    assert float(loss) == pytest.approx(np.mean(per_report), rel=1e-5)
    loss.backward()
    nan = torch.isnan(targets)
    assert torch.equal(x.grad[nan], torch.zeros(int(nan.sum())))  # no gradient at all where the label is unknown
    expected = (torch.sigmoid(logits) - torch.nan_to_num(targets)) / (n * n_labels)
    torch.testing.assert_close(x.grad[~nan], expected[~nan], atol=1e-7, rtol=1e-5)
    moved = torch.where(nan, logits + 100.0, logits)  # whatever the model says about an unknown label
    assert float(MultiLabelLoss()(moved, targets)) == pytest.approx(float(loss), rel=1e-6)


@pytest.mark.parametrize("micro_batch", [2, 3])
def test_non_private_micro_batches_give_the_full_batch_update(micro_batch):
    """Pieces of unequal size (7 reports in pieces of 2: 2, 2, 2, 1) must add up to the batch mean, not the mean of pieces."""
    data = _reports()
    batch = make_collate(0)([data[i] for i in range(len(data))])
    updates, losses = [], []
    for micro in (0, micro_batch):
        model = _model()
        optimizer = make_optimizer(
            "sgd", model, lr=1.0
        )  # SGD: the step is the gradient itself (Adam would hide its scale)
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        loss, dropped = train_step(model, batch, optimizer, MultiLabelLoss(), CPU, micro_batch=micro)
        assert dropped == 0
        losses.append(loss)
        updates.append({n: (p.detach() - before[n]).numpy() for n, p in model.named_parameters() if p.requires_grad})
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for name, full in updates[0].items():
        np.testing.assert_allclose(updates[1][name], full, atol=1e-5, rtol=1e-5, err_msg=name)
    assert max(np.abs(u).max() for u in updates[0].values()) > 1e-3  # the step moved the parameters
