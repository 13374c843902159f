"""How to train on N reports at a target ε: batch size, steps, optimizer, learning rate, clipping.

One documented rule, derived from measurements at several N and ε (docs/results.md, "Recipe"); every
choice stays overridable (`--batch-size`, `--epochs`, `--optimizer`, `--lr`, `--max-grad-norm`).

Without DP, validation is free: Adam at a small batch for many steps, with early stopping on the
validation loss (the best parameters are kept). Under DP, every step spends budget and nothing may
look at held-out reports, so the rule fixes the steps in advance: a large Poisson batch (the noise
on the mean gradient is σC/B), as many epochs as the compute cap allows at that ε (σ grows slowly
with the steps once subsampling amplifies), every per-example gradient clipped (C below the typical
gradient norm, so DP-SGD is normalized SGD and the learning rate does not depend on C), and the
candidate with the least noise per step among those the accountant allows (σ is known for every
candidate before training).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from common.errors import BudgetError, InputError
from common.privacy import calibrate_noise, steps_per_epoch_for

# ---- without DP (measured: docs/results.md)
PLAIN_LR = 2e-3  # LoRA matrices; Adam
PLAIN_HEAD_LR = 1e-2  # the head learns faster from its small start
PLAIN_EXAMPLES = 15_000  # examples processed at most (early stopping usually ends sooner)
PLAIN_PATIENCE = 2  # evaluations without a better validation loss before stopping

# ---- under DP
DP_CLIP = 0.1  # below the typical per-example gradient norm (~0.3): every example is clipped
DP_LR = 2e-3  # Adam on normalized, noised gradients
DP_HEAD_LR = 1e-2
DP_SGD_LR = 20.0  # plain SGD (--optimizer sgd): a step of at most lr x C = 2 per clipped mean gradient
DP_NOISE_TARGET = 0.006  # σ/B: noise on the mean clipped gradient (in units of C) that still learns
DP_MIN_STEPS_PER_EPOCH = 4  # batches up to N/4: larger ones leave too few steps
DP_MIN_BATCH, DP_MAX_BATCH = 32, 1024
DP_EPOCHS_AT_1 = 10  # epochs at ε = 1, growing as sqrt(ε)
# Examples processed at most under DP: a compute cap by device. MiniLM on reports of ~80 tokens runs ~8 DP examples/s on
# 2 CPU cores, so 10,000 is ~20 min there; a GPU affords 40,000 (more epochs at a large epsilon).
DP_EXAMPLES = {"cpu": 10_000, "cuda": 40_000}
DP_MAX_EPOCHS = 30
DP_MIN_STEPS = 30  # fewer noisy steps than this do not get a classifier going


@dataclass(frozen=True)
class Recipe:
    batch_size: int
    steps: int
    optimizer: str
    lr: float
    head_lr: float
    max_grad_norm: float
    noise_multiplier: float  # 0 without DP
    early_stopping: bool
    eval_every: int  # steps between validation losses (early stopping without DP)
    patience: int
    reason: str  # one line: why these values

    @property
    def sample_rate(self) -> float:
        return 1.0 / self._steps_per_epoch

    _steps_per_epoch: int = 1

    def epochs(self) -> float:
        return self.steps / self._steps_per_epoch

    def to_dict(self) -> dict:
        data = asdict(self)
        data["steps_per_epoch"] = data.pop("_steps_per_epoch")
        data["epochs"] = self.epochs()
        return data


def optimizer_for(*, private: bool, optimizer: str = "auto", lr: float = 0.0) -> tuple[str, float, float]:
    """(optimizer, lr of the LoRA matrices, lr of the head) of the recipe, for a step taken elsewhere (distributed DP)."""
    opt = "adam" if optimizer == "auto" else optimizer
    if lr:
        return opt, lr, lr
    if opt == "sgd":
        return opt, DP_SGD_LR if private else 0.5, DP_SGD_LR if private else 0.5
    return (opt, DP_LR, DP_HEAD_LR) if private else (opt, PLAIN_LR, PLAIN_HEAD_LR)


def recipe_for(cfg, n_units: int, *, epsilon: float | None = None, reports_per_unit: float = 1.0) -> Recipe:
    """The recipe of a run configuration for `n_units` training units (the one place that maps the options).

    The compute cap counts reports: with patients as units (`reports_per_unit` > 1) it allows fewer units."""
    return choose(
        n_units,
        epsilon=cfg.epsilon if epsilon is None else epsilon,
        delta=cfg.delta,
        accountant=cfg.accountant,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        max_grad_norm=cfg.max_grad_norm,
        max_examples=cfg.max_examples,
        device=_device_kind(cfg.device),
        reports_per_unit=reports_per_unit,
    )


def _device_kind(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def choose(
    n_train: int,
    *,
    epsilon: float,
    delta: float,
    accountant: str = "prv",
    batch_size: int = 0,
    epochs: float = 0,
    optimizer: str = "auto",
    lr: float = 0.0,
    max_grad_norm: float = 0.0,
    max_examples: int = 0,
    device: str = "cpu",
    reports_per_unit: float = 1.0,
) -> Recipe:
    """The recipe for `n_train` training units (reports, or patients) at (ε, δ); overrides win where given (not 0/auto)."""
    if n_train < 2:
        raise InputError(f"{n_train} training reports are too few to train on")
    if batch_size > n_train:
        raise InputError(f"--batch-size {batch_size} is larger than the {n_train} training reports; lower it")
    if math.isinf(epsilon):
        return _plain(
            n_train, batch_size=batch_size, epochs=epochs, optimizer=optimizer, lr=lr, max_examples=max_examples
        )
    return _private(
        n_train,
        epsilon=epsilon,
        delta=delta,
        accountant=accountant,
        batch_size=batch_size,
        epochs=epochs,
        optimizer=optimizer,
        lr=lr,
        max_grad_norm=max_grad_norm,
        max_examples=max(1, round((max_examples or DP_EXAMPLES[device]) / max(reports_per_unit, 1.0))),
    )


def _plain(n, *, batch_size, epochs, optimizer, lr, max_examples) -> Recipe:
    batch = batch_size or (32 if n <= 2_000 else 64)
    batch = min(batch, n)
    per_epoch = steps_per_epoch_for(n, batch)
    budget = max_examples or PLAIN_EXAMPLES
    epochs_max = epochs or min(20, max(2, math.ceil(budget / n)))
    if max_examples and not epochs:  # an explicit compute cap is hard
        epochs_max = min(epochs_max, max_examples / n)
    steps = max(1, round(epochs_max * per_epoch))
    opt = "adam" if optimizer == "auto" else optimizer
    rate = lr or (PLAIN_LR if opt == "adam" else 0.5)
    head = PLAIN_HEAD_LR if (opt == "adam" and not lr) else rate
    every = per_epoch if per_epoch <= 200 else max(50, per_epoch // 2)
    reason = (
        f"no DP: {opt} at batch {batch} for up to {epochs_max:g} epochs ({steps} steps), early stopping on the "
        f"validation loss every {every} steps (patience {PLAIN_PATIENCE})"
    )
    return Recipe(batch, steps, opt, rate, head, 0.0, 0.0, not epochs, every, PLAIN_PATIENCE, reason, per_epoch)


def _private(
    n, *, epsilon, delta, accountant, batch_size, epochs, optimizer, lr, max_grad_norm, max_examples
) -> Recipe:
    budget = max_examples
    # More epochs at a larger ε (σ grows only slowly with the steps once subsampling amplifies), within the compute cap.
    wanted = epochs or min(DP_MAX_EPOCHS, DP_EPOCHS_AT_1 * math.sqrt(epsilon), budget / n)
    batches = [min(batch_size, n)] if batch_size else _batch_candidates(n)
    if not batch_size and not epochs:  # the cap is hard: only batches that leave DP_MIN_STEPS within it, if any do
        batches = [b for b in batches if DP_MIN_STEPS * n / steps_per_epoch_for(n, b) <= budget] or batches[:1]
    tried, last_error = [], None
    for batch in batches:  # smallest first: the most steps whose noise on the mean gradient stays low
        per_epoch = steps_per_epoch_for(n, batch)
        steps = max(1, round(wanted * per_epoch))
        if not epochs:
            steps = max(steps, min(DP_MIN_STEPS, round(DP_MAX_EPOCHS * per_epoch), math.floor(budget * per_epoch / n)))
        try:
            sigma = calibrate_noise(
                target_epsilon=epsilon, delta=delta, sample_rate=1.0 / per_epoch, steps=steps, accountant=accountant
            )
        except InputError as error:
            last_error = error
            continue
        noise = sigma / (n / per_epoch)
        tried.append((batch, per_epoch, steps, sigma, noise))
        if noise <= DP_NOISE_TARGET:
            break
    if not tried:
        raise BudgetError(
            f"no DP run reaches epsilon {epsilon:g} at delta {delta:g} with {n} training units ({last_error})"
        )
    batch, per_epoch, steps, sigma, noise = min(
        tried, key=lambda t: (t[4] > DP_NOISE_TARGET, t[4] if t[4] > DP_NOISE_TARGET else t[0])
    )
    opt = "adam" if optimizer == "auto" else optimizer
    rate = lr or (DP_LR if opt == "adam" else DP_SGD_LR)
    head = DP_HEAD_LR if (opt == "adam" and not lr) else rate
    clip = max_grad_norm or DP_CLIP
    why = "the smallest batch" if noise <= DP_NOISE_TARGET else "the least noisy batch"
    reason = (
        f"DP at epsilon {epsilon:g}: batch {batch} (q = {1 / per_epoch:.4f}) for {steps / per_epoch:.3g} epochs ({steps} steps) "
        f"at sigma {sigma:.3f}: {why} whose noise on the mean clipped gradient sigma/B = {noise:.4f} "
        f"{'is within' if noise <= DP_NOISE_TARGET else 'comes closest to'} {DP_NOISE_TARGET} ({len(tried)} candidates); "
        f"{opt} lr {rate:g}, clipping C = {clip:g}"
    )
    return Recipe(batch, steps, opt, rate, head, clip, sigma, False, 0, 0, reason, per_epoch)


def _batch_candidates(n: int) -> list[int]:
    top = max(DP_MIN_BATCH, min(DP_MAX_BATCH, n // DP_MIN_STEPS_PER_EPOCH))
    found = [b for b in (32, 64, 128, 256, 512, 1024) if DP_MIN_BATCH <= b < top] + [top]
    return [min(b, n) for b in found]
