"""Synthetic radiology reports whose labels follow their text: the embedded default data set.

Realistic enough that privacy matters: findings co-occur through clinical scenarios (heart
failure, infection, critical care, ...), each finding is written positive, hedged ("cannot exclude
pneumonia") or negated ("no pleural effusion"), normal studies are common, and an automated
labeler's mistakes are simulated with a label-noise rate. Four hospitals differ in scenario mix
(prevalence), phrasing preferences, verbosity and report structure, so partitioning by hospital
gives naturally non-IID sites. Everything is a pure function of the seed.

This is the "easy" difficulty. `difficulty="realistic"` (`common.synthetic_realistic`) writes
reports about as hard for a classifier as real ones: priors, abbreviations, long negation
macros, impression-only findings and a CheXpert-like labeler's mistakes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cache import cache_root, store
from common.datasets import ReportSet, apply_uncertainty, extract_sections
from common.labels import CT_RATE, MIMIC_CXR, LabelSet
from common.synthetic_phrases import (
    CT_CLEAR,
    CT_FINDINGS,
    CT_INDICATIONS,
    CT_NORMAL,
    CT_SCENARIOS,
    MIMIC_CLEAR,
    MIMIC_FINDINGS,
    MIMIC_INDICATIONS,
    MIMIC_NORMAL,
    SLOTS,
)
from common.synthetic_realistic import VOICES, generate_realistic

# Scenario → probability that each finding is present. Findings outside a scenario appear at
# BACKGROUND_RATE, which keeps every label possible in every hospital.
MIMIC_SCENARIOS = {
    "normal": {},
    "heart-failure": {
        "Cardiomegaly": 0.75,
        "Edema": 0.6,
        "Pleural Effusion": 0.6,
        "Enlarged Cardiomediastinum": 0.25,
        "Atelectasis": 0.25,
        "Lung Opacity": 0.2,
    },
    "infection": {
        "Pneumonia": 0.6,
        "Consolidation": 0.4,
        "Lung Opacity": 0.75,
        "Pleural Effusion": 0.25,
        "Atelectasis": 0.2,
    },
    "critical-care": {
        "Support Devices": 0.95,
        "Atelectasis": 0.5,
        "Pleural Effusion": 0.45,
        "Edema": 0.3,
        "Lung Opacity": 0.35,
        "Pneumothorax": 0.1,
    },
    "trauma": {"Fracture": 0.65, "Pneumothorax": 0.45, "Lung Opacity": 0.2, "Pleural Other": 0.1},
    "oncology": {
        "Lung Lesion": 0.8,
        "Pleural Other": 0.2,
        "Pleural Effusion": 0.35,
        "Lung Opacity": 0.3,
        "Support Devices": 0.25,
    },
    "chronic": {"Cardiomegaly": 0.35, "Atelectasis": 0.4, "Pleural Other": 0.2, "Lung Opacity": 0.25, "Fracture": 0.15},
}
BACKGROUND_RATE = 0.02
DIFFICULTIES = ("easy", "realistic")
TEMPORAL = ("unchanged from the prior study", "new since the prior study", "slightly improved", "similar to prior")


@dataclass(frozen=True)
class HospitalStyle:
    name: str
    scenario_weights: dict[str, float]  # prevalence: the case mix of this hospital
    verbose: bool  # "There is a small left effusion." against "Small left effusion."
    hedge_rate: float  # chance that a present finding is written as uncertain
    negation_rate: float  # chance that an absent finding is explicitly negated
    headed: bool  # FINDINGS:/IMPRESSION: headers, or one unheaded paragraph
    numbered_impression: bool
    voice: str = "templated"  # how it writes realistic reports: a key of synthetic_realistic.VOICES


HOSPITALS = (
    HospitalStyle(
        "st-elsewhere-academic",
        {
            "normal": 2,
            "heart-failure": 2,
            "critical-care": 3,
            "infection": 1.5,
            "oncology": 1,
            "trauma": 0.5,
            "chronic": 1,
            "cardiovascular": 2,
            "copd": 1,
            "fibrosis": 1,
            "post-surgical": 2.5,
        },
        verbose=True,
        hedge_rate=0.2,
        negation_rate=0.45,
        headed=True,
        numbered_impression=True,
        voice="templated",
    ),
    HospitalStyle(
        "county-general",
        {
            "normal": 3,
            "heart-failure": 1,
            "critical-care": 1,
            "infection": 3,
            "oncology": 0.3,
            "trauma": 2.5,
            "chronic": 1,
            "cardiovascular": 1.5,
            "copd": 2,
            "fibrosis": 0.5,
            "post-surgical": 0.5,
        },
        verbose=False,
        hedge_rate=0.1,
        negation_rate=0.3,
        headed=True,
        numbered_impression=False,
        voice="terse",
    ),
    HospitalStyle(
        "lakeview-clinic",
        {
            "normal": 6,
            "heart-failure": 1,
            "critical-care": 0.2,
            "infection": 1,
            "oncology": 0.5,
            "trauma": 0.3,
            "chronic": 2.5,
            "cardiovascular": 2,
            "copd": 1.5,
            "fibrosis": 1,
            "post-surgical": 0.3,
        },
        verbose=True,
        hedge_rate=0.15,
        negation_rate=0.25,
        headed=False,
        numbered_impression=False,
        voice="narrative",
    ),
    HospitalStyle(
        "harbor-cancer-center",
        {
            "normal": 1.5,
            "heart-failure": 0.5,
            "critical-care": 1,
            "infection": 1,
            "oncology": 4,
            "trauma": 0.2,
            "chronic": 1,
            "cardiovascular": 1,
            "copd": 1,
            "fibrosis": 1,
            "post-surgical": 1.5,
        },
        verbose=True,
        hedge_rate=0.25,
        negation_rate=0.35,
        headed=True,
        numbered_impression=True,
        voice="oncologic",
    ),
)


@dataclass
class SyntheticReports:
    """Full report texts (with headers) and raw CheXpert-style values (1, 0, -1, NaN)."""

    label_set: LabelSet
    reports: list[str]
    raw_labels: np.ndarray
    patient_ids: list[str]
    study_ids: list[str]
    hospitals: list[str]
    clinical: list[str]  # CT-RATE's ClinicalInformation_EN
    findings: list[str]
    impressions: list[str]

    def to_report_set(self, uncertainty: str = "ones") -> ReportSet:
        return ReportSet(
            texts=[extract_sections(r) for r in self.reports],
            labels=apply_uncertainty(self.raw_labels, uncertainty),
            label_names=self.label_set.labels,
            patient_ids=list(self.patient_ids),
            study_ids=list(self.study_ids),
            sites=list(self.hospitals),
        )


def generate(
    kind: str = "mimic-cxr",
    *,
    n_reports: int = 2000,
    seed: int = 0,
    label_noise: float = 0.03,
    hospitals: tuple[HospitalStyle, ...] = HOSPITALS,
    difficulty: str = "easy",
) -> SyntheticReports:
    """`n_reports` synthetic reports of `kind` (mimic-cxr or ct-rate), deterministic in `seed`.

    `label_noise` is the chance that the simulated labeler gets a mentioned finding wrong
    (a positive or hedged finding labelled 0; a negated one labelled 1 at a fifth of that rate).
    `difficulty` "easy" gives the clean templated reports (unchanged output for a seed);
    "realistic" gives reports about as hard as real ones (`common.synthetic_realistic`), where
    the labeler also makes CheXpert-like mistakes on top of `label_noise`.
    """
    if kind not in ("mimic-cxr", "ct-rate"):
        raise ValueError(f"unknown synthetic kind {kind!r}")
    if not 0.0 <= label_noise < 0.5:
        raise ValueError("label_noise must lie in [0, 0.5)")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; use one of {', '.join(DIFFICULTIES)}")
    if hospitals is HOSPITALS:  # the default styles: the output is cached on disk (a few seconds per process)
        return _cached(kind, n_reports, seed, label_noise, difficulty)
    return _generate(kind, n_reports, seed, label_noise, hospitals, difficulty)


@functools.cache
def _source_hash() -> str:
    source = hashlib.sha256()
    for module in ("synthetic", "synthetic_phrases", "synthetic_realistic", "synthetic_realistic_phrases"):
        source.update((Path(__file__).parent / f"{module}.py").read_bytes())
    return source.hexdigest()


def _cache_path(kind: str, n_reports: int, seed: int, label_noise: float, difficulty: str) -> Path:
    """Keyed by the arguments and the generator's own source: a changed generator never reads old reports."""
    key = json.dumps([kind, int(n_reports), int(seed), repr(float(label_noise)), difficulty, _source_hash()])
    return cache_root("synthetic") / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


TEXT_FIELDS = ("reports", "patient_ids", "study_ids", "hospitals", "clinical", "findings", "impressions")


def _cached(kind: str, n_reports: int, seed: int, label_noise: float, difficulty: str) -> SyntheticReports:
    """Synthetic reports are public: every process of a run (the sweep, the server, each simulated site)
    reads the same ones; the first writes them. Plain arrays, no pickle."""
    path = _cache_path(kind, n_reports, seed, label_noise, difficulty)
    label_set = CT_RATE if kind == "ct-rate" else MIMIC_CXR
    try:
        with np.load(path, allow_pickle=False) as stored:
            fields = json.loads(stored["texts"].tobytes().decode("utf-8"))
            raw_labels = stored["raw_labels"].astype(np.float32)
        return SyntheticReports(label_set, raw_labels=raw_labels, **{name: list(fields[name]) for name in TEXT_FIELDS})
    except (OSError, ValueError, KeyError, TypeError):
        pass
    made = _generate(kind, n_reports, seed, label_noise, HOSPITALS, difficulty)
    texts = json.dumps({name: list(getattr(made, name)) for name in TEXT_FIELDS}).encode("utf-8")
    store(path, lambda tmp: np.savez(tmp, raw_labels=made.raw_labels, texts=np.frombuffer(texts, dtype=np.uint8)))
    return made


def _generate(kind, n_reports, seed, label_noise, hospitals, difficulty) -> SyntheticReports:
    ct = kind == "ct-rate"
    label_set, bank = (CT_RATE, CT_FINDINGS) if ct else (MIMIC_CXR, MIMIC_FINDINGS)
    if difficulty == "realistic":
        unknown = sorted({h.voice for h in hospitals} - set(VOICES))
        if unknown:
            raise ValueError(f"unknown hospital voice(s) {', '.join(unknown)}; use one of {', '.join(VOICES)}")
        fields = generate_realistic(kind, n_reports=n_reports, seed=seed, label_noise=label_noise, hospitals=hospitals)
        return SyntheticReports(label_set, **fields)
    scenarios = CT_SCENARIOS if ct else MIMIC_SCENARIOS
    rng = np.random.default_rng(seed)
    # Each hospital prefers some phrasings over others: a fixed Dirichlet draw per hospital.
    taste = {h.name: _phrase_taste(bank, np.random.default_rng([seed, i])) for i, h in enumerate(hospitals)}
    out = SyntheticReports(
        label_set, [], np.full((n_reports, len(label_set)), np.nan, np.float32), [], [], [], [], [], []
    )
    patient, studies_left, hospital, scenario = None, 0, None, None
    for row in range(n_reports):
        if studies_left == 0:  # a new patient with 1-4 studies at one hospital
            hospital = hospitals[int(rng.integers(len(hospitals)))]
            patient = str(10000000 + int(rng.integers(0, 9_000_000)) + row)
            studies_left = int(rng.choice([1, 1, 2, 2, 3, 4]))
            scenario = None
        studies_left -= 1
        if scenario is None or rng.random() < 0.4:  # a patient's problems tend to persist
            names = list(scenarios)
            weights = np.array([hospital.scenario_weights.get(s, 1.0) for s in names])
            scenario = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        states = _draw_states(rng, label_set, scenarios[scenario], hospital, ct)
        sentences, impression, raw = _write(
            rng, label_set, bank, taste[hospital.name], states, hospital, ct, label_noise
        )
        clinical = str(rng.choice(CT_INDICATIONS if ct else MIMIC_INDICATIONS))
        findings = " ".join(sentences)
        out.raw_labels[row] = raw
        out.patient_ids.append(patient)
        out.study_ids.append(str(50000000 + row) if not ct else f"{patient}_{'abcd'[studies_left % 4]}")
        out.hospitals.append(hospital.name)
        out.clinical.append(clinical.capitalize() + ".")
        out.findings.append(findings)
        out.impressions.append(impression)
        out.reports.append(_layout(rng, hospital, clinical, findings, impression, ct))
    return out


def _phrase_taste(bank, rng) -> dict:
    return {(label, k): rng.dirichlet(np.full(len(v), 0.7)) for label, forms in bank.items() for k, v in forms.items()}


def _draw_states(rng, label_set, scenario, hospital, ct) -> dict[str, str]:
    """Per finding: 'pos', 'unc', 'neg' (mentioned as absent) or '' (not mentioned)."""
    states = {}
    for label in label_set.labels:
        if label == "No Finding":
            continue
        present = rng.random() < scenario.get(label, BACKGROUND_RATE)
        if present:
            states[label] = "unc" if rng.random() < hospital.hedge_rate else "pos"
        else:
            common = label in ("Pneumothorax", "Pleural Effusion", "Consolidation", "Pleural effusion", "Lung nodule")
            states[label] = "neg" if rng.random() < hospital.negation_rate * (1.6 if common else 0.7) else ""
    return states


def _pick(rng, bank, taste, label, form, slots) -> str:
    """One phrasing of `label` in `form`, with the finding's side, size and lobe filled in."""
    options = bank[label][form]
    return options[int(rng.choice(len(options), p=taste[(label, form)]))].format(**slots)


def _write(rng, label_set, bank, taste, states, hospital, ct, noise):
    """Sentences, impression and the labeler's raw values for one report."""
    raw = np.full(len(label_set), np.nan, np.float32)
    sentences, impression_parts = [], []
    for label, state in states.items():
        if not state:
            continue
        slots = {slot: str(rng.choice(values)) for slot, values in SLOTS.items()}  # one finding, one side
        phrase = _pick(rng, bank, taste, label, state, slots)
        if hospital.verbose and state == "pos" and rng.random() < 0.4:
            phrase += ", " + str(rng.choice(TEMPORAL))
        sentences.append(_sentence(phrase))
        value = {"pos": 1.0, "unc": -1.0, "neg": 0.0}[state]
        if ct and value == -1.0:
            value = 1.0  # CT-RATE's labeler marks suspected findings positive
        if state != "neg":
            imp = _pick(rng, bank, taste, label, "imp", slots)
            impression_parts.append(imp if state == "pos" else f"possible {imp}")
            if rng.random() < noise:
                value = 0.0
        elif rng.random() < noise / 5:
            value = 1.0
        raw[label_set.labels.index(label)] = value
    order = rng.permutation(len(sentences))
    sentences = [sentences[i] for i in order]
    abnormal = [s for s, st in states.items() if st in ("pos", "unc") and s != "Support Devices"]
    if not abnormal:
        sentences.insert(0, _sentence(str(rng.choice(CT_CLEAR if ct else MIMIC_CLEAR))))
        impression_parts = [str(rng.choice(CT_NORMAL if ct else MIMIC_NORMAL))] + impression_parts
        if not ct:
            raw[label_set.labels.index("No Finding")] = 1.0
    if hospital.numbered_impression and len(impression_parts) > 1:
        impression = " ".join(f"{i}. {_sentence(p)}" for i, p in enumerate(impression_parts, start=1))
    else:
        impression = _sentence(
            ", ".join(impression_parts[:-1]) + (" and " if len(impression_parts) > 1 else "") + impression_parts[-1]
        )
    return sentences, impression, raw


def _sentence(phrase: str) -> str:
    return phrase[0].upper() + phrase[1:] + "."


def _layout(rng, hospital, clinical, findings, impression, ct) -> str:
    if ct:
        return f"FINDINGS: {findings}\nIMPRESSION: {impression}"
    if not hospital.headed:
        return f"Chest radiograph for {clinical}. {findings} {impression}"
    header = "FINAL REPORT\nEXAMINATION: CHEST (PA AND LAT)\n" if hospital.verbose else ""
    comparison = "None." if rng.random() < 0.5 else "Prior radiograph."
    return f"{header}INDICATION: {clinical.capitalize()}.\nCOMPARISON: {comparison}\n\nFINDINGS:\n{findings}\n\nIMPRESSION:\n{impression}\n"
