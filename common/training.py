"""The one training step, the one local training loop and the one prediction function.

Centralized training is this loop run once over the pooled reports; a federated site runs the same
loop each round on its own reports, with its `PrivacyLedger` carried between rounds.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from common.privacy import PrivacyLedger, steps_per_epoch_for
from common.runtime import check_stop
from common.tokens import TokenizedReports, eval_loader, make_collate

GRAD_SAMPLE_MODES = ("hooks", "functorch", "ghost")


class MultiLabelLoss(torch.nn.Module):
    """Binary cross-entropy per label, averaged over labels: one loss per report.

    NaN targets (uncertain labels under the `ignore` policy) contribute nothing. `reduction`
    follows torch's convention; ghost clipping needs `none` (one value per example).
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(targets)
        losses = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.float(), torch.nan_to_num(targets, nan=0.0), reduction="none")
        per_example = (losses * known).sum(dim=1) / targets.shape[1]
        if self.reduction == "none":
            return per_example
        return per_example.sum() if self.reduction == "sum" else per_example.mean()


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """Plain SGD by default. Under DP, Adam divides each coordinate by its noise level, so a site
    with a smaller batch (more noise per step) moves less along the shared signal, and FedAvg of
    such updates underfits; SGD's update is signal + noise, which averaging across sites keeps.
    No momentum: its state would restart every round at a site and lag behind the global model."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


@dataclass
class TrainResult:
    steps: int
    examples: int  # examples actually seen (Poisson batches vary in size)
    seconds: float
    mean_loss: float


def _chunks(attention_mask: torch.Tensor, micro_batch: int):
    """Indices of a batch sorted by length and cut into pieces of at most `micro_batch` reports."""
    order = torch.argsort(attention_mask.sum(dim=1), stable=True)
    return [order[i : i + micro_batch] for i in range(0, len(order), micro_batch)] if micro_batch else [order]


def train_step(model, batch, optimizer, criterion, device, *, micro_batch: int = 0, autocast_dtype=None) -> float | None:
    """One optimizer step on one (Poisson-sampled) batch: forward, loss, backward, clip, noise, update.

    With `micro_batch`, the batch is sorted by length and run in pieces, each padded only to its
    own longest report, with one optimizer step at the end. Per-example gradients do not depend on
    how a batch is cut, so this changes the speed and nothing else: Opacus clips each piece's
    per-example gradients into the same sum (`signal_skip_step` defers the noise and the
    accountant's step to the last piece), and without DP the piece losses add up to the batch mean.
    """
    input_ids, attention_mask, targets = batch
    if len(input_ids) == 0:  # an empty Poisson batch (probability (1-q)^N, negligible at our N): skip it
        return None
    private = hasattr(optimizer, "signal_skip_step")
    optimizer.zero_grad(set_to_none=True)
    pieces = _chunks(attention_mask, micro_batch)
    total = 0.0
    for k, index in enumerate(pieces):
        longest = int(attention_mask[index].sum(dim=1).max())
        ids = input_ids[index, :longest].to(device, non_blocking=True)
        mask = attention_mask[index, :longest].to(device, non_blocking=True)
        y = targets[index].to(device, non_blocking=True)
        autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        with autocast:
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss = criterion(logits.float(), y)
        weight = len(index) / len(input_ids)
        total += float(loss.detach()) * weight
        if private or len(pieces) == 1:
            loss.backward()
        else:
            (loss * weight).backward()
        if private and k < len(pieces) - 1:
            optimizer.signal_skip_step(do_skip=True)
            optimizer.step()  # clips and accumulates this piece; no noise, no update, no accountant step
            optimizer.zero_grad(set_to_none=True)
    optimizer.step()
    return total


def train_local(model, dataset: TokenizedReports, *, ledger: PrivacyLedger, steps: int, batch_size: int, lr: float,
                pad_id: int, device: torch.device, seed: int, grad_sample_mode: str = "hooks",
                optimizer: str = "sgd", micro_batch: int = 16, autocast_dtype=None, progress=None) -> TrainResult:
    """Train the trainable parameters of `model` for `steps` optimizer steps on `dataset`.

    Private when `ledger.private`: Opacus clips each example's gradient to `ledger.max_grad_norm`,
    adds N(0, σ²C²) noise, samples batches by Poisson sampling at `ledger.sample_rate`, and the
    ledger's history grows by the steps taken. The noise multiplier is the ledger's, calibrated
    for the whole run; this function never re-calibrates. The guarantee holds only if `dataset` is
    the data the ledger was planned for.
    """
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(optimizer, params, lr)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=make_collate(pad_id))
    criterion = MultiLabelLoss()
    engine = hooks = None
    model.train()  # Opacus refuses a model in eval mode (the previous round's evaluation left it there)
    torch.manual_seed(seed)  # Poisson sampling and DP noise draw from torch's default generator
    if ledger.private:
        from opacus import PrivacyEngine

        if steps_per_epoch_for(len(dataset), batch_size) != round(1 / ledger.sample_rate):
            raise ValueError("dataset size or batch size differ from the ones this ledger was planned for")
        engine = PrivacyEngine(accountant=ledger.accountant)
        engine.accountant.history = list(ledger.history)
        wrapped = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, criterion=MultiLabelLoss(),
            noise_multiplier=ledger.noise_multiplier, max_grad_norm=ledger.max_grad_norm, poisson_sampling=True,
            grad_sample_mode=grad_sample_mode, wrap_model=False, noise_generator=None)
        if grad_sample_mode == "ghost":
            hooks, optimizer, criterion, loader = wrapped
        else:
            hooks, optimizer, loader = wrapped
    started, planned, steps, examples, losses = time.perf_counter(), steps, 0, 0, []
    try:
        while steps < planned:  # whole epochs of the Poisson loader, cut where the step budget ends
            for batch in loader:
                check_stop()
                loss = train_step(model, batch, optimizer, criterion, device,
                                  micro_batch=0 if grad_sample_mode == "ghost" else micro_batch, autocast_dtype=autocast_dtype)
                steps += 1
                examples += len(batch[0])
                if loss is not None:
                    losses.append(loss)
                if progress is not None:
                    progress(len(batch[0]), loss)
                if steps == planned:
                    break
    finally:
        if hooks is not None:
            hooks.cleanup()  # removes the hooks and every per-sample attribute Opacus added
        for p in params:
            p.grad = None
    if engine is not None:
        ledger.record(engine.accountant.history)
    return TrainResult(steps, examples, time.perf_counter() - started, float(np.mean(losses)) if losses else float("nan"))


@torch.no_grad()
def predict_probs(model, dataset: TokenizedReports, *, pad_id: int, device: torch.device, batch_size: int = 128,
                  autocast_dtype=None) -> np.ndarray:
    """Sigmoid probabilities (n, L) in the order of `dataset`."""
    model.eval()
    loader = eval_loader(dataset, batch_size=batch_size, pad_id=pad_id)
    order = [i for batch in loader.batch_sampler for i in batch]
    outputs = []
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    for input_ids, attention_mask, _ in loader:
        with autocast:
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        outputs.append(torch.sigmoid(logits.float()).cpu().numpy())
    probs = np.concatenate(outputs) if outputs else np.zeros((0, dataset.labels.shape[1]), np.float32)
    result = np.empty_like(probs)
    result[order] = probs
    return result
