"""The CLI end to end with the tiny model, and every bad input: one line, exit 2, no traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.cli import main

TINY = [
    "--model",
    "tiny",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--synthetic-reports",
    "240",
    "--delta",
    "1e-4",
    "--quiet",
    "--synthetic-difficulty",
    "easy",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    assert main(["train", *TINY, "--epsilon", "2", "--out", str(out)]) == 0
    return out


def test_train_writes_the_metrics_schema_and_an_adapter(trained, capsys):
    record = json.loads((trained / "metrics.json").read_text())
    assert set(record["config"]) >= {
        "dataset",
        "model",
        "epsilon",
        "delta",
        "epochs",
        "batch_size",
        "lr",
        "max_grad_norm",
        "lora_rank",
        "seed",
    }
    privacy = record["privacy"]
    assert set(privacy) >= {
        "epsilon_target",
        "epsilon_spent",
        "delta",
        "noise_multiplier",
        "sample_rate",
        "steps",
        "accountant",
        "max_grad_norm",
    }
    assert 0 < privacy["epsilon_spent"] <= privacy["epsilon_target"] == 2.0 and privacy["accountant"] == "prv"
    assert (
        set(record["metrics"]) >= {"weighted_f1", "micro_f1", "macro_f1", "per_label"}
        and len(record["metrics"]["per_label"]) == 14
    )
    assert record["data"]["n_train"] + record["data"]["n_val"] + record["data"]["n_test"] == 240
    assert record["val_metrics"] is None  # under DP nothing uses the validation split: it is not scored
    assert record["thresholds"]["rule"].startswith("tuned per label on 750 public synthetic reports")
    assert record["timing"]["train_seconds"] > 0 and record["timing"]["examples_per_second"] > 0
    assert (trained / "adapter" / "adapter_config.json").is_file() and (
        trained / "adapter" / "adapter_model.safetensors"
    ).is_file()


def test_recorded_epsilon_recomputes_independently(trained):
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    p = json.loads((trained / "metrics.json").read_text())["privacy"]
    acc = pld_privacy_accountant.PLDAccountant()
    acc.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(p["sample_rate"], dp_accounting.GaussianDpEvent(p["noise_multiplier"])),
            p["steps"],
        )
    )
    assert acc.get_epsilon(p["delta"]) == pytest.approx(p["epsilon_spent"], rel=0.05, abs=0.012)


def test_predict_text_and_file(trained, tmp_path, capsys):
    assert (
        main(
            [
                "predict",
                "--adapter",
                str(trained / "adapter"),
                "--text",
                "FINDINGS: Small left pleural effusion. IMPRESSION: Effusion.",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Pleural Effusion" in out and "probability" in out and len(out.splitlines()) >= 15
    reports = tmp_path / "reports.txt"
    reports.write_text("No acute cardiopulmonary process.\nModerate cardiomegaly.\n")
    target = tmp_path / "probs.csv"
    assert (
        main(["predict", "--adapter", str(trained / "adapter"), "--input", str(reports), "--output", str(target)]) == 0
    )
    rows = target.read_text().splitlines()
    assert rows[0].startswith("index,Atelectasis") and len(rows) == 3
    assert all(0.0 <= float(v) <= 1.0 for v in rows[1].split(",")[1:])


def test_non_private_baseline_uses_the_same_path(tmp_path):
    assert main(["train", *TINY, "--epsilon", "inf", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "metrics.json").read_text())
    p = record["privacy"]
    assert p["epsilon_target"] == "inf" and p["noise_multiplier"] == 0 and p["accountant"] is None
    assert record["val_metrics"]["n_examples"] == record["data"]["n_val"]  # the thresholds' split, scored once


@pytest.mark.parametrize("layout,dataset", [("mimic-cxr", "mimic-cxr"), ("ct-rate", "ct-rate")])
def test_synth_writes_a_real_layout_that_train_reads(tmp_path, layout, dataset):
    data = tmp_path / "data"
    assert main(["synth", "--layout", layout, "--reports", "150", "--out", str(data)]) == 0
    out = tmp_path / "run"
    assert (
        main(["train", *TINY, "--dataset", dataset, "--data", str(data), "--warm-start", "none", "--out", str(out)])
        == 0
    )
    record = json.loads((out / "metrics.json").read_text())
    assert record["data"]["n_reports"] == 150 and len(record["metrics"]["per_label"]) == (
        14 if dataset == "mimic-cxr" else 18
    )


def _bad(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def _csv(tmp_path, text):
    path = tmp_path / "r.csv"
    path.write_text(text)
    return str(path)


BAD_INPUTS = {
    "missing folder": (lambda t: ["--dataset", "mimic-cxr", "--data", str(t / "none")], "folder not found"),
    "missing data path": (lambda t: ["--dataset", "ct-rate"], "needs --data PATH"),
    "missing file": (lambda t: ["--dataset", "csv", "--data", str(t / "none.csv")], "file not found"),
    "missing text column": (
        lambda t: ["--dataset", "csv", "--data", _csv(t, "report,a\nx,1\n")],
        "no text column 'text'",
    ),
    "unknown label column": (
        lambda t: ["--dataset", "csv", "--data", _csv(t, "text,a\nx,1\n"), "--label-columns", "b"],
        "unknown label column",
    ),
    "empty report": (lambda t: ["--dataset", "csv", "--data", _csv(t, "text,a\n  ,1\n")], "empty report"),
    "odd label value": (
        lambda t: ["--dataset", "csv", "--data", _csv(t, "text,a\nx,2\n")],
        "not one of 1, 0, -1 or blank",
    ),
    "zero epsilon": (lambda t: ["--epsilon", "0"], "epsilon must be positive"),
    "negative epsilon": (lambda t: ["--epsilon", "-1"], "epsilon must be positive"),
    "delta too large": (lambda t: ["--delta", "0.05"], "below 1/N"),
    "batch larger than data": (lambda t: ["--batch-size", "5000"], "larger than the"),
    "unreachable epsilon": (lambda t: ["--epsilon", "0.001", "--accountant", "rdp"], "use --accountant prv"),
    "model not offline": (lambda t: ["--model", "prajjwal1/bert-small"], "not available offline"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    extra, message = BAD_INPUTS[case]
    out = tmp_path / "out"
    args = [
        "train",
        "--model",
        "tiny",
        "--synthetic-reports",
        "100",
        "--batch-size",
        "16",
        "--quiet",
        "--out",
        str(out),
    ]
    code, err = _bad(args + extra(tmp_path), capsys)
    assert code == 2 and message in err and len(err.splitlines()) == 1 and err.startswith("radfl: error:")
    assert not out.exists()  # nothing was written


def test_bad_input_exits_2_without_traceback_in_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.cli", "train", "--epsilon", "-1", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["radfl: error: --epsilon must be positive (or inf), got -1.0"]


def test_synth_never_overwrites(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("precious")
    code, err = _bad(["synth", "--out", str(tmp_path)], capsys)
    assert code == 2 and "not empty" in err and (tmp_path / "keep.txt").read_text() == "precious"


def test_a_patient_level_run_records_its_unit_and_its_epsilon_over_patients(tmp_path):
    """`--privacy-unit patient`: the ledger counts patients (fewer than reports), samples them, and
    metrics.json says which unit ε protects."""
    from common.config import RunConfig
    from common.data import load_reports
    from common.partition import dataset_splits
    from common.privacy import steps_per_epoch_for

    out = tmp_path / "run"
    assert main(["train", *TINY, "--epsilon", "2", "--privacy-unit", "patient", "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    privacy, recipe = record["privacy"], record["recipe"]
    cfg = RunConfig(model="tiny", synthetic_reports=240, synthetic_difficulty="easy")
    reports = load_reports(cfg)
    train = dataset_splits(reports, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)[0]
    patients = {reports.patient_ids[i] for i in train}
    assert len(patients) < len(train) == record["data"]["n_train"]  # several reports per patient
    assert privacy["unit"] == "patient" and privacy["level"].startswith("patient")
    per_epoch = steps_per_epoch_for(len(patients), recipe["batch_size"])
    assert per_epoch != steps_per_epoch_for(len(train), recipe["batch_size"])
    assert privacy["sample_rate"] == pytest.approx(1 / per_epoch)  # one epoch = one pass over the patients
    assert 0 < privacy["epsilon_spent"] <= privacy["epsilon_target"] == 2.0 and privacy["steps"] == recipe["steps"]
