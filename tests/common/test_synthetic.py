import dataclasses
import hashlib
import re
import warnings

import numpy as np
import pytest

import common.synthetic_realistic as realistic
from common.metrics import compute_metrics
from common.partition import dataset_splits
from common.synthetic import HOSPITALS, generate
from common.synthetic_phrases import CT_FINDINGS, MIMIC_FINDINGS, SLOTS
from common.synthetic_realistic import Dice, Finding, LabelerErrors, Mention, label_mentions


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", template)
    regex = "".join(
        "(?:" + "|".join(map(re.escape, SLOTS[p[1:-1]])) + ")" if p.startswith("{") else re.escape(p) for p in parts
    )
    return re.compile(r"(?<![a-z])" + regex, re.IGNORECASE)


def _mentions(text: str, bank: dict, label: str, form: str) -> bool:
    return any(_pattern(t).search(text) for t in bank[label][form])


@pytest.mark.parametrize("kind,bank", [("mimic-cxr", MIMIC_FINDINGS), ("ct-rate", CT_FINDINGS)])
def test_labels_follow_positive_hedged_and_negated_text(kind, bank):
    data = generate(kind, n_reports=400, seed=3, label_noise=0.0)
    checked = {"pos": 0, "unc": 0, "neg": 0}
    for text, raw in zip(data.reports, data.raw_labels, strict=True):
        for j, label in enumerate(data.label_set.labels):
            if label == "No Finding":
                continue
            value = raw[j]
            if value == 1.0:
                assert _mentions(text, bank, label, "pos") or (
                    kind == "ct-rate" and _mentions(text, bank, label, "unc")
                ), (label, text)
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
    numbered = {
        h: np.mean([" 1. " in f" {t}" for t, s in zip(data.texts, sites, strict=True) if s == h]) for h in set(sites)
    }
    assert numbered["harbor-cancer-center"] > 0.3 and numbered["county-general"] == 0.0


def test_patients_have_one_hospital():
    data = generate("ct-rate", n_reports=300, seed=5)
    hospital_of = {}
    for patient, hospital in zip(data.patient_ids, data.hospitals, strict=True):
        assert hospital_of.setdefault(patient, hospital) == hospital
    assert len(set(data.patient_ids)) < len(data.patient_ids)  # some patients have several studies


# ---------------------------------------------------------------- difficulty

# sha256 prefixes of the easy output, computed before `difficulty` existed: cached results and the
# tests above rely on easy reports staying the same for a seed.
EASY_HASHES = {
    ("mimic-cxr", 0, 0.03): "098002e1e9da2e1b",
    ("mimic-cxr", 7, 0.2): "4e35d62bf88520b0",
    ("ct-rate", 1, 0.0): "4e173e39a2df1cfa",
    ("ct-rate", 0, 0.03): "df658dd1c7114452",
}
NO_ERRORS = LabelerErrors(abbr=0, typo=0, tail=0, far=0, resolved=0, hedge=0)


def _digest(data) -> str:
    digest = hashlib.sha256()
    for fields in zip(data.reports, data.findings, data.impressions, data.clinical, strict=True):
        for text in fields:
            digest.update(text.encode())
            digest.update(b"\0")
    digest.update(np.nan_to_num(data.raw_labels, nan=9).tobytes())
    digest.update("|".join(data.patient_ids + data.study_ids + data.hospitals).encode())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("kind,seed,noise", list(EASY_HASHES))
def test_easy_output_is_unchanged(kind, seed, noise):
    data = generate(kind, n_reports=500, seed=seed, label_noise=noise)
    assert _digest(data) == EASY_HASHES[(kind, seed, noise)]
    assert (
        _digest(generate(kind, n_reports=500, seed=seed, label_noise=noise, difficulty="easy"))
        == EASY_HASHES[(kind, seed, noise)]
    )


def test_difficulty_and_voice_are_validated():
    with pytest.raises(ValueError, match="difficulty"):
        generate("mimic-cxr", n_reports=10, difficulty="hard")
    odd = (dataclasses.replace(HOSPITALS[0], voice="poetic"),)
    with pytest.raises(ValueError, match="voice"):
        generate("mimic-cxr", n_reports=10, hospitals=odd, difficulty="realistic")


@pytest.mark.parametrize("kind", ["mimic-cxr", "ct-rate"])
def test_realistic_is_deterministic_and_complete(kind):
    a = generate(kind, n_reports=300, seed=5, difficulty="realistic")
    b = generate(kind, n_reports=300, seed=5, difficulty="realistic")
    c = generate(kind, n_reports=300, seed=6, difficulty="realistic")
    assert a.reports == b.reports and np.array_equal(a.raw_labels, b.raw_labels, equal_nan=True)
    assert a.reports != c.reports and a.reports != generate(kind, n_reports=300, seed=5).reports
    assert len(a.reports) == len(a.findings) == len(a.impressions) == len(a.clinical) == len(set(a.study_ids)) == 300
    assert all(a.impressions) and all(a.clinical)
    hospital_of = {}
    for patient, hospital in zip(a.patient_ids, a.hospitals, strict=True):
        assert hospital_of.setdefault(patient, hospital) == hospital
    values = set(np.unique(a.raw_labels[~np.isnan(a.raw_labels)]))
    if kind == "ct-rate":  # CT-RATE labels are 0/1; suspected counts as 1; the layout writer needs findings
        assert values == {0.0, 1.0} and all(a.findings) and all(r.startswith("FINDINGS: ") for r in a.reports)
    else:
        assert values == {-1.0, 0.0, 1.0}


def test_labeler_on_constructed_mentions():
    ptx, effusion, edema = 12, 9, 3  # MIMIC-CXR columns
    dice = Dice(np.random.default_rng(0))
    label = lambda mentions, errors=NO_ERRORS, sections=("impression",), ct=False: label_mentions(  # noqa: E731
        dice, mentions, 14, sections=sections, errors=errors, noise=0.0, ct=ct
    )
    resolved = [Mention(ptx, "gone", "impression")]
    assert label(resolved)[ptx] == 0.0  # a finding that resolved is not positive ...
    assert label(resolved, LabelerErrors(resolved=1.0))[ptx] == 1.0  # ... unless the labeler errs
    assert np.isnan(label([Mention(ptx, "pos", "findings")])[ptx])  # it reads the impression only
    assert label([Mention(ptx, "pos", "findings")], sections=("findings", "impression"))[ptx] == 1.0
    assert np.isnan(label([Mention(ptx, "pos", "impression", "abbr")], LabelerErrors(abbr=1.0))[ptx])  # "PTX" missed
    assert label([Mention(effusion, "neg", "impression", "far")], LabelerErrors(far=1.0))[effusion] == 1.0
    assert label([Mention(effusion, "neg", "impression", "far")])[effusion] == 0.0
    mixed = [Mention(edema, "neg", "impression"), Mention(edema, "unc", "impression")]
    assert label(mixed)[edema] == -1.0 and label(mixed, ct=True)[edema] == 1.0  # uncertain beats negated
    assert label([*mixed, Mention(edema, "pos", "impression")])[edema] == 1.0


def test_resolved_finding_is_written_and_not_labelled_positive():
    names = realistic.MIMIC_CXR.labels
    voice, ptx = realistic.VOICES["templated"], names.index("Pneumothorax")
    dice = Dice(np.random.default_rng(1))
    worded = 0
    for _ in range(200):
        gone = {"Pneumothorax": realistic._slots(dice)}
        report, _, _, mentions, sections = realistic._write_mimic(dice, voice, {}, gone, "trauma", True)
        said = [m for m in mentions if m.label == ptx and m.polarity == "gone"]
        if said:
            worded += 1
            named = re.search(r"pneumothora|ptx", report, re.I) or any(m.hard == "typo" for m in said)
            assert re.search(r"resol|residual|no longer", report, re.I) and named, report
        assert not any(m.label == ptx and m.polarity in ("pos", "unc") for m in mentions)
        raw = label_mentions(dice, mentions, len(names), sections=sections, errors=NO_ERRORS, noise=0.0, ct=False)
        assert raw[ptx] != 1.0
        always_wrong = label_mentions(
            dice, mentions, len(names), sections=sections, errors=LabelerErrors(resolved=1.0), noise=0, ct=False
        )
        assert (always_wrong[ptx] == 1.0) == any(m.section in sections for m in said)
    assert 40 < worded < 190


def test_hedged_finding_is_uncertain_where_the_labeler_reads_it():
    names = realistic.MIMIC_CXR.labels
    pneumonia = names.index("Pneumonia")
    dice = Dice(np.random.default_rng(2))
    uncertain = 0
    for voice in realistic.VOICES.values():
        for _ in range(50):
            present = {"Pneumonia": Finding("Pneumonia", "unc", "", realistic._slots(dice))}
            report, _, impression, mentions, sections = realistic._write_mimic(dice, voice, present, {}, "fever", False)
            raw = label_mentions(dice, mentions, len(names), sections=sections, errors=NO_ERRORS, noise=0.0, ct=False)
            seen = [m for m in mentions if m.label == pneumonia and m.section in sections]
            assert (raw[pneumonia] == -1.0) == bool(seen) and (bool(seen) or np.isnan(raw[pneumonia]))
            if seen and not any(m.hard for m in seen):
                assert re.search(r"pneumonia|infect|aspiration", report, re.I)
                assert sections != ("impression",) or re.search(r"pneumonia|aspiration|infect", impression, re.I)
            uncertain += bool(seen)
    assert uncertain > 100


@pytest.mark.parametrize("kind", ["mimic-cxr", "ct-rate"])
def test_realistic_labels_are_backed_by_the_words_of_the_text(kind, monkeypatch):
    # Without typos and truncation, every labelled finding (1, -1 or 0) is named in the report.
    monkeypatch.setattr(realistic, "TRUNCATED", 0.0)
    monkeypatch.setattr(realistic, "VOICES", {k: dataclasses.replace(v, typo=0.0) for k, v in realistic.VOICES.items()})
    stems = {
        "Pneumothorax": r"pneumothora|ptx",
        "Pleural Effusion": r"effusion|\beffs?\b|pleural fluid|pl eff",
        "Edema": r"edema|chf|congestion|heart failure|overload",
        "Lung Lesion": r"nodul|mass|lesion|\bnod\b|spn|metast",
        "Support Devices": r"tube|line|catheter|picc|\bett\b|\bngt\b|\bogt\b|trach|wires|pacemaker|aicd|dobhoff|cvl|devices|\bct in",
        "Emphysema": r"emphysem|bullae|\bcle\b|copd",
        "Lymphadenopathy": r"lymph|\blap\b|\blns\b",
        "Hiatal hernia": r"hernia|\bhh\b",
    }
    import common.synthetic as synthetic

    data = synthetic._generate(kind, 400, 4, 0.03, HOSPITALS, "realistic")  # not the disk cache: patched settings
    names = data.label_set.labels
    checked = 0
    for report, raw in zip(data.reports, data.raw_labels, strict=True):
        for label, stem in stems.items():
            if label in names and not np.isnan(raw[names.index(label)]):
                assert re.search(stem, report, re.I), (label, raw[names.index(label)], report)
                checked += 1
    assert checked > 300


def test_realistic_no_finding_rule_prevalence_and_length():
    data = generate("mimic-cxr", n_reports=2000, seed=1, difficulty="realistic")
    names = data.label_set.labels
    raw = data.raw_labels
    no_finding = raw[:, names.index("No Finding")] == 1.0
    pathology = [j for j, n in enumerate(names) if n not in ("No Finding", "Support Devices")]
    abnormal = np.isin(raw[:, pathology], (1.0, -1.0)).any(axis=1)
    assert not (no_finding & abnormal).any() and (no_finding | abnormal).all()
    assert (no_finding & (raw[:, names.index("Support Devices")] == 1.0)).any()  # devices do not count as findings
    rate = dict(zip(names, data.to_report_set("ones").labels.mean(axis=0), strict=True))
    assert 0.2 < rate["No Finding"] < 0.4 and 0.15 < rate["Support Devices"] < 0.35
    assert 0.15 < rate["Pleural Effusion"] < 0.32 and 0.15 < rate["Lung Opacity"] < 0.32
    assert all(rate[n] < 0.08 for n in ("Fracture", "Pleural Other", "Lung Lesion"))
    words = np.array([len(t.split()) for t in data.to_report_set().texts])
    assert 40 < words.mean() < 90 and (words >= 150).mean() > 0.005 and (words <= 10).mean() > 0.02


def test_realistic_hospitals_write_differently():
    data = generate("mimic-cxr", n_reports=1500, seed=3, difficulty="realistic")
    texts, sites = data.to_report_set().texts, np.array(data.hospitals)
    words = {h: np.mean([len(t.split()) for t, s in zip(texts, sites, strict=True) if s == h]) for h in set(sites)}
    assert words["county-general"] < 0.6 * min(words[h] for h in set(sites) - {"county-general"})
    shorthand = {
        h: np.mean([bool(re.search(r"\b(RLL|LLL|b/l|w/)", t)) for t, s in zip(texts, sites, strict=True) if s == h])
        for h in set(sites)
    }
    assert shorthand["county-general"] > 3 * shorthand["st-elsewhere-academic"]
    headed = {
        h: np.mean(["FINDINGS:" in r or "IMPRESSION:" in r for r, s in zip(data.reports, sites, strict=True) if s == h])
        for h in set(sites)
    }
    assert headed["lakeview-clinic"] < 0.5 < headed["harbor-cancer-center"]


def _tfidf_f1(data) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    reports = data.to_report_set("ones")
    train, _, test = dataset_splits(reports, val_fraction=0.1, test_fraction=0.15, seed=0)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform([reports.texts[i] for i in train])
    x_test = vectorizer.transform([reports.texts[i] for i in test])
    y_train, probs = reports.labels[train], np.zeros_like(reports.labels[test])
    for j in range(y_train.shape[1]):
        if len(np.unique(y_train[:, j])) < 2:
            probs[:, j] = y_train[0, j]
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probs[:, j] = (
                LogisticRegression(C=10, max_iter=2000).fit(x_train, y_train[:, j]).predict_proba(x_test)[:, 1]
            )
    return compute_metrics(reports.labels[test], probs, reports.label_names)["weighted_f1"]


def test_realistic_is_clearly_harder_than_easy_for_a_bag_of_words():
    # At 600 reports easy scores about 0.83 and realistic about 0.68 (weighted F1, seeds 0-1).
    easy = _tfidf_f1(generate("mimic-cxr", n_reports=600, seed=0))
    hard = _tfidf_f1(generate("mimic-cxr", n_reports=600, seed=0, difficulty="realistic"))
    assert easy > 0.75 and hard < easy - 0.08, (easy, hard)


@pytest.mark.parametrize("difficulty", ["easy", "realistic"])
def test_the_disk_cache_returns_exactly_what_the_generator_writes(tmp_path, monkeypatch, difficulty):
    import common.synthetic as synthetic

    monkeypatch.setenv("RADFL_CACHE", str(tmp_path))
    fresh = synthetic._generate("mimic-cxr", 120, 5, 0.03, HOSPITALS, difficulty)
    first = generate("mimic-cxr", n_reports=120, seed=5, difficulty=difficulty)  # writes the cache
    files = list((tmp_path / "synthetic").glob("*.npz"))
    assert len(files) == 1

    monkeypatch.setattr(synthetic, "_generate", lambda *a: pytest.fail("regenerated instead of reading the cache"))
    cached = generate("mimic-cxr", n_reports=120, seed=5, difficulty=difficulty)
    for reports in (first, cached):
        for name in synthetic.TEXT_FIELDS:
            assert getattr(reports, name) == getattr(fresh, name)
        assert reports.raw_labels.dtype == fresh.raw_labels.dtype
        np.testing.assert_array_equal(reports.raw_labels, fresh.raw_labels)
    with pytest.raises(pytest.fail.Exception):  # another seed is another file
        generate("mimic-cxr", n_reports=120, seed=6, difficulty=difficulty)

    files[0].write_bytes(b"truncated")  # a damaged file is rewritten, never trusted
    monkeypatch.setattr(synthetic, "_generate", lambda *a: fresh)
    assert generate("mimic-cxr", n_reports=120, seed=5, difficulty=difficulty).reports == fresh.reports
    assert files[0].stat().st_size > 1000
