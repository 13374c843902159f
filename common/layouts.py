"""Write synthetic reports to disk in the real MIMIC-CXR or CT-RATE file layout.

A site that runs `radfl synth` gets files its loader reads exactly as it would read the
credentialed data, which is how the deployment test gives every hospital its own folder.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np

from common.labels import CT_RATE, MIMIC_CXR
from common.partition import patient_split
from common.synthetic import SyntheticReports


def _cell(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.1f}"


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
            handle.write(buffer.getvalue())
    else:
        path.write_text(buffer.getvalue(), encoding="utf-8")


def write_mimic_cxr(data: SyntheticReports, out, *, seed: int = 0) -> Path:
    """`files/pXX/pSUBJECT/sSTUDY.txt`, chexpert and negbio label CSVs and the official split file."""
    if data.label_set is not MIMIC_CXR:
        raise ValueError("write_mimic_cxr needs MIMIC-CXR style synthetic reports")
    out = Path(out)
    rows = []
    for text, raw, subject, study in zip(data.reports, data.raw_labels, data.patient_ids, data.study_ids, strict=True):
        path = out / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        rows.append([subject, study, *[_cell(v) for v in raw]])
    header = ["subject_id", "study_id", *MIMIC_CXR.labels]
    _write_csv(out / "mimic-cxr-2.0.0-chexpert.csv.gz", header, rows)
    _write_csv(out / "mimic-cxr-2.0.0-negbio.csv.gz", header, rows)
    split_of = _split_names(data.patient_ids, seed, {"train": "train", "val": "validate", "test": "test"})
    rng = np.random.default_rng(seed)
    split_rows = []
    for i, (subject, study) in enumerate(zip(data.patient_ids, data.study_ids, strict=True)):
        for view in range(int(rng.integers(1, 3))):  # one row per image: PA and often lateral
            split_rows.append([f"{i:08x}-{view:04x}-synthetic", study, subject, split_of[i]])
    _write_csv(out / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split_rows)
    return out


def write_ct_rate(data: SyntheticReports, out, *, seed: int = 0) -> Path:
    """radiology_text_reports/ and multi_abnormality_labels/ CSVs; 1-2 reconstructions per scan."""
    if data.label_set is not CT_RATE:
        raise ValueError("write_ct_rate needs CT-RATE style synthetic reports")
    out = Path(out)
    split_of = _split_names(data.patient_ids, seed, {"train": "train", "val": "train", "test": "valid"})
    patient_number = {p: n for n, p in enumerate(dict.fromkeys(data.patient_ids), start=1)}
    rng = np.random.default_rng(seed)
    reports = {"train": [], "valid": []}
    labels = {"train": [], "valid": []}
    for i, patient in enumerate(data.patient_ids):
        split = split_of[i]
        scan = data.study_ids[i].rsplit("_", 1)[1]
        for recon in range(1, int(rng.integers(1, 3)) + 1):
            volume = f"{split}_{patient_number[patient]}_{scan}_{recon}.nii.gz"
            reports[split].append(
                [volume, data.clinical[i], "Non-contrast chest CT.", data.findings[i], data.impressions[i]]
            )
            labels[split].append([volume, *[str(int(v == 1.0)) for v in data.raw_labels[i]]])
    report_header = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
    _write_csv(out / "radiology_text_reports" / "train_reports.csv", report_header, reports["train"])
    _write_csv(out / "radiology_text_reports" / "validation_reports.csv", report_header, reports["valid"])
    _write_csv(
        out / "multi_abnormality_labels" / "train_predicted_labels.csv",
        ["VolumeName", *CT_RATE.labels],
        labels["train"],
    )
    _write_csv(
        out / "multi_abnormality_labels" / "valid_predicted_labels.csv",
        ["VolumeName", *CT_RATE.labels],
        labels["valid"],
    )
    return out


def _split_names(patient_ids: list[str], seed: int, names: dict[str, str]) -> list[str]:
    index = {"train": 0, "val": 1, "test": 2}
    parts = patient_split(patient_ids, val_fraction=0.1, test_fraction=0.1, seed=seed)
    out = [""] * len(patient_ids)
    for name, idx in zip(index, parts, strict=True):
        for i in idx:
            out[i] = names[name]
    return out
