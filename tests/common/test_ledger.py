"""The lifetime ledger: one file per data set, keyed by the data's fingerprint and nothing else."""

import pytest

from common.ledger import all_ledgers, charge, ledger_path, open_ledger, read_ledger
from common.privacy import epsilon_spent


def _charge(state, run: str, steps: int = 10):
    charge(
        state,
        run=run,
        kind="train",
        unit="report",
        epsilon_target=1.0,
        delta=1e-5,
        accountant="prv",
        noise_multiplier=1.0,
        sample_rate=0.01,
        steps=steps,
    )


def test_one_ledger_file_per_data_fingerprint(tmp_path):
    assert ledger_path(tmp_path, "aaaa") == ledger_path(tmp_path, "aaaa")
    assert ledger_path(tmp_path, "aaaa") != ledger_path(tmp_path, "bbbb")
    for fingerprint, run in (
        ("aaaa", "run-1"),
        ("bbbb", "run-1"),
        ("aaaa", "run-2"),
    ):  # the same run name on other data
        with open_ledger(tmp_path, fingerprint) as state:
            _charge(state, run)
    assert sorted(p.name for p in (tmp_path / "ledgers").glob("*.json")) == ["aaaa.json", "bbbb.json"]
    a, b = read_ledger(ledger_path(tmp_path, "aaaa")), read_ledger(ledger_path(tmp_path, "bbbb"))
    assert (a.fingerprint, [r.run for r in a.releases]) == (
        "aaaa",
        ["run-1", "run-2"],
    )  # same data: one ledger, both runs
    assert (b.fingerprint, [r.run for r in b.releases]) == ("bbbb", ["run-1"])
    # The second run on the same data composed with the first (20 steps in all), not reset; the other data set's
    # ledger holds its own 10 steps.
    assert a.lifetime_epsilon(delta=1e-5) == pytest.approx(epsilon_spent([(1.0, 0.01, 20)], delta=1e-5), rel=1e-9)
    assert b.lifetime_epsilon(delta=1e-5) == pytest.approx(epsilon_spent([(1.0, 0.01, 10)], delta=1e-5), rel=1e-9)
    assert a.lifetime_epsilon(delta=1e-5) > b.lifetime_epsilon(delta=1e-5) > 0
    assert [s.fingerprint for s in all_ledgers(tmp_path)] == ["aaaa", "bbbb"]


def test_a_ledger_file_holding_another_data_set_is_refused(tmp_path):
    with open_ledger(tmp_path, "aaaa") as state:
        _charge(state, "run-1")
    ledger_path(tmp_path, "aaaa").rename(ledger_path(tmp_path, "cccc"))  # a copied or renamed file
    with pytest.raises(ValueError, match="another data set"):
        with open_ledger(tmp_path, "cccc"):
            pass


def test_the_sites_ledger_key_is_a_function_of_its_reports_only():
    from clients.site import _fingerprint

    reports = ["No effusion.", "Small left effusion.", "Cardiomegaly."]
    assert _fingerprint(reports) == _fingerprint(list(reports))
    assert _fingerprint(reports) != _fingerprint(reports[:2] + ["Cardiomegaly. "])  # one character of one report
    assert _fingerprint(reports) != _fingerprint(reports[::-1])
