"""Privacy auditing with one training run (Steinke, Nasr & Jagielski, NeurIPS 2023): a lower bound on ε.

m canaries are each included in training independently with probability 1/2. After one run, every
canary gets a membership score; the auditor guesses "included" for the k+ highest scores and "left
out" for the k- lowest, and abstains on the rest. If training is (ε, δ)-DP, the number of correct
guesses W among r = k+ + k- guesses is dominated by Binomial(r, e^ε / (1 + e^ε)) up to a δ term
(Theorem 5.2 of the paper); the largest ε that such a W rejects at the stated confidence is
`epsilon_lower_bound`. A lower bound above the claimed ε proves a bug; one below says nothing more
than that the audit found none (with r guesses it cannot certify more than `max_certifiable`).

Two kinds of canary (docs/privacy.md, "Audit"):
- gradient canaries (white box, the strongest adversary in radfl's threat model): a canary is one
  coordinate of the trainable parameters, contributing C to it when Poisson-sampled like a report,
  added after clipping and before the noise; it is scored from the released noisy gradient sums —
  what the optimizer sees centrally, and at least what the server sees from a site.
- report canaries (black box): a report of random rare tokens with a random label vector, scored by
  the final model's loss on its labels — what anyone holding the released adapter can do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def p_value(*, m: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """P[W ≥ correct] under (ε, δ)-DP, by the bound of Steinke et al. (2023), Algorithm 2 / Theorem 5.2."""
    if correct <= 0:
        return 1.0
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(correct - 1, guesses, q))  # P[Binomial(r, q) ≥ v]
    alpha, total = 0.0, 0.0
    for i in range(1, correct + 1):  # the δ term: max over i of P[v - i ≤ Binomial < v] / i
        total += float(stats.binom.pmf(correct - i, guesses, q))
        alpha = max(alpha, total / i)
    return min(1.0, beta + alpha * delta * 2 * m)


def epsilon_lower_bound(*, m: int, guesses: int, correct: int, delta: float, confidence: float = 0.95) -> float:
    """The largest ε that `correct` of `guesses` rejects at `confidence` (0 when none does)."""
    if p_value(m=m, guesses=guesses, correct=correct, epsilon=0.0, delta=delta) > 1 - confidence:
        return 0.0
    low, high = 0.0, 50.0
    for _ in range(60):
        mid = (low + high) / 2
        if p_value(m=m, guesses=guesses, correct=correct, epsilon=mid, delta=delta) <= 1 - confidence:
            low = mid
        else:
            high = mid
    return low


def max_certifiable(*, m: int, guesses: int, delta: float, confidence: float = 0.95) -> float:
    """ε_lower when every guess is right: the most this audit can ever certify."""
    return epsilon_lower_bound(m=m, guesses=guesses, correct=guesses, delta=delta, confidence=confidence)


@dataclass
class AuditResult:
    m: int
    included: int
    guesses: int
    correct: int
    epsilon_lower: float
    max_certifiable: float
    confidence: float
    delta: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def guess_and_bound(
    scores: np.ndarray, included: np.ndarray, *, k: int, delta: float, confidence: float = 0.95
) -> tuple[AuditResult, list]:
    """Guess the k highest scores "in" and the k lowest "out"; the ε lower bound and the precision curve.

    The k is fixed before looking (the paper's recipe); the curve (precision of the top/bottom j guesses,
    j = 1..k) is for the plot only.
    """
    order = np.argsort(-scores, kind="stable")
    top, bottom = order[:k], order[::-1][:k]
    correct = int(included[top].sum() + (~included[bottom]).sum())
    result = AuditResult(
        len(scores),
        int(included.sum()),
        2 * k,
        correct,
        epsilon_lower_bound(m=len(scores), guesses=2 * k, correct=correct, delta=delta, confidence=confidence),
        max_certifiable(m=len(scores), guesses=2 * k, delta=delta, confidence=confidence),
        confidence,
        delta,
    )
    curve = []
    for j in range(max(1, k // 20), k + 1, max(1, k // 20)):
        right = included[order[:j]].sum() + (~included[order[::-1][:j]]).sum()
        curve.append((2 * j, float(right / (2 * j))))
    return result, curve


def draw_inclusion(m: int, rng: np.random.Generator) -> np.ndarray:
    """Each canary in training with probability 1/2 (independent of everything else)."""
    return rng.random(m) < 0.5


class GradientCanaries:
    """m Dirac canaries: canary i adds ±C to coordinate `index[i]` of the clipped gradient sum when sampled.

    Sampling is Poisson at the run's q, like a report; the auditor knows the coordinates and signs, and
    scores a canary by the sum over steps of the released noisy gradient along its coordinate.
    """

    def __init__(
        self, model, m: int, *, included: np.ndarray, sample_rate: float, clip: float, rng: np.random.Generator
    ):
        self.params = [p for _, p in sorted(model.named_parameters()) if p.requires_grad]
        sizes = np.array([p.numel() for p in self.params])
        if m > sizes.sum():
            raise ValueError(f"{m} canaries need at least {m} trainable coordinates")
        # Where the reports' own gradients are quietest: LoRA A while B is still near its zero start (its gradient
        # is B-weighted), else anywhere. Quiet coordinates make the strongest auditor; any coordinate is valid.
        names = [n for n, p in sorted(model.named_parameters()) if p.requires_grad]
        quiet = np.concatenate(
            [
                np.arange(o, o + s)
                for n, o, s in zip(names, np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes, strict=True)
                if ".lora_A." in n
            ]
            or [np.arange(0)]
        )
        pool = quiet if len(quiet) >= m else np.arange(int(sizes.sum()))
        flat = rng.choice(pool, size=m, replace=False)
        self.where = [(int(np.searchsorted(np.cumsum(sizes), i, side="right")), 0) for i in flat]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.where = [(j, int(i - offsets[j])) for (j, _), i in zip(self.where, flat, strict=True)]
        self.sign = rng.choice([-1.0, 1.0], size=m)
        self.included, self.sample_rate, self.clip, self.rng = included, sample_rate, clip, rng
        self.scores = np.zeros(m)

    def add(self, optimizer) -> None:
        """After clipping, before the noise: each included canary joins this step's sum with probability q."""
        sampled = self.included & (self.rng.random(len(self.sign)) < self.sample_rate)
        for i in np.flatnonzero(sampled):
            j, k = self.where[i]
            self.params[j].summed_grad.view(-1)[k] += self.sign[i] * self.clip

    def observe(self) -> None:
        """After the noise: what the step released along each canary's coordinate (p.grad holds the noisy sum, scaled)."""
        for i, (j, k) in enumerate(self.where):
            self.scores[i] += self.sign[i] * float(self.params[j].grad.view(-1)[k])

    def observe_delta(self, before: list, after: list) -> None:
        """A server's view: the change of the site's parameters over a round, along each canary's coordinate.
        A gradient step moves a parameter against its gradient, hence the minus sign."""
        for i, (j, k) in enumerate(self.where):
            self.scores[i] -= self.sign[i] * float(after[j].reshape(-1)[k] - before[j].reshape(-1)[k])
