"""Privacy calibration and accounting, checked against an independent accountant (Google's dp_accounting)."""

import math

import pytest

from common.errors import InputError
from common.privacy import PrivacyLedger, calibrate_noise, check_budget, epsilon_spent


def _independent_epsilon(history, delta, accountant):
    """ε of a (σ, q, steps) history by Google's dp_accounting (PLD for prv, RDP for rdp)."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    acc = pld_privacy_accountant.PLDAccountant() if accountant == "prv" else rdp_privacy_accountant.RdpAccountant()
    for sigma, q, steps in history:
        acc.compose(
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
            )
        )
    return acc.get_epsilon(delta)


@pytest.mark.parametrize("target,accountant", [(0.1, "prv"), (1.0, "prv"), (10.0, "prv"), (1.0, "rdp"), (8.0, "rdp")])
def test_calibrated_noise_spends_at_most_the_target_and_an_independent_accountant_agrees(target, accountant):
    q, steps, delta = 64 / 2000, 3 * 32, 1e-5
    sigma = calibrate_noise(target_epsilon=target, delta=delta, sample_rate=q, steps=steps, accountant=accountant)
    spent = epsilon_spent([(sigma, q, steps)], delta=delta, accountant=accountant)
    assert spent <= target and spent > 0.9 * target  # tight: not wasting budget either
    independent = _independent_epsilon([(sigma, q, steps)], delta, accountant)
    # Opacus' PRV reports an upper bound (absolute error 0.01): never below the exact value.
    assert independent <= spent * 1.02
    assert independent == pytest.approx(spent, rel=0.05, abs=0.012)


def test_known_noise_levels_from_the_design_notes():
    # DESIGN.md: q = 32/2000, 3 epochs, δ = 1e-5 → σ ≈ 640 / 8.1 / 1.19 / 0.50 for ε = 0.01 / 0.1 / 1 / 10 (PRV).
    q = 32 / 2000
    steps = 3 * math.ceil(1 / q)
    expected = {0.1: 8.1, 1.0: 1.19, 10.0: 0.50}
    for eps, sigma in expected.items():
        assert calibrate_noise(target_epsilon=eps, delta=1e-5, sample_rate=q, steps=steps) == pytest.approx(
            sigma, rel=0.05
        )


def test_rdp_cannot_reach_tiny_epsilon_and_says_what_to_do():
    with pytest.raises(InputError, match="cannot reach epsilon 0.01.*--accountant prv"):
        calibrate_noise(target_epsilon=0.01, delta=1e-5, sample_rate=32 / 2000, steps=300, accountant="rdp")


@pytest.mark.parametrize(
    "epsilon,delta,n,message",
    [
        (0.0, 1e-5, 1000, "epsilon must be positive"),
        (-1.0, 1e-5, 1000, "epsilon must be positive"),
        (float("nan"), 1e-5, 1000, "epsilon must be positive"),
        (1.0, 0.0, 1000, "strictly between 0 and 1"),
        (1.0, 1e-3, 1000, r"below 1/N = 1.00e-03"),
        (1.0, 1.5, 1000, "strictly between"),
    ],
)
def test_impossible_budgets_are_input_errors(epsilon, delta, n, message):
    with pytest.raises(InputError, match=message):
        check_budget(epsilon=epsilon, delta=delta, n_examples=n)


def test_non_private_budget_is_allowed():
    check_budget(epsilon=math.inf, delta=0.5, n_examples=10)
    ledger = PrivacyLedger.plan(
        target_epsilon=math.inf, delta=1e-5, n_examples=100, batch_size=10, steps=20, max_grad_norm=1.0
    )
    assert not ledger.private and ledger.noise_multiplier == 0 and ledger.summary()["epsilon_spent"] == "inf"


def test_ledger_plans_the_whole_run_and_accumulates_without_passing_the_target():
    ledger = PrivacyLedger.plan(
        target_epsilon=1.0, delta=1e-5, n_examples=1000, batch_size=50, steps=80, max_grad_norm=1.0
    )
    assert ledger.sample_rate == pytest.approx(1 / 20) and ledger.planned_steps == 80
    spent = []
    for _ in range(4):  # four rounds of one local epoch
        ledger.record(list(ledger.history) + [(ledger.noise_multiplier, ledger.sample_rate, 20)])
        spent.append(ledger.spent())
    assert spent == sorted(spent) and spent[0] < spent[-1] <= 1.0
    assert spent[-1] > 0.9  # the calibration uses the budget
    fifth = list(ledger.history) + [(ledger.noise_multiplier, ledger.sample_rate, 20)]
    assert epsilon_spent(fifth, delta=1e-5, accountant=ledger.accountant) > 1.01  # a fifth round would pass the target
    restored = PrivacyLedger.from_dict(ledger.to_dict())
    assert restored.spent() == pytest.approx(ledger.spent()) and restored.steps_taken == 80
    with pytest.raises(ValueError, match="only grow"):
        ledger.record([])


def test_batch_size_larger_than_data_is_an_input_error():
    with pytest.raises(InputError, match="larger than the 10 training reports"):
        PrivacyLedger.plan(target_epsilon=1.0, delta=1e-3, n_examples=10, batch_size=64, steps=1, max_grad_norm=1.0)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_a_history_of_one_step_entries_costs_what_its_merged_steps_cost(accountant):
    """A distributed-DP site logs one (σ, q, 1) entry per round; accounting merges equal mechanisms exactly."""
    from opacus.accountants import create_accountant

    rounds = [(1.2, 0.03, 1)] * 12 + [(2.0, 0.05, 1)] * 3 + [(1.2, 0.03, 1)] * 4
    independent = create_accountant(mechanism=accountant)
    independent.history = list(rounds)  # unmerged: 19 separate mechanisms
    expected = independent.get_epsilon(delta=1e-5)
    merged = epsilon_spent(rounds, delta=1e-5, accountant=accountant)
    assert merged == epsilon_spent([(2.0, 0.05, 3), (1.2, 0.03, 16)], delta=1e-5, accountant=accountant)
    assert merged == pytest.approx(expected, rel=0.01 if accountant == "prv" else 1e-9)
    assert merged > epsilon_spent([(1.2, 0.03, 16)], delta=1e-5, accountant=accountant)


def test_noise_is_never_calibrated_for_an_infinite_epsilon():
    with pytest.raises(InputError, match="finite epsilon"):
        calibrate_noise(target_epsilon=math.inf, delta=1e-5, sample_rate=0.1, steps=10)


def test_a_cached_noise_multiplier_is_reused_only_while_it_meets_the_target(tmp_path, monkeypatch):
    """The disk cache saves the search in the next process; a tampered entry costs a search, never privacy."""
    import json

    import common.privacy as privacy

    monkeypatch.setenv("RADFL_CACHE", str(tmp_path))
    key = dict(target_epsilon=1.0, delta=1e-5, sample_rate=0.02, steps=40)
    privacy._calibrate.cache_clear()
    sigma = calibrate_noise(**key)
    files = list((tmp_path / "noise").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["sigma"] == sigma

    searches = []
    original = privacy._search_sigma
    monkeypatch.setattr(privacy, "_search_sigma", lambda *a: searches.append(a) or original(*a))
    privacy._calibrate.cache_clear()  # a new process: only the disk remembers
    assert calibrate_noise(**key) == sigma and searches == []

    files[0].write_text(json.dumps({"sigma": sigma / 2}))  # would spend far more than the target
    privacy._calibrate.cache_clear()
    assert calibrate_noise(**key) == sigma and len(searches) == 1
    assert epsilon_spent([(sigma, 0.02, 40)], delta=1e-5) <= 1.0

    files[0].write_text("not json")
    privacy._calibrate.cache_clear()
    assert calibrate_noise(**key) == sigma and len(searches) == 2


def test_the_search_is_opacus_search_and_gives_up_on_a_target_no_useful_noise_reaches(monkeypatch):
    from opacus.accountants.utils import get_noise_multiplier

    import common.privacy as privacy

    q, steps = 64 / 2000, 96
    assert privacy._search_sigma(1.0, 1e-5, q, steps, "prv") == get_noise_multiplier(
        target_epsilon=1.0, target_delta=1e-5, sample_rate=q, steps=steps, accountant="prv", epsilon_tolerance=0.01
    )
    calls = []
    original = privacy.epsilon_spent
    monkeypatch.setattr(privacy, "epsilon_spent", lambda *a, **k: calls.append(a) or original(*a, **k))
    with pytest.raises(InputError, match="no noise multiplier up to 10240 reaches it.*raise epsilon"):
        privacy._search_sigma(1e-4, 1e-3, 0.5, 10, "prv")  # PRV's ε stays above ~0.009 at any σ
    assert len(calls) == 1  # one accountant call at the limit, not a doubling up to Opacus' 1e6


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_the_memo_of_one_step_rdp_changes_no_epsilon(accountant, monkeypatch):
    from opacus.accountants.analysis import rdp

    import common.privacy as privacy

    histories = [[(0.9, 0.02, 40)], [(0.9, 0.02, 41)], [(0.9, 0.02, 40), (1.3, 0.05, 7)]]
    privacy._spent.cache_clear()
    memo = [epsilon_spent(h, delta=1e-5, accountant=accountant) for h in histories]
    assert rdp._compute_rdp.cache_info().hits > 0  # the second history reused the first one's orders
    monkeypatch.setattr(rdp, "_compute_rdp", rdp._compute_rdp.__wrapped__)  # Opacus' own function
    privacy._spent.cache_clear()
    plain = [epsilon_spent(h, delta=1e-5, accountant=accountant) for h in histories]
    privacy._spent.cache_clear()
    assert memo == plain
