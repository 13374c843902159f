import re

import numpy as np
import pytest

from common.synthetic import HOSPITALS, generate
from common.synthetic_phrases import CT_FINDINGS, MIMIC_FINDINGS, SLOTS


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", template)
    regex = "".join("(?:" + "|".join(map(re.escape, SLOTS[p[1:-1]])) + ")" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(r"(?<![a-z])" + regex, re.IGNORECASE)


def _mentions(text: str, bank: dict, label: str, form: str) -> bool:
    return any(_pattern(t).search(text) for t in bank[label][form])


@pytest.mark.parametrize("kind,bank", [("mimic-cxr", MIMIC_FINDINGS), ("ct-rate", CT_FINDINGS)])
def test_labels_follow_positive_hedged_and_negated_text(kind, bank):
    data = generate(kind, n_reports=400, seed=3, label_noise=0.0)
    checked = {"pos": 0, "unc": 0, "neg": 0}
    for text, raw in zip(data.reports, data.raw_labels):
        for j, label in enumerate(data.label_set.labels):
            if label == "No Finding":
                continue
            value = raw[j]
            if value == 1.0:
                assert _mentions(text, bank, label, "pos") or (kind == "ct-rate" and _mentions(text, bank, label, "unc")), (label, text)
                checked["pos"] += 1
            elif value == -1.0:
                assert _mentions(text, bank, label, "unc"), (label, text)
                checked["unc"] += 1
            elif value == 0.0:
                assert _mentions(text, bank, label, "neg"), (label, text)
                checked["neg"] += 1
            else:  # not mentioned: none of the label's phrasings appears
                assert not any(_mentions(text, bank, label, f) for f in ("pos", "unc", "neg")), (label, text)
    assert min(checked["pos"], checked["neg"]) > 100
    assert (checked["unc"] > 30) == (kind == "mimic-cxr")  # CT-RATE labels hedged findings positive


def test_negation_and_uncertainty_examples():
    data = generate("mimic-cxr", n_reports=600, seed=0, label_noise=0.0)
    effusion = data.label_set.labels.index("Pleural Effusion")
    pneumonia = data.label_set.labels.index("Pneumonia")
    negated = [i for i, t in enumerate(data.reports) if "No pleural effusion." in t]
    hedged = [i for i, t in enumerate(data.reports) if "Pneumonia cannot be excluded." in t]
    assert negated and hedged
    assert all(data.raw_labels[i, effusion] == 0.0 for i in negated)
    assert all(data.raw_labels[i, pneumonia] == -1.0 for i in hedged)


def test_no_finding_only_for_normal_studies():
    data = generate("mimic-cxr", n_reports=500, seed=2, label_noise=0.0)
    names = data.label_set.labels
    no_finding = data.raw_labels[:, names.index("No Finding")] == 1.0
    pathology = [j for j, n in enumerate(names) if n not in ("No Finding", "Support Devices")]
    abnormal = np.isin(data.raw_labels[:, pathology], (1.0, -1.0)).any(axis=1)
    assert no_finding.any() and not (no_finding & abnormal).any() and (no_finding | abnormal).all()


def test_deterministic_by_seed_and_seeds_differ():
    a = generate("mimic-cxr", n_reports=50, seed=7)
    b = generate("mimic-cxr", n_reports=50, seed=7)
    c = generate("mimic-cxr", n_reports=50, seed=8)
    assert a.reports == b.reports and np.array_equal(a.raw_labels, b.raw_labels, equal_nan=True)
    assert a.reports != c.reports


def test_label_noise_flips_mentioned_findings_at_about_the_rate():
    clean = generate("mimic-cxr", n_reports=1500, seed=4, label_noise=0.0)
    noisy = generate("mimic-cxr", n_reports=1500, seed=4, label_noise=0.2)
    assert clean.reports == noisy.reports  # noise changes labels, never text
    mentioned = np.isin(clean.raw_labels, (1.0, -1.0))
    flipped = (noisy.raw_labels == 0.0) & mentioned
    assert 0.15 < flipped.sum() / mentioned.sum() < 0.25


def test_hospitals_differ_in_prevalence_and_style():
    data = generate("mimic-cxr", n_reports=2000, seed=0).to_report_set()
    sites = np.array(data.sites)
    assert set(sites) == {h.name for h in HOSPITALS}
    normal = data.label_names.index("No Finding")
    rates = {h: data.labels[sites == h, normal].mean() for h in set(sites)}
    assert rates["lakeview-clinic"] > 1.5 * rates["st-elsewhere-academic"]
    numbered = {h: np.mean([" 1. " in f" {t}" for t, s in zip(data.texts, sites) if s == h]) for h in set(sites)}
    assert numbered["harbor-cancer-center"] > 0.3 and numbered["county-general"] == 0.0


def test_patients_have_one_hospital():
    data = generate("ct-rate", n_reports=300, seed=5)
    hospital_of = {}
    for patient, hospital in zip(data.patient_ids, data.hospitals):
        assert hospital_of.setdefault(patient, hospital) == hospital
    assert len(set(data.patient_ids)) < len(data.patient_ids)  # some patients have several studies
