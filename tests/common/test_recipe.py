"""The recipe: one rule from N and ε to batch, steps, optimizer, lr and clipping; every choice overridable."""

import math

import pytest

from common.errors import InputError
from common.privacy import epsilon_spent
from common.recipe import DP_EXAMPLES, choose


@pytest.mark.parametrize("n", [500, 1_000, 4_000, 12_000])
def test_without_dp_enough_steps_to_converge_at_any_n_with_early_stopping(n):
    recipe = choose(n, epsilon=math.inf, delta=1e-5)
    assert recipe.noise_multiplier == 0 and recipe.early_stopping and recipe.patience > 0
    assert recipe.steps >= 200  # a few hundred optimizer steps at least, whatever N (9 steps was the old failure)
    assert 0 < recipe.eval_every <= recipe.steps // 2


@pytest.mark.parametrize("n", [500, 1_000, 4_000, 12_000])
@pytest.mark.parametrize("epsilon", [0.1, 1.0, 10.0])
def test_under_dp_the_plan_spends_at_most_epsilon_and_never_peeks(n, epsilon):
    delta = 1.0 / (10 * n)
    recipe = choose(n, epsilon=epsilon, delta=delta)
    assert not recipe.early_stopping and recipe.max_grad_norm > 0
    spent = epsilon_spent([(recipe.noise_multiplier, recipe.sample_rate, recipe.steps)], delta=delta)
    assert spent <= epsilon * 1.01
    # The CPU cap holds (expected examples = steps x N x q), within one batch of rounding.
    assert recipe.steps * n * recipe.sample_rate <= 10_000 + n * recipe.sample_rate
    assert str(recipe.batch_size) in recipe.reason and f"{epsilon:g}" in recipe.reason


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 10.0, math.inf])
@pytest.mark.parametrize(("n", "cap"), [(4_506, 3_000), (1_500, 1_000), (9_066, 20_000)])
def test_an_explicit_compute_cap_is_hard(n, cap, epsilon):
    recipe = choose(n, epsilon=epsilon, delta=1e-5, max_examples=cap)
    expected_examples = recipe.steps * n * recipe.sample_rate
    assert expected_examples <= cap * 1.01
    if math.isfinite(epsilon):  # with enough steps to learn from: a smaller batch rather than fewer steps
        assert recipe.steps >= 30


@pytest.mark.parametrize("cap", [0, 3_000])
def test_the_compute_cap_counts_reports_when_patients_are_the_units(cap):
    """Patient-level DP samples patients: at 2.2 reports each, the cap allows 2.2 x fewer patients."""
    patients, per = 4_000, 2.2
    recipe = choose(patients, epsilon=1.0, delta=1e-5, max_examples=cap, reports_per_unit=per)
    budget = cap or DP_EXAMPLES["cpu"]
    assert recipe.steps * patients * recipe.sample_rate * per <= budget * 1.01
    per_report = choose(patients, epsilon=1.0, delta=1e-5, max_examples=cap)
    assert per_report.steps * patients * per_report.sample_rate * per > budget * 1.5  # what it did before


def test_a_cuda_machine_affords_more_steps_than_a_cpu():
    cpu, cuda = (choose(9_066, epsilon=10.0, delta=1e-5, device=d) for d in ("cpu", "cuda"))
    assert cuda.steps * cuda.sample_rate > 2 * cpu.steps * cpu.sample_rate


def test_a_larger_epsilon_buys_less_noise_per_step():
    low, high = choose(4_000, epsilon=1.0, delta=1e-5), choose(4_000, epsilon=10.0, delta=1e-5)
    assert high.noise_multiplier / high.batch_size < low.noise_multiplier / low.batch_size


def test_overrides_win():
    recipe = choose(1_000, epsilon=1.0, delta=1e-5, batch_size=50, epochs=2, optimizer="sgd", lr=3.0, max_grad_norm=0.5)
    assert (recipe.batch_size, recipe.steps, recipe.optimizer, recipe.lr, recipe.max_grad_norm) == (
        50,
        40,
        "sgd",
        3.0,
        0.5,
    )
    plain = choose(1_000, epsilon=math.inf, delta=1e-5, epochs=3, batch_size=100)
    assert plain.steps == 30 and not plain.early_stopping  # fixed epochs: no early stopping


def test_impossible_budgets_say_what_to_do():
    with pytest.raises(InputError, match="raise epsilon"):
        choose(50, epsilon=1e-4, delta=1e-3)
    with pytest.raises(InputError, match="too few"):
        choose(1, epsilon=1.0, delta=1e-3)
