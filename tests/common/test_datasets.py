import json
import math

import numpy as np
import pytest

from common.datasets import apply_uncertainty, extract_sections, load_ct_rate, load_mimic_cxr, load_table
from common.errors import InputError
from common.labels import CT_RATE, MIMIC_CXR
from tests.conftest import MIMIC_HEADER, write_gz


def test_label_sets_match_the_public_label_files():
    assert len(MIMIC_CXR) == 14 and len(CT_RATE) == 18
    assert MIMIC_HEADER.split(",")[2:] == list(MIMIC_CXR.labels)
    assert "Interlobular septal thickening" in CT_RATE.labels and "Support Devices" in MIMIC_CXR.labels
    assert (MIMIC_CXR.name, CT_RATE.name) == ("mimic-cxr", "ct-rate")


def test_sections_findings_and_impression_or_whole_text():
    report = "EXAMINATION: CHEST\nINDICATION: fever\nFINDINGS:\n Left effusion.\nIMPRESSION:\n Effusion.\n"
    assert extract_sections(report) == "Left effusion. Effusion."
    assert extract_sections("No headers here.\n Just text.") == "No headers here. Just text."
    assert extract_sections("INDICATION: x\nIMPRESSION: Only impression.") == "Only impression."


def test_uncertainty_policies_and_blank_means_zero():
    raw = np.array([[1.0, 0.0, -1.0, np.nan]])
    assert apply_uncertainty(raw, "ones").tolist() == [[1, 0, 1, 0]]
    assert apply_uncertainty(raw, "zeros").tolist() == [[1, 0, 0, 0]]
    ignored = apply_uncertainty(raw, "ignore")
    assert ignored[0, :2].tolist() == [1, 0] and math.isnan(ignored[0, 2]) and ignored[0, 3] == 0
    with pytest.raises(InputError, match="uncertainty policy"):
        apply_uncertainty(raw, "maybe")


def test_mimic_loader_reads_reports_labels_and_sections(mimic_root):
    data = load_mimic_cxr(mimic_root)
    assert len(data) == 4 and data.label_names == MIMIC_CXR.labels
    assert data.texts[0] == "There is a small left pleural effusion. Small left effusion."
    assert data.texts[2] == "Portable chest radiograph. Possible right lower lobe pneumonia."  # fallback
    col = MIMIC_CXR.labels.index
    assert data.labels[0, col("Pleural Effusion")] == 1 and data.labels[0].sum() == 1
    assert data.labels[2, col("Pneumonia")] == 1 and data.labels[2, col("Consolidation")] == 1  # -1 -> ones
    assert data.patient_ids == ["10000032", "10000032", "10000764", "11000011"]
    assert data.splits is None and data.skipped == {"missing_report": 0}
    zeros = load_mimic_cxr(mimic_root, uncertainty="zeros")
    assert zeros.labels[2, col("Pneumonia")] == 0 and zeros.labels[2, col("Lung Opacity")] == 1
    ignore = load_mimic_cxr(mimic_root, uncertainty="ignore")
    assert np.isnan(ignore.labels[2, col("Pneumonia")])


def test_mimic_official_split_file_is_used(mimic_root):
    write_gz(
        mimic_root / "mimic-cxr-2.0.0-split.csv.gz",
        "dicom_id,study_id,subject_id,split\n"
        "d1,50414267,10000032,train\nd2,50414267,10000032,train\nd3,53189527,10000032,train\n"
        "d4,57375967,10000764,validate\nd5,50000001,11000011,test\n",
    )
    assert load_mimic_cxr(mimic_root).splits == ["train", "train", "val", "test"]


def test_mimic_negbio_labeler_and_missing_reports_are_counted(mimic_root):
    (mimic_root / "mimic-cxr-2.0.0-chexpert.csv.gz").rename(mimic_root / "mimic-cxr-2.0.0-negbio.csv.gz")
    with pytest.raises(InputError, match="chexpert"):
        load_mimic_cxr(mimic_root)
    (mimic_root / "files" / "p11" / "p11000011" / "s50000001.txt").unlink()
    data = load_mimic_cxr(mimic_root, labeler="negbio")
    assert len(data) == 3 and data.skipped == {"missing_report": 1}


@pytest.mark.parametrize("value", ["2.0", "yes", "0.5"])
def test_mimic_odd_label_values_are_rejected(mimic_root, value):
    write_gz(
        mimic_root / "mimic-cxr-2.0.0-chexpert.csv.gz", MIMIC_HEADER + f"\n10000032,50414267,{value},,,,,,,,,,,,,\n"
    )
    with pytest.raises(InputError, match=r"line 2, column 'Atelectasis'.*not one of 1, 0, -1 or blank"):
        load_mimic_cxr(mimic_root)


def test_mimic_missing_columns_files_and_empty_reports(mimic_root, tmp_path):
    with pytest.raises(InputError, match="folder not found"):
        load_mimic_cxr(tmp_path / "nowhere")
    write_gz(mimic_root / "mimic-cxr-2.0.0-chexpert.csv.gz", "subject_id,study_id,Atelectasis\n1,2,1.0\n")
    with pytest.raises(InputError, match="missing column.*Cardiomegaly"):
        load_mimic_cxr(mimic_root)
    write_gz(mimic_root / "mimic-cxr-2.0.0-chexpert.csv.gz", MIMIC_HEADER + "\n10000032,50414267,,,,,,,,,,1.0,,,,\n")
    (mimic_root / "files" / "p10" / "p10000032" / "s50414267.txt").write_text("   \n")
    with pytest.raises(InputError, match="is empty"):
        load_mimic_cxr(mimic_root)


def test_ct_rate_one_example_per_scan_and_official_split(ctrate_root):
    data = load_ct_rate(ctrate_root)
    assert data.study_ids == ["train_1_a", "train_2_a", "train_2_b", "valid_1_a"]
    assert data.patient_ids == ["train_1", "train_2", "train_2", "valid_1"]
    assert data.splits == ["train", "train", "train", "test"]
    col = CT_RATE.labels.index
    assert data.labels[0, col("Emphysema")] == 1 and data.labels[0].sum() == 1
    assert data.texts[0] == "Emphysema in both upper lobes. No pleural effusion. Emphysema."
    assert data.labels[3, col("Pleural effusion")] == 1


def test_ct_rate_bad_inputs(ctrate_root):
    labels = ctrate_root / "multi_abnormality_labels" / "train_predicted_labels.csv"
    original = labels.read_text()
    labels.write_text(original.replace("train_2_b_1.nii.gz", "scan-without-pattern"))
    with pytest.raises(InputError, match="VolumeName"):
        load_ct_rate(ctrate_root)
    labels.write_text(original.replace("train_2_b_1.nii.gz,0", "train_2_b_1.nii.gz,-1"))
    with pytest.raises(InputError, match="0 or 1"):
        load_ct_rate(ctrate_root)
    (ctrate_root / "radiology_text_reports" / "train_reports.csv").unlink()
    with pytest.raises(InputError, match="file not found.*train_reports.csv"):
        load_ct_rate(ctrate_root)


def test_generic_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "reports.csv"
    csv_path.write_text(
        "id,text,patient_id,effusion,pneumonia\n1,Left effusion.,a,1,0\n2,No acute process.,b,0,\n3,Possible pneumonia.,b,,-1\n"
    )
    data = load_table(csv_path)
    assert data.label_names == ("effusion", "pneumonia") and data.patient_ids == ["a", "b", "b"]
    assert data.labels.tolist() == [[1, 0], [0, 0], [0, 1]]
    only = load_table(csv_path, label_columns=["pneumonia"], uncertainty="zeros")
    assert only.labels.tolist() == [[0], [0], [0]]
    jsonl = tmp_path / "reports.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps(r) for r in [{"report": "Effusion.", "effusion": 1}, {"report": "Clear.", "effusion": 0}])
    )
    data = load_table(jsonl, text_column="report")
    assert data.labels.tolist() == [[1], [0]] and data.patient_ids == ["row1", "row2"]


def test_generic_bad_inputs(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("text,a\nFine.,1\n")
    with pytest.raises(InputError, match="unknown label column.*b"):
        load_table(path, label_columns=["b"])
    with pytest.raises(InputError, match="no text column 'report'"):
        load_table(path, text_column="report")
    path.write_text("text,a\n,1\n")
    with pytest.raises(InputError, match="row 2: empty report"):
        load_table(path)
    path.write_text("text\nOnly text.\n")
    with pytest.raises(InputError, match="no label columns"):
        load_table(path)
    with pytest.raises(InputError, match="file not found"):
        load_table(tmp_path / "missing.csv")
