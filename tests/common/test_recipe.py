"""The recipe: one rule from N and ε to batch, steps, optimizer, lr and clipping; every choice overridable."""

import math

import pytest

from common.errors import InputError
from common.privacy import epsilon_spent
from common.recipe import choose


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
    assert recipe.steps * recipe.batch_size <= 45_000  # the compute cap holds
    assert str(recipe.batch_size) in recipe.reason and f"{epsilon:g}" in recipe.reason


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
