"""Report datasets: one in-memory type and one loader per on-disk format.

Every loader returns a `ReportSet`: report texts (the sections a model should read), a label
matrix over a fixed label list, and the patient of each report so that splits never put one
patient on both sides. Raw label values follow the CheXpert convention (1 positive, 0 negative,
-1 uncertain, blank not mentioned = 0); `apply_uncertainty` turns them into training targets.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.labels import CT_RATE, MIMIC_CXR

UNCERTAINTY_POLICIES = ("ones", "zeros", "ignore")


@dataclass
class ReportSet:
    """Reports with their labels; `labels` is float32 (n, L) and NaN marks an ignored label."""

    texts: list[str]
    labels: np.ndarray
    label_names: tuple[str, ...]
    patient_ids: list[str]
    study_ids: list[str]
    sites: list[str] | None = None
    splits: list[str] | None = None  # official split per report: train / val / test
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def with_labels(self, names, columns) -> ReportSet:
        """The same reports with only the label columns `columns` (named `names`)."""
        return ReportSet(
            self.texts,
            self.labels[:, list(columns)],
            tuple(names),
            self.patient_ids,
            self.study_ids,
            self.sites,
            self.splits,
            dict(self.skipped),
        )

    def fingerprint(self) -> str:
        """A hash of the texts, the key of the token cache."""
        digest = hashlib.sha256()
        for text in self.texts:
            digest.update(text.encode())
            digest.update(b"\0")
        return digest.hexdigest()[:16]


# ---------------------------------------------------------------- label values


def parse_label_value(raw: str, *, where: str) -> float:
    """CheXpert label cell → 1.0, 0.0, -1.0 or NaN (blank: not mentioned)."""
    raw = raw.strip()
    if raw == "":
        return math.nan
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value not in (1.0, 0.0, -1.0):
        raise InputError(f"{where}: label value {raw!r} is not one of 1, 0, -1 or blank; fix the label file")
    return value


def apply_uncertainty(raw: np.ndarray, policy: str) -> np.ndarray:
    """Map raw values to targets: blank → 0; -1 → 1 (`ones`), 0 (`zeros`) or NaN (`ignore`)."""
    if policy not in UNCERTAINTY_POLICIES:
        raise InputError(f"unknown uncertainty policy {policy!r}; use one of {', '.join(UNCERTAINTY_POLICIES)}")
    targets = np.nan_to_num(np.asarray(raw, dtype=np.float32), nan=0.0)
    uncertain = targets == -1.0
    targets[uncertain] = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[policy]
    return targets


# ---------------------------------------------------------------- sections

_HEADER = re.compile(r"^\s*([A-Z][A-Z &/]{2,40}):", re.MULTILINE)


def extract_sections(report: str, wanted=("FINDINGS", "IMPRESSION")) -> str:
    """FINDINGS + IMPRESSION of a free-text report, or the whole text when neither is headed.

    Sections are what the labels were derived from, and short inputs are what makes DP training
    affordable: a whole MIMIC-CXR report is several times longer than these two sections.
    """
    headers = list(_HEADER.finditer(report))
    parts = []
    for i, match in enumerate(headers):
        if match.group(1).strip() in wanted:
            end = headers[i + 1].start() if i + 1 < len(headers) else len(report)
            body = report[match.end() : end].strip()
            if body:
                parts.append(body)
    text = " ".join(parts) if parts else report
    return " ".join(text.split())


# ---------------------------------------------------------------- file helpers


def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_csv(path: Path, required: list[str]) -> list[dict[str, str]]:
    """Rows of a (possibly gzipped) CSV file, after checking that `required` columns exist."""
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    with _open_text(path) as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}")
        return list(reader)


def _first_existing(root: Path, names: list[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_file()), None)


def _require_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{what} folder not found: {path}")
    return path


# ---------------------------------------------------------------- MIMIC-CXR


def mimic_report_path(root: Path, subject_id: str, study_id: str) -> Path:
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}.txt"


def load_mimic_cxr(root, *, labeler: str = "chexpert", uncertainty: str = "ones") -> ReportSet:
    """MIMIC-CXR v2: `files/pXX/pSUBJECT/sSTUDY.txt` reports + the chexpert (or negbio) label CSV.

    The official `mimic-cxr-2.0.0-split.csv(.gz)` is used when present. Labelled studies whose
    report file is absent are skipped and counted in `skipped`.
    """
    root = _require_dir(root, "MIMIC-CXR")
    if labeler not in ("chexpert", "negbio"):
        raise InputError(f"unknown MIMIC-CXR labeler {labeler!r}; use chexpert or negbio")
    label_file = _first_existing(root, [f"mimic-cxr-2.0.0-{labeler}.csv.gz", f"mimic-cxr-2.0.0-{labeler}.csv"])
    if label_file is None:
        raise InputError(f"no mimic-cxr-2.0.0-{labeler}.csv.gz in {root}; put the label file beside files/")
    if not (root / "files").is_dir():
        raise InputError(f"no files/ folder of reports in {root}; unzip mimic-cxr-reports.zip there")
    names = MIMIC_CXR.labels
    rows = read_csv(label_file, ["subject_id", "study_id", *names])
    split_file = _first_existing(root, ["mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv"])
    study_split = {}
    if split_file is not None:
        for row in read_csv(split_file, ["study_id", "subject_id", "split"]):
            study_split[row["study_id"]] = {"validate": "val"}.get(row["split"], row["split"])
    texts, raw, patients, studies, splits, missing = [], [], [], [], [], 0
    for line, row in enumerate(rows, start=2):
        subject, study = row["subject_id"].strip(), row["study_id"].strip()
        path = mimic_report_path(root, subject, study)
        if not path.is_file():
            missing += 1
            continue
        text = extract_sections(path.read_text(encoding="utf-8", errors="replace"))
        if not text:
            raise InputError(f"report {path} is empty; remove it and its row in {label_file.name}")
        texts.append(text)
        raw.append([parse_label_value(row[n], where=f"{label_file.name} line {line}, column {n!r}") for n in names])
        patients.append(subject)
        studies.append(study)
        splits.append(study_split.get(study, ""))
    if not texts:
        raise InputError(f"none of the {len(rows)} studies in {label_file.name} has a report under {root / 'files'}")
    official = split_file is not None and all(splits)
    return ReportSet(
        texts,
        apply_uncertainty(np.array(raw), uncertainty),
        names,
        patients,
        studies,
        splits=splits if official else None,
        skipped={"missing_report": missing},
    )


# ---------------------------------------------------------------- CT-RATE

_VOLUME = re.compile(r"^(?P<split>[a-z]+)_(?P<patient>[^_]+)_(?P<scan>[^_]+)_(?P<recon>[^_.]+)\.nii(\.gz)?$")


def load_ct_rate(root) -> ReportSet:
    """CT-RATE: report CSVs + multi-abnormality label CSVs, one example per scan.

    Reconstructions of one scan share a report, so they collapse into one example. The official
    train file gives the train side, the official validation file the test side.
    """
    root = _require_dir(root, "CT-RATE")
    names = CT_RATE.labels
    report_columns = ["VolumeName", "Findings_EN", "Impressions_EN"]
    pairs = [
        ("train", "train_reports.csv", "train_predicted_labels.csv"),
        ("test", "validation_reports.csv", "valid_predicted_labels.csv"),
    ]
    texts, raw, patients, studies, splits = [], [], [], [], []
    for split, report_name, label_name in pairs:
        report_path = root / "radiology_text_reports" / report_name
        label_path = root / "multi_abnormality_labels" / label_name
        if split == "test" and not report_path.is_file() and not label_path.is_file():
            continue  # the validation half is optional
        reports = {}
        for row in read_csv(report_path, report_columns):
            scan = _scan_key(row["VolumeName"], report_path)
            text = " ".join(f"{row['Findings_EN'] or ''} {row['Impressions_EN'] or ''}".split())
            if not text:
                raise InputError(f"{report_path}: empty report for {row['VolumeName']}; fill or remove that row")
            reports.setdefault(scan, text)
        seen = set()
        for line, row in enumerate(read_csv(label_path, ["VolumeName", *names]), start=2):
            scan = _scan_key(row["VolumeName"], label_path)
            if scan in seen:
                continue
            if scan not in reports:
                raise InputError(f"{label_path.name} line {line}: {row['VolumeName']} has no report in {report_name}")
            values = [parse_label_value(row[n], where=f"{label_path.name} line {line}, column {n!r}") for n in names]
            if -1.0 in values:
                raise InputError(f"{label_path.name} line {line}: CT-RATE labels are 0 or 1, found -1")
            seen.add(scan)
            texts.append(reports[scan])
            raw.append(values)
            patients.append(scan.rsplit("_", 1)[0])
            studies.append(scan)
            splits.append(split)
    if not texts:
        raise InputError(f"no labelled scans found under {root}")
    return ReportSet(texts, apply_uncertainty(np.array(raw), "ones"), names, patients, studies, splits=splits)


def _scan_key(volume: str, path: Path) -> str:
    match = _VOLUME.match(volume.strip())
    if not match:
        raise InputError(f"{path}: VolumeName {volume!r} is not <split>_<patient>_<scan>_<recon>.nii.gz")
    return f"{match['split']}_{match['patient']}_{match['scan']}"


# ---------------------------------------------------------------- generic CSV / JSONL


def load_table(
    path,
    *,
    text_column: str = "text",
    label_columns: list[str] | None = None,
    uncertainty: str = "ones",
    patient_column: str = "patient_id",
    site_column: str = "site",
    split_column: str = "split",
) -> ReportSet:
    """A CSV or JSONL file with one report per row, a text column and 0/1(/-1) label columns.

    Without `label_columns`, every column other than the text, patient, site, split and `id`
    columns is a label. Rows without a patient column count as their own patient.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    if path.suffix in (".jsonl", ".json"):
        rows = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        rows.append({k: "" if v is None else str(v) for k, v in json.loads(line).items()})
                    except (json.JSONDecodeError, AttributeError):
                        raise InputError(f"{path} line {number}: not a JSON object") from None
        columns = list(dict.fromkeys(k for row in rows for k in row))
    else:
        rows = read_csv(path, [])
        with _open_text(path) as handle:
            columns = next(csv.reader(handle), [])
    meta = {text_column, patient_column, site_column, split_column, "id"}
    if text_column not in columns:
        raise InputError(
            f"{path}: no text column {text_column!r}; found {', '.join(columns) or 'none'} (use --text-column)"
        )
    names = tuple(label_columns) if label_columns else tuple(c for c in columns if c not in meta)
    if not names:
        raise InputError(f"{path}: no label columns; add 0/1 columns or name them with --label-columns")
    unknown = [c for c in names if c not in columns]
    if unknown:
        raise InputError(f"{path}: unknown label column(s) {', '.join(unknown)}; found {', '.join(columns)}")
    if not rows:
        raise InputError(f"{path} has no rows")
    texts, raw, patients, sites, splits = [], [], [], [], []
    for number, row in enumerate(rows, start=2 if path.suffix not in (".jsonl", ".json") else 1):
        text = " ".join((row.get(text_column) or "").split())
        if not text:
            raise InputError(f"{path} row {number}: empty report in column {text_column!r}; fill or remove it")
        texts.append(text)
        raw.append(
            [parse_label_value(row.get(n) or "", where=f"{path.name} row {number}, column {n!r}") for n in names]
        )
        patients.append(row.get(patient_column) or f"row{number}")
        sites.append(row.get(site_column) or "")
        splits.append(
            {"validate": "val", "valid": "val", "validation": "val"}.get(
                row.get(split_column, ""), row.get(split_column, "")
            )
        )
    if any(s and s not in ("train", "val", "test") for s in splits):
        raise InputError(f"{path}: column {split_column!r} must hold train, val or test")
    return ReportSet(
        texts,
        apply_uncertainty(np.array(raw), uncertainty),
        names,
        patients,
        [str(i) for i in range(len(texts))],
        sites=sites if all(sites) else None,
        splits=splits if all(splits) else None,
    )
