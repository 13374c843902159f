"""Label sets of the two supported radiology datasets.

The names are spelled exactly as the column headers of the public label files, so a loader can
check a CSV header against them without a translation table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


# MIMIC-CXR v2: the 14 CheXpert observations (mimic-cxr-2.0.0-chexpert.csv.gz column order).
MIMIC_CXR = LabelSet(
    "mimic-cxr",
    (
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Enlarged Cardiomediastinum",
        "Fracture",
        "Lung Lesion",
        "Lung Opacity",
        "No Finding",
        "Pleural Effusion",
        "Pleural Other",
        "Pneumonia",
        "Pneumothorax",
        "Support Devices",
    ),
)

# CT-RATE: the 18 abnormalities of multi_abnormality_labels/*_predicted_labels.csv.
CT_RATE = LabelSet(
    "ct-rate",
    (
        "Medical material",
        "Arterial wall calcification",
        "Cardiomegaly",
        "Pericardial effusion",
        "Coronary artery wall calcification",
        "Hiatal hernia",
        "Lymphadenopathy",
        "Emphysema",
        "Atelectasis",
        "Lung nodule",
        "Lung opacity",
        "Pulmonary fibrotic sequela",
        "Pleural effusion",
        "Mosaic attenuation pattern",
        "Peribronchial thickening",
        "Consolidation",
        "Bronchiectasis",
        "Interlobular septal thickening",
    ),
)
