"""Differential privacy: budget checks, noise calibration, the accountant and the per-site ledger.

The guarantee is example-level (ε, δ)-DP for the reports of one site (or of the whole pool in
centralized training), given DP-SGD with Poisson sampling at rate q, noise multiplier σ and
clipping norm C. Noise is calibrated once for the whole run (every round × local epoch), and the
accountant's history (σ, q, steps) lives in a `PrivacyLedger` that survives rounds, so ε never
resets. Any other use of the same reports (another run, a threshold tuned on them) spends budget
that this ledger does not see.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.cache import cache_root, store
from common.errors import BudgetError, InputError

ACCOUNTANTS = ("prv", "rdp")


def secure_generator(device="cpu"):
    """A torch generator seeded from the operating system's entropy, for DP noise and Poisson sampling.

    The guarantee assumes that nobody can predict or replay the noise, nor know which reports a
    Poisson batch took (amplification by subsampling, Balle et al. 2018, needs the sample to be
    secret). A run seed, or anything the server sends, must never reach these draws. 64 bits from
    `os.urandom` per generator; Opacus' `secure_mode` (torchcsprng) is not available for this torch
    build, so radfl applies Opacus' floating-point mitigation (the sum of 4 draws, Holohan et al.
    2021) with this generator instead (see `common.training`).
    """
    import torch

    return torch.Generator(device=device).manual_seed(int.from_bytes(os.urandom(8), "little"))


def check_budget(*, epsilon: float, delta: float, n_examples: int) -> None:
    """ε > 0 (inf: non-private) and 0 < δ < 1/N, else an `InputError` that says what to fix."""
    if not epsilon > 0:  # also catches NaN
        raise InputError(f"epsilon must be positive (or inf for non-private training), got {epsilon}")
    if math.isinf(epsilon):
        return
    if not 0 < delta < 1:
        raise InputError(f"delta must lie strictly between 0 and 1, got {delta}")
    if n_examples > 0 and delta >= 1.0 / n_examples:
        raise BudgetError(
            f"delta {delta:g} must be below 1/N = {1.0 / n_examples:.2e} for N = {n_examples} training reports; lower --delta"
        )


def _accountant(name: str):
    from opacus.accountants import create_accountant

    if name not in ACCOUNTANTS:
        raise InputError(f"unknown accountant {name!r}; use prv or rdp")
    _memoize_rdp()
    return create_accountant(mechanism=name)


@functools.cache
def _memoize_rdp() -> None:
    """Memoize Opacus' RDP of one subsampled-Gaussian step, `_compute_rdp(q, σ, α)`.

    A pure function of three numbers (Mironov et al. 2019, the sampled Gaussian mechanism), so a cached
    value is the value itself: every ε is bit for bit what Opacus computes (tested). `compute_rdp` multiplies
    it by the steps, and the PRV accountant's safe domain (`compute_safe_domain_size`, Gopi et al. 2021,
    remark 5.6) asks RDP at ~150 orders on every call. A site asks ε of the same (σ, q) after every
    round (its run and lifetime budgets), so without the memo each call recomputed the same 300 values:
    0.12 s a call, 0.02 s with it (~20 s of a 32-round distributed-DP federation on 2 cores).
    """
    from opacus.accountants.analysis import rdp

    if not hasattr(rdp._compute_rdp, "cache_info"):
        rdp._compute_rdp = functools.lru_cache(maxsize=1 << 16)(rdp._compute_rdp)


def calibrate_noise(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "prv"
) -> float:
    """The smallest noise multiplier σ whose ε after `steps` steps at rate q stays ≤ the target.

    A target no σ can reach (the RDP accountant cannot go below ε ≈ 0.1 at small q, say) is an
    `InputError`, not a crash. A pure function of its arguments, so it is memoized in the process
    and on disk under `$RADFL_CACHE/noise` (each disk hit re-checked, see `_cached_sigma`): the PRV
    accountant's search takes seconds, and the sweep, the server and every site plan the same runs.
    """
    return _calibrate(float(target_epsilon), float(delta), float(sample_rate), int(steps), str(accountant))


CALIBRATION_TOLERANCE = 0.01  # Opacus' search stops once epsilon lies in [target - 0.01, target]


@functools.lru_cache(maxsize=256)
def _calibrate(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    if not math.isfinite(target_epsilon):
        raise InputError("noise is calibrated for a finite epsilon only; a non-private run adds none")
    if steps < 1 or not 0 < sample_rate <= 1:
        raise InputError(f"cannot calibrate noise for {steps} steps at sample rate {sample_rate}")
    _accountant(accountant)
    key = (target_epsilon, delta, sample_rate, steps, accountant)
    cached = _cached_sigma(key)
    if cached is not None:
        return cached
    sigma = _search_sigma(*key)
    _store_sigma(key, sigma)
    return sigma


def _cache_file(key: tuple) -> Path:
    from opacus import __version__ as opacus_version

    text = json.dumps([*map(repr, key), opacus_version])
    return cache_root("noise") / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"


def _cached_sigma(key: tuple) -> float | None:
    """σ found by an earlier process (the sweep, the server and every simulated site plan the same run),
    used only after one accountant call shows it meets the target within the search's tolerance: a
    stale or tampered cache file can cost a search, never privacy (ε(σ) > target is refused)."""
    target_epsilon, delta, sample_rate, steps, accountant = key
    try:
        sigma = float(json.loads(_cache_file(key).read_text())["sigma"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (math.isfinite(sigma) and sigma > 0):
        return None
    spent = epsilon_spent([(sigma, sample_rate, steps)], delta=delta, accountant=accountant)
    return sigma if target_epsilon - CALIBRATION_TOLERANCE <= spent <= target_epsilon else None


def _store_sigma(key: tuple, sigma: float) -> None:
    store(_cache_file(key), lambda tmp: tmp.write_text(json.dumps({"sigma": sigma, "key": list(map(repr, key))})))


SIGMA_LIMIT = 10_240.0  # 10 doubled 10 times; far beyond any useful run: σ/B > 1 even at a batch of 8,192


def _search_sigma(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """Opacus' `get_noise_multiplier` search (double σ from 10 until ε(σ) ≤ target, then bisect until ε lies
    within CALIBRATION_TOLERANCE below the target: the returned σ always meets the target), stopped at
    SIGMA_LIMIT instead of Opacus' 1e6: an unreachable target (the PRV accountant's ε never drops below
    ~0.009 at its default eps_error) then fails in seconds, not after minutes of ever slower calls."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spent = lambda sigma: epsilon_spent([(sigma, sample_rate, steps)], delta=delta, accountant=accountant)  # noqa: E731
            low, high, eps_high = 0.0, 10.0, math.inf
            # For a tiny target, one call at the limit first (not eight doublings up to it).
            tiny_and_unreachable = target_epsilon < 0.05 and spent(SIGMA_LIMIT) > target_epsilon
            while eps_high > target_epsilon:
                if tiny_and_unreachable or high >= SIGMA_LIMIT:
                    raise ValueError(f"no noise multiplier up to {SIGMA_LIMIT:g} reaches it")
                high *= 2
                eps_high = spent(high)
            while target_epsilon - eps_high > CALIBRATION_TOLERANCE:
                sigma = (low + high) / 2
                eps = spent(sigma)
                if eps < target_epsilon:
                    high, eps_high = sigma, eps
                else:
                    low = sigma
            return float(high)
    except (ValueError, RuntimeError, OverflowError) as error:
        raise BudgetError(
            f"the {accountant} accountant cannot reach epsilon {target_epsilon:g} at delta {delta:g} with sample rate "
            f"{sample_rate:.4f} over {steps} steps ({error}); raise epsilon, use --accountant prv, or train fewer steps"
        ) from None


def epsilon_spent(history, *, delta: float, accountant: str = "prv") -> float:
    """ε of a history of (σ, q, steps) entries; 0 for an empty history (memoized: a pure function).

    Entries with the same (σ, q) are merged into one with their steps summed before accounting. That
    is exact: adaptive composition does not depend on the order of the mechanisms, and k steps of one
    subsampled Gaussian are what the accountants compose as (σ, q, k) (Opacus `PRVAccountant` and
    `RDPAccountant` both read a history this way; Gopi et al. 2021, Mironov 2017). It matters for
    speed: a distributed-DP site logs one entry per round, and the PRV accountant composes 40
    separate entries in ~7 s, one merged entry in 0.07 s.
    """
    merged: dict[tuple[float, float], int] = {}
    for s, q, n in history:
        if int(n) > 0:
            key = (float(s), float(q))
            merged[key] = merged.get(key, 0) + int(n)
    history = tuple(sorted((s, q, n) for (s, q), n in merged.items()))
    return _spent(history, float(delta), str(accountant)) if history else 0.0


@functools.lru_cache(maxsize=1024)
def _spent(history: tuple, delta: float, accountant: str) -> float:
    acc = _accountant(accountant)
    acc.history = [(float(s), float(q), int(n)) for s, q, n in history]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta=delta))


@dataclass
class PrivacyLedger:
    """One site's privacy state, plain data so it can be kept in Flower's `context.state`.

    `noise_multiplier` is fixed when the ledger is created (calibrated for `planned_steps`);
    `history` grows by (σ, q, steps) with each round actually trained.
    """

    target_epsilon: float
    delta: float
    accountant: str
    max_grad_norm: float
    noise_multiplier: float
    sample_rate: float
    planned_steps: int
    history: list = field(default_factory=list)

    @classmethod
    def plan(
        cls,
        *,
        target_epsilon: float,
        delta: float,
        n_examples: int,
        batch_size: int,
        steps: int,
        max_grad_norm: float,
        accountant: str = "prv",
    ) -> PrivacyLedger:
        """Calibrate σ once for all `steps` of the run over `n_examples` at expected batch `batch_size`.

        Opacus' Poisson loader samples at q = 1 / ceil(N / B) (ceil(N / B) steps make one epoch).
        """
        check_budget(epsilon=target_epsilon, delta=delta, n_examples=n_examples)
        if max_grad_norm <= 0:
            raise InputError("--max-grad-norm must be positive")
        q = 1.0 / steps_per_epoch_for(n_examples, batch_size)
        sigma = (
            0.0
            if math.isinf(target_epsilon)
            else calibrate_noise(
                target_epsilon=target_epsilon, delta=delta, sample_rate=q, steps=steps, accountant=accountant
            )
        )
        return cls(target_epsilon, delta, accountant, max_grad_norm, sigma, q, steps)

    @property
    def private(self) -> bool:
        return not math.isinf(self.target_epsilon)

    @property
    def steps_taken(self) -> int:
        return int(sum(h[2] for h in self.history))

    def spent(self) -> float:
        return epsilon_spent(self.history, delta=self.delta, accountant=self.accountant) if self.private else math.inf

    def record(self, history) -> None:
        """Replace the history with the accountant's, which only ever grows."""
        history = [(float(s), float(q), int(n)) for s, q, n in history]
        if len(history) < len(self.history):
            raise ValueError("an accountant history can only grow")
        self.history = history

    def to_dict(self) -> dict:
        return {**asdict(self), "history": [list(h) for h in self.history]}

    @classmethod
    def from_dict(cls, data: dict) -> PrivacyLedger:
        data = dict(data)
        data["history"] = [tuple(h) for h in data.get("history", [])]
        return cls(**data)

    def summary(self) -> dict:
        """The numbers a result depends on, for metrics.json."""
        spent = self.spent()
        return {
            "epsilon_target": _finite(self.target_epsilon),
            "epsilon_spent": _finite(spent),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps_taken,
            "planned_steps": self.planned_steps,
            "accountant": self.accountant if self.private else None,
            "max_grad_norm": self.max_grad_norm if self.private else None,
            "history": [list(h) for h in self.history],
        }


def steps_for(epochs: float, n_examples: int, batch_size: int) -> int:
    """Optimizer steps of `epochs` (possibly fractional) passes over `n_examples` at batch `batch_size`."""
    return max(1, round(epochs * steps_per_epoch_for(n_examples, batch_size)))


def steps_per_epoch_for(n_examples: int, batch_size: int) -> int:
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if batch_size > n_examples:
        raise InputError(f"--batch-size {batch_size} is larger than the {n_examples} training reports; lower it")
    return math.ceil(n_examples / batch_size)


def _finite(value: float):
    """JSON has no infinity: non-private budgets are written as the string "inf"."""
    return "inf" if math.isinf(value) else value
