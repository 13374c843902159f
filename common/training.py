"""The one training step, the one local training loop and the one prediction function.

Centralized training is this loop run once over the pooled reports; a federated site runs the same
loop each round on its own reports, with its `PrivacyLedger` carried between rounds.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.privacy import PrivacyLedger, secure_generator, steps_per_epoch_for
from common.runtime import check_stop
from common.tokens import TokenizedReports, eval_loader, make_collate


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
            logits.float(), torch.nan_to_num(targets, nan=0.0), reduction="none"
        )
        per_example = (losses * known).sum(dim=1) / targets.shape[1]
        if self.reduction == "none":
            return per_example
        return per_example.sum() if self.reduction == "sum" else per_example.mean()


def make_optimizer(name: str, model, lr: float, head_lr: float | None = None) -> torch.optim.Optimizer:
    """Adam or plain SGD over the trainable parameters, the head at `head_lr` when given.

    Under DP, SGD's update is signal + noise, which averaging across sites keeps; no momentum: its
    state would restart every round at a site and lag behind the global model.
    """
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n]
    head = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" in n]
    groups = [g for g in ({"params": lora, "lr": lr}, {"params": head, "lr": head_lr or lr}) if g["params"]]
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


@dataclass
class TrainResult:
    steps: int
    examples: int  # reports actually seen (Poisson batches vary in size); stays at the site
    seconds: float
    mean_loss: float  # stays at the site: a loss is not released under DP
    empty_batches: int = 0
    dropped_gradients: int = 0  # per-example gradients that were not finite and were zeroed before clipping
    best_step: int | None = None  # non-private early stopping: the step whose parameters were kept
    validation: list = field(default_factory=list)  # non-private: (step, validation loss)


# ---------------------------------------------------------------- privacy units


class UnitReports(Dataset):
    """Privacy units (patients) as examples: item u is the list of unit u's reports.

    With patient-level DP, Poisson sampling picks patients and Opacus clips the sum of a patient's
    per-report gradients (see `train_step`), so the guarantee covers everything one patient
    contributed (user-level DP-SGD, McMahan et al. 2018, "Learning differentially private
    recurrent language models").
    """

    def __init__(self, reports: TokenizedReports, units: list):
        self.reports, self.units = reports, [list(map(int, u)) for u in units]

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, u):
        return [self.reports[i] for i in self.units[u]]


def make_unit_collate(pad_id: int):
    """Collate patients: their reports padded as one batch, plus the patient of each report."""
    collate = make_collate(pad_id)

    def unit_collate(items):
        reports = [r for unit in items for r in unit]
        owners = torch.tensor([k for k, unit in enumerate(items) for _ in unit], dtype=torch.long)
        return (*collate(reports), owners)

    return unit_collate


# ---------------------------------------------------------------- one step


def _is_empty(batch) -> bool:
    """An empty Poisson batch, in any of the shapes Opacus' empty-batch collate produces."""
    return len(batch) == 0 or len(batch[0]) == 0


def _pieces(attention_mask: torch.Tensor, owners: torch.Tensor | None, micro_batch: int):
    """Indices of a batch sorted by length and cut into pieces of at most `micro_batch` reports;
    with `owners`, a privacy unit is never cut (its reports must be clipped together)."""
    lengths = attention_mask.sum(dim=1)
    if owners is None:
        order = torch.argsort(lengths, stable=True)
        return [order[i : i + micro_batch] for i in range(0, len(order), micro_batch)] if micro_batch else [order]
    units = [torch.nonzero(owners == u).flatten() for u in torch.unique(owners)]
    units.sort(key=lambda idx: int(lengths[idx].max()))
    pieces, current = [], []
    for idx in units:
        if current and micro_batch and sum(len(c) for c in current) + len(idx) > micro_batch:
            pieces.append(torch.cat(current))
            current = []
        current.append(idx)
    return pieces + [torch.cat(current)] if current else pieces


def _sanitize_and_fold(optimizer, owners: torch.Tensor | None) -> int:
    """Zero every example whose per-sample gradient is not finite, then (patient level) sum each
    unit's rows into one, so that Opacus clips a unit's whole contribution to C.

    A crafted adapter can make one report's gradient infinite; Opacus' clip factor times inf is
    NaN, and one NaN spreads through the noisy sum. A zeroed example contributes 0 ≤ C, so the
    sensitivity argument is untouched. Returns the number of examples zeroed.
    """
    params = [p for p in optimizer.params if getattr(p, "grad_sample", None) is not None]
    if not params:
        return 0
    samples = [p.grad_sample if isinstance(p.grad_sample, torch.Tensor) else torch.cat(p.grad_sample) for p in params]
    bad = torch.zeros(len(samples[0]), dtype=torch.bool, device=samples[0].device)
    for g in samples:
        bad |= ~torch.isfinite(g.reshape(len(g), -1)).all(dim=1)
    for p, g in zip(params, samples, strict=True):
        g = torch.where(bad.view(-1, *([1] * (g.dim() - 1))), torch.zeros((), dtype=g.dtype, device=g.device), g)
        if owners is not None:
            local = torch.unique(owners, return_inverse=True)[1].to(g.device)
            g = torch.zeros((int(local.max()) + 1, *g.shape[1:]), dtype=g.dtype, device=g.device).index_add_(
                0, local, g
            )
        p.grad_sample = g
    return int(bad.sum())


def _empty_private_step(optimizer) -> None:
    """An empty Poisson batch is a step like any other: zero clipped sum, full noise, an accountant step."""
    for p in optimizer.params:
        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
    optimizer.step()


def autocast(device: torch.device, dtype):
    """Mixed-precision autocast where `dtype` is given, else nothing."""
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def train_step(
    model, batch, optimizer, criterion, device, *, micro_batch: int = 0, autocast_dtype=None
) -> tuple[float | None, int]:
    """One optimizer step on one (Poisson-sampled) batch: forward, loss, backward, clip, noise, update.

    Returns (mean loss or None for an empty batch, examples whose gradient was zeroed). With
    `micro_batch`, the batch is sorted by length and run in pieces, each padded only to its own
    longest report, with one optimizer step at the end. Per-example gradients do not depend on how
    a batch is cut, so this changes the speed and nothing else: Opacus clips each piece's
    per-example gradients into the same sum (`signal_skip_step` defers the noise and the
    accountant's step to the last piece), and without DP the piece losses add up to the batch mean.
    A batch of four tensors carries the privacy unit of each report (patient-level DP).
    """
    private = hasattr(optimizer, "signal_skip_step")
    optimizer.zero_grad(set_to_none=True)
    if _is_empty(batch):
        if private:
            _empty_private_step(optimizer)
        return None, 0
    input_ids, attention_mask, targets = batch[:3]
    owners = batch[3] if len(batch) > 3 else None
    pieces = _pieces(attention_mask, owners, micro_batch)
    total, dropped = 0.0, 0
    for k, index in enumerate(pieces):
        longest = int(attention_mask[index].sum(dim=1).max())
        ids = input_ids[index, :longest].to(device, non_blocking=True)
        mask = attention_mask[index, :longest].to(device, non_blocking=True)
        y = targets[index].to(device, non_blocking=True)
        with autocast(device, autocast_dtype):
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss = criterion(logits.float(), y)
        weight = len(index) / len(input_ids)
        total += float(loss.detach()) * weight
        if private or len(pieces) == 1:
            loss.backward()
        else:
            (loss * weight).backward()
        if private:
            dropped += _sanitize_and_fold(optimizer, None if owners is None else owners[index])
            if k < len(pieces) - 1:
                optimizer.signal_skip_step(do_skip=True)
                optimizer.step()  # clips and accumulates this piece; no noise, no update, no accountant step
                optimizer.zero_grad(set_to_none=True)
    optimizer.step()
    return total, dropped


# ---------------------------------------------------------------- the loop


def _trainable_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def train_local(
    model,
    dataset: TokenizedReports,
    *,
    ledger: PrivacyLedger,
    steps: int,
    batch_size: int,
    lr: float,
    pad_id: int,
    device: torch.device,
    seed: int,
    grad_sample_mode: str = "hooks",
    optimizer: str = "sgd",
    head_lr: float | None = None,
    units: list | None = None,
    micro_batch: int = 16,
    autocast_dtype=None,
    progress=None,
    validate=None,
    eval_every: int = 0,
    patience: int = 0,
    on_noise=None,
    on_step=None,
) -> TrainResult:
    """Train the trainable parameters of `model` for up to `steps` optimizer steps on `dataset`.

    Private when `ledger.private`: Poisson sampling at `ledger.sample_rate` over reports (or over
    `units`, lists of report indices, for patient-level DP), each example's gradient clipped to
    `ledger.max_grad_norm`, N(0, σ²C²) noise, and the ledger's history grows by every step taken,
    empty batches included. The noise multiplier is the ledger's, calibrated for the whole run; this
    function never re-calibrates. Noise and sampling draw from OS entropy (`secure_generator`),
    never from `seed`; the guarantee holds only if `dataset` is the data the ledger was planned for.
    `on_noise(optimizer)` runs after clipping and before the noise, `on_step(optimizer)` after each step
    (the privacy audit's gradient canaries and its observer).

    Without DP, `seed` fixes the batches (bit-reproducible), and with `validate` (a function that
    returns a validation loss) the loop stops early after `patience` evaluations without
    improvement, every `eval_every` steps, and keeps the best parameters.
    """
    private = ledger.private
    sample_source = secure_generator() if private else torch.Generator().manual_seed(seed)
    data = UnitReports(dataset, units) if units is not None else dataset
    collate = make_unit_collate(pad_id) if units is not None else make_collate(pad_id)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=sample_source, collate_fn=collate)
    optim = make_optimizer(optimizer, model, lr, head_lr)
    criterion = MultiLabelLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    engine = hooks = None
    model.train()  # Opacus refuses a model in eval mode (the previous round's evaluation left it there)
    if not private:
        torch.manual_seed(seed)  # non-private runs stay bit-reproducible
    else:
        from opacus import PrivacyEngine

        if steps_per_epoch_for(len(data), batch_size) != round(1 / ledger.sample_rate):
            raise ValueError("dataset size or batch size differ from the ones this ledger was planned for")
        engine = PrivacyEngine(accountant=ledger.accountant)
        engine.accountant.history = list(ledger.history)
        wrapped = engine.make_private(
            module=model,
            optimizer=optim,
            data_loader=loader,
            criterion=MultiLabelLoss(),
            noise_multiplier=ledger.noise_multiplier,
            max_grad_norm=ledger.max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode=grad_sample_mode,
            wrap_model=False,
            noise_generator=secure_generator(),
        )
        if grad_sample_mode == "ghost":
            hooks, optim, criterion, loader = wrapped
        else:
            hooks, optim, loader = wrapped
        optim.secure_mode = True  # Opacus' floating-point mitigation (4 draws), with our OS-entropy generator
        if on_noise is not None:
            add_noise = optim.add_noise
            optim.add_noise = lambda: (on_noise(optim), add_noise())[1]
    started, planned = time.perf_counter(), steps
    result = TrainResult(0, 0, 0.0, float("nan"))
    losses, best, stale = [], (float("inf"), None, None), 0
    try:
        while result.steps < planned:  # whole epochs of the Poisson loader, cut where the step budget ends
            for batch in loader:
                check_stop()
                loss, dropped = train_step(
                    model,
                    batch,
                    optim,
                    criterion,
                    device,
                    micro_batch=0 if grad_sample_mode == "ghost" else micro_batch,
                    autocast_dtype=autocast_dtype,
                )
                result.steps += 1
                result.dropped_gradients += dropped
                size = 0 if _is_empty(batch) else len(batch[0])
                result.examples += size
                result.empty_batches += size == 0
                if loss is not None:
                    losses.append(loss)
                if on_step is not None:
                    on_step(optim)
                if progress is not None:
                    progress(size, loss)
                if validate is not None and not private and eval_every and result.steps % eval_every == 0:
                    score = float(validate())
                    model.train()
                    result.validation.append((result.steps, score))
                    if score < best[0] - 1e-4:
                        best, stale = (score, result.steps, _trainable_state(model)), 0
                    else:
                        stale += 1
                    if patience and stale >= patience:
                        planned = result.steps
                if result.steps >= planned:
                    break
    finally:
        if hooks is not None:
            hooks.cleanup()  # removes the hooks and every per-sample attribute Opacus added
        for p in params:
            p.grad = None
    if best[2] is not None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in best[2]:
                    p.copy_(best[2][n])
        result.best_step = best[1]
    if engine is not None:
        ledger.record(engine.accountant.history)
    result.seconds = time.perf_counter() - started
    result.mean_loss = float(np.mean(losses)) if losses else float("nan")
    return result


def private_gradient_sum(
    model,
    dataset: TokenizedReports,
    *,
    noise_multiplier: float,
    noise_share: int,
    sample_rate: float,
    max_grad_norm: float,
    pad_id: int,
    device: torch.device,
    grad_sample_mode: str = "hooks",
    units: list | None = None,
    micro_batch: int = 16,
    autocast_dtype=None,
    on_noise=None,
) -> dict[str, np.ndarray]:
    """One DP-SGD step's noisy gradient *sum* at one site, for distributed noise under secure aggregation.

    Poisson-samples the site's reports (or `units`) at `sample_rate` from OS entropy, clips each
    example's gradient of the trainable parameters to C, sums them and adds N(0, σ²C²/m) with
    m = `noise_share`: the sum of m such shares carries the noise of one centralized DP-SGD step
    (σ, q). Returns {trainable parameter name: float64 array}; the model is not changed. The
    caller charges (σ, q, 1) to its ledger: the guarantee counts on at least m sites' shares.
    """
    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader

    data = UnitReports(dataset, units) if units is not None else dataset
    collate = make_unit_collate(pad_id) if units is not None else make_collate(pad_id)
    loader = DPDataLoader(data, sample_rate=sample_rate, collate_fn=collate, generator=secure_generator())
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.SGD(
        list(params.values()), lr=0.0
    )  # the step is the server's: lr 0 leaves the model as it is
    model.train()
    hooks, optimizer, loader = PrivacyEngine(accountant="prv").make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        criterion=MultiLabelLoss(reduction="sum"),
        noise_multiplier=noise_multiplier / math.sqrt(noise_share),
        max_grad_norm=max_grad_norm,
        poisson_sampling=False,
        loss_reduction="sum",
        grad_sample_mode=grad_sample_mode,
        wrap_model=False,
        noise_generator=secure_generator(),
    )
    optimizer.secure_mode = True
    if on_noise is not None:
        add_noise = optimizer.add_noise
        optimizer.add_noise = lambda: (on_noise(optimizer), add_noise())[1]
    try:
        batch = next(iter(loader))
        train_step(
            model,
            batch,
            optimizer,
            MultiLabelLoss(reduction="sum"),
            device,
            micro_batch=micro_batch,
            autocast_dtype=autocast_dtype,
        )
        return {n: p.grad.detach().double().cpu().numpy().copy() for n, p in sorted(params.items())}
    finally:
        hooks.cleanup()
        for p in params.values():
            p.grad = None


@torch.no_grad()
def predict_probs(
    model,
    dataset: TokenizedReports,
    *,
    pad_id: int,
    device: torch.device,
    batch_size: int | None = None,
    autocast_dtype=None,
) -> np.ndarray:
    """Sigmoid probabilities (n, L) in the order of `dataset`.

    Default batch: 32 on a CPU, where inference is compute-bound and smaller length-sorted batches pad
    less and stay in cache (1,500 reports with MiniLM on 2 cores: 17.9 s at 32, 21.8 s at 128); 128 on a GPU."""
    if batch_size is None:
        batch_size = 128 if torch.device(device).type == "cuda" else 32
    model.eval()
    loader = eval_loader(dataset, batch_size=batch_size, pad_id=pad_id)
    order = [i for batch in loader.batch_sampler for i in batch]
    outputs = []
    for input_ids, attention_mask, _ in loader:
        with autocast(device, autocast_dtype):
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        outputs.append(torch.sigmoid(logits.float()).cpu().numpy())
    probs = np.concatenate(outputs) if outputs else np.zeros((0, dataset.labels.shape[1]), np.float32)
    result = np.empty_like(probs)
    result[order] = probs
    return result


def validation_loss(
    model, dataset: TokenizedReports, *, pad_id: int, device: torch.device, autocast_dtype=None
) -> float:
    """Mean per-report loss on held-out reports (early stopping without DP)."""
    probs = predict_probs(model, dataset, pad_id=pad_id, device=device, autocast_dtype=autocast_dtype)
    logits = torch.logit(torch.as_tensor(probs, dtype=torch.float64).clamp(1e-7, 1 - 1e-7))
    return float(MultiLabelLoss()(logits, dataset.labels.double()))
