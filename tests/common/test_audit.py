"""The bound of Steinke, Nasr & Jagielski (2023) and the canaries' bookkeeping."""

import math

import numpy as np
import pytest

from common.audit import epsilon_lower_bound, guess_and_bound, max_certifiable, p_value


def test_all_guesses_right_certify_exactly_the_binomial_limit():
    r = 200  # with δ = 0: P[Bin(r, q) = r] = q^r ≤ 0.05 gives q = 0.05^(1/r), ε = log(q / (1 - q))
    q = 0.05 ** (1 / r)
    assert max_certifiable(m=1000, guesses=r, delta=0.0) == pytest.approx(math.log(q / (1 - q)), rel=1e-3)
    assert max_certifiable(m=1000, guesses=r, delta=1e-5) <= max_certifiable(m=1000, guesses=r, delta=0.0)


def test_chance_level_guessing_certifies_nothing_and_more_right_certifies_more():
    assert epsilon_lower_bound(m=1000, guesses=200, correct=100, delta=1e-5) == 0.0
    bounds = [epsilon_lower_bound(m=1000, guesses=200, correct=c, delta=1e-5) for c in (130, 160, 190)]
    assert 0 < bounds[0] < bounds[1] < bounds[2]
    assert p_value(m=1000, guesses=200, correct=160, epsilon=bounds[1], delta=1e-5) <= 0.05 + 1e-6


def test_guess_and_bound_counts_top_in_and_bottom_out():
    included = np.array([True] * 50 + [False] * 50)
    perfect = np.concatenate([np.linspace(2, 1, 50), np.linspace(0, -1, 50)])
    result, curve = guess_and_bound(perfect, included, k=20, delta=1e-5)
    assert result.correct == result.guesses == 40 and result.epsilon_lower == pytest.approx(result.max_certifiable)
    worst, _ = guess_and_bound(-perfect, included, k=20, delta=1e-5)
    assert worst.correct == 0 and worst.epsilon_lower == 0.0
    assert curve[-1] == (40, 1.0)
