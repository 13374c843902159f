"""The sweep survives being killed, and the report's numbers come from the cell records."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from simulations.cli import main
from simulations.report import mean_ci, paired_bootstrap, write_report

ROOT = Path(__file__).resolve().parents[2]
SWEEP = [
    "sweep",
    "--models",
    "tiny",
    "--modes",
    "centralized",
    "--epsilons",
    "0.001,1,2,4,inf",
    "--accountant",
    "rdp",
    "--synthetic-reports",
    "200",
    "--batch-size",
    "16",
    "--delta",
    "1e-3",
    "--epochs",
    "1",
    "--quiet",
]
# Cells long enough (a few seconds each) that the kill reliably lands mid-sweep.
SLOW_SWEEP = [*SWEEP, "--synthetic-reports", "800", "--epochs", "3"]


def test_killed_sweep_resumes_without_redoing_finished_cells(tmp_path):
    out = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulations.cli", *SLOW_SWEEP, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("cells/*/metrics.json"))) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # interrupt mid-sweep
    proc.wait(timeout=60)
    finished_before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/metrics.json")}
    assert 1 <= len(finished_before) < 4, "the sweep should have been interrupted part-way"

    assert main([*SLOW_SWEEP, "--out", str(out)]) == 0
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in out.glob("cells/*/status.json")}
    assert len(statuses) == 5 and sorted(statuses.values()) == ["done"] * 4 + ["infeasible"]
    for name, mtime in finished_before.items():  # finished cells were not redone
        assert (out / "cells" / name / "metrics.json").stat().st_mtime_ns == mtime
    rows = list(csv.DictReader(open(out / "results.csv")))
    infeasible = [r for r in rows if r["status"] == "infeasible"]
    assert len(infeasible) == 1 and "cannot reach epsilon" in infeasible[0]["reason"]  # reported, not dropped
    report = (out / "report.md").read_text()
    assert "## Cells without a result" in report and "infeasible" in report
    assert (out / "privacy_utility.png").stat().st_size > 10_000 and (out / "per_label_f1.png").stat().st_size > 10_000


def _fake_cell(folder: Path, *, mode, eps, seed, f1, status="done", reason="", probs=None, targets=None):
    name = f"synthetic-mimic__tiny__{mode}__eps{'inf' if math.isinf(eps) else f'{eps:g}'}__seed{seed}"
    cell = folder / "cells" / name
    cell.mkdir(parents=True)
    (cell / "status.json").write_text(
        json.dumps(
            {
                "status": status,
                "reason": reason,
                "cell": {
                    "dataset": "synthetic-mimic",
                    "data": "",
                    "model": "tiny",
                    "mode": mode,
                    "epsilon": eps,
                    "seed": seed,
                },
            }
        )
    )
    if status == "done":
        record = {
            "privacy": {
                "epsilon_spent": "inf" if math.isinf(eps) else eps * 0.99,
                "delta": 1e-5,
                "noise_multiplier": 1.0,
                "sample_rate": 0.1,
                "steps": 10,
            },
            "metrics": {
                "weighted_f1": f1,
                "micro_f1": f1 + 0.01,
                "macro_f1": f1 - 0.01,
                "per_label": {"a": {"f1": f1}, "b": {"f1": f1 / 2}},
            },
            "timing": {"train_seconds": 12.5},
            "federation": {"bytes_up_per_round": 1000} if mode != "centralized" else {},
        }
        (cell / "metrics.json").write_text(json.dumps(record))
        np.savez(cell / "predictions.npz", targets=targets, probs=probs)


def test_report_numbers_match_the_cell_records(tmp_path):
    rng = np.random.default_rng(0)
    targets = (rng.random((80, 2)) < 0.4).astype(np.float32)
    good = np.where(targets > 0, 0.9, 0.1)
    noisy = np.where(rng.random((80, 2)) < 0.3, 1 - good, good)
    f1s = {
        ("centralized", 1.0): [0.60, 0.70, 0.65],
        ("centralized", math.inf): [0.90, 0.92, 0.91],
        ("federated", 1.0): [0.50, 0.55, 0.52],
        ("federated", math.inf): [0.88, 0.90, 0.86],
    }
    for (mode, eps), values in f1s.items():
        for seed, f1 in enumerate(values):
            _fake_cell(
                tmp_path,
                mode=mode,
                eps=eps,
                seed=seed,
                f1=f1,
                targets=targets,
                probs=good if math.isinf(eps) else noisy,
            )
    _fake_cell(
        tmp_path,
        mode="centralized",
        eps=0.01,
        seed=0,
        f1=0,
        status="infeasible",
        reason="the prv accountant cannot reach epsilon 0.01",
    )
    _fake_cell(tmp_path, mode="federated", eps=0.01, seed=0, f1=0, status="failed", reason="RunFailed: site 2 crashed")
    write_report(tmp_path)

    rows = {r["cell"]: r for r in csv.DictReader(open(tmp_path / "results.csv"))}
    assert len(rows) == 14
    assert float(rows["synthetic-mimic__tiny__federated__eps1__seed2"]["weighted_f1"]) == 0.52
    assert rows["synthetic-mimic__tiny__centralized__epsinf__seed0"]["epsilon_target"] == "inf"
    assert rows["synthetic-mimic__tiny__federated__eps0.01__seed0"]["status"] == "failed"

    report = (tmp_path / "report.md").read_text()
    values = np.array(f1s[("centralized", 1.0)])
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
    assert f"{values.mean():.3f} ± {half:.3f}" in report  # mean ± 95% CI over seeds
    drop = np.mean(f1s[("federated", 1.0)]) - np.mean(f1s[("federated", math.inf)])
    assert f"{drop:+.3f}" in report  # drop against non-private of the same mode
    assert "paired bootstrap" in report.lower() and "centralized − federated" in report
    assert "| centralized__eps" not in report and "site 2 crashed" in report and "cannot reach epsilon 0.01" in report


def test_confidence_interval():
    mean, half = mean_ci([0.5, 0.7])
    assert mean == pytest.approx(0.6) and half == pytest.approx(12.706 * 0.1414214 / 1.4142136, rel=1e-3)
    assert mean_ci([0.4]) == (0.4, None)


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(1)
    targets = (rng.random((200, 3)) < 0.3).astype(np.float32)
    perfect = np.where(targets > 0, 0.9, 0.1)
    flipped = np.where(rng.random((200, 3)) < 0.25, 1 - perfect, perfect)
    diff, p = paired_bootstrap([(targets, perfect, flipped)], ["a", "b", "c"], resamples=300)
    assert diff > 0.2 and p < 0.01
    diff, p = paired_bootstrap([(targets, flipped, flipped)], ["a", "b", "c"], resamples=300)
    assert diff == 0 and p == 1.0


def test_the_quick_grid_has_every_mode_at_every_epsilon_but_no_distributed_noise_at_inf():
    """Distributed DP sums noise shares: without an ε there is nothing to calibrate (it used to run at σ = 10)."""
    from simulations.sweep import parse_grid

    class Args:
        preset = "quick"

        def __getattr__(self, name):
            return None

    cells, base = parse_grid(Args())
    found = {(c.mode, c.epsilon) for c in cells}
    assert len(cells) == 11 and ("federated-distributed", math.inf) not in found
    assert {("centralized", math.inf), ("federated", math.inf), ("federated-distributed", 0.1)} <= found
    assert base.synthetic_difficulty == "easy" and base.max_examples == 2_000
