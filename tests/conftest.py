"""Shared fixtures: tiny random-init models, small report sets and real-layout fixture files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MIMIC_HEADER = (
    "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,"
    "Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices"
)


@pytest.fixture(autouse=True, scope="session")
def _token_cache(tmp_path_factory):
    """Keep the token cache of the test session out of the user's home."""
    os.environ["RADFL_CACHE"] = str(tmp_path_factory.mktemp("radfl-cache"))
    os.environ["RADFL_STATE_DIR"] = str(tmp_path_factory.mktemp("site-state"))


def write_gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)


@pytest.fixture
def mimic_root(tmp_path) -> Path:
    """Three patients, four studies, in the MIMIC-CXR v2 layout, written by hand."""
    root = tmp_path / "mimic"
    reports = {
        ("10000032", "50414267"): "FINAL REPORT\nEXAMINATION: CHEST (PA AND LAT)\nINDICATION: cough\n\n"
        "FINDINGS:\n There is a small left pleural effusion.\n\nIMPRESSION:\n Small left effusion.\n",
        (
            "10000032",
            "53189527",
        ): "FINAL REPORT\n FINDINGS: No pneumothorax. Heart size is normal.\n IMPRESSION: No acute process.\n",
        (
            "10000764",
            "57375967",
        ): "Portable chest radiograph. Possible right lower lobe pneumonia.",  # no headers: whole text
        ("11000011", "50000001"): "FINDINGS: Endotracheal tube in place. Mild cardiomegaly.\nIMPRESSION: Cardiomegaly.",
    }
    for (subject, study), text in reports.items():
        path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    labels = (
        "\n".join(
            [
                MIMIC_HEADER,
                "10000032,50414267,,,,,,,,,,1.0,,,,",
                "10000032,53189527,,0.0,,,,,,,1.0,,,,0.0,",
                "10000764,57375967,,,-1.0,,,,,1.0,,,,-1.0,,",
                "11000011,50000001,,1.0,,,,,,,,,,,,1.0",
            ]
        )
        + "\n"
    )
    write_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", labels)
    return root


@pytest.fixture
def ctrate_root(tmp_path) -> Path:
    """CT-RATE layout: two reconstructions of one scan share a report."""
    from common.labels import CT_RATE

    root = tmp_path / "ctrate"
    (root / "radiology_text_reports").mkdir(parents=True)
    (root / "multi_abnormality_labels").mkdir(parents=True)
    header = "VolumeName,ClinicalInformation_EN,Technique_EN,Findings_EN,Impressions_EN\n"
    (root / "radiology_text_reports" / "train_reports.csv").write_text(
        header
        + "\n".join(
            [
                'train_1_a_1.nii.gz,Cough.,Non-contrast CT.,"Emphysema in both upper lobes. No pleural effusion.",Emphysema.',
                'train_1_a_2.nii.gz,Cough.,Non-contrast CT.,"Emphysema in both upper lobes. No pleural effusion.",Emphysema.',
                'train_2_a_1.nii.gz,Fever.,Non-contrast CT.,"Consolidation in the right lower lobe.",Pneumonia.',
                'train_2_b_1.nii.gz,Fever.,Non-contrast CT.,"Resolved consolidation.",No acute finding.',
            ]
        )
        + "\n"
    )
    (root / "radiology_text_reports" / "validation_reports.csv").write_text(
        header
        + "\n".join(
            [
                'valid_1_a_1.nii.gz,Dyspnea.,Non-contrast CT.,"Small right pleural effusion.",Effusion.',
            ]
        )
        + "\n"
    )
    names = list(CT_RATE.labels)

    def row(volume, positives):
        return volume + "," + ",".join("1" if n in positives else "0" for n in names)

    label_header = "VolumeName," + ",".join(names) + "\n"
    (root / "multi_abnormality_labels" / "train_predicted_labels.csv").write_text(
        label_header
        + "\n".join(
            [
                row("train_1_a_1.nii.gz", {"Emphysema"}),
                row("train_1_a_2.nii.gz", {"Emphysema"}),
                row("train_2_a_1.nii.gz", {"Consolidation"}),
                row("train_2_b_1.nii.gz", set()),
            ]
        )
        + "\n"
    )
    (root / "multi_abnormality_labels" / "valid_predicted_labels.csv").write_text(
        label_header + row("valid_1_a_1.nii.gz", {"Pleural effusion"}) + "\n"
    )
    return root


@pytest.fixture(scope="session")
def small_reports():
    """300 synthetic MIMIC-style reports (shared, read-only)."""
    from common.synthetic import generate

    return generate("mimic-cxr", n_reports=300, seed=1).to_report_set()


@pytest.fixture
def tiny_classifier():
    from common.labels import MIMIC_CXR
    from common.model import build_classifier

    return build_classifier("tiny", MIMIC_CXR.labels)
