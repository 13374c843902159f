"""Realistic synthetic reports: the `difficulty="realistic"` path of `common.synthetic.generate`.

Real reports are hard for a text classifier for reasons the easy generator leaves out, so this
writer puts them in: reports from one line to a page; priors ("unchanged", "has resolved": a
resolved finding is not present); measurements and device positions; abbreviations (PTX, ETT,
RLL, b/l) and typos; findings stated only in the findings section or only in the impression;
templated normal sentences that name findings only to deny them ("no effusion, pneumothorax or
..."); and a labeler that, like CheXpert on MIMIC-CXR, reads the impression and makes the
mistakes word matchers make (misses abbreviations, typos and the tail of long lists; takes a
negation far from its term, or a resolved finding, for a positive). Labels come from the mentions
actually written, so label noise is tied to the text, not drawn at random. Case mix and phrases
are data, in `common.synthetic_realistic_phrases`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from common.labels import CT_RATE, MIMIC_CXR
from common.synthetic_phrases import CT_SCENARIOS
from common.synthetic_realistic_phrases import (
    CT_BACKGROUND,
    CT_BANK,
    CT_EXTRA,
    CT_INDICATIONS,
    CT_NEGATED,
    CT_NORMAL_IMP,
    CT_NORMAL_SENTENCES,
    CT_OMIT,
    ELABORATIONS,
    HEDGE_WORDS,
    HEDGED,
    LOBES,
    MIMIC_BACKGROUND,
    MIMIC_BANK,
    MIMIC_CLEAR,
    MIMIC_DEVICES,
    MIMIC_DEVICES_ABBR,
    MIMIC_DEVICES_GONE,
    MIMIC_DEVICES_IMP,
    MIMIC_EXTRA,
    MIMIC_INDICATIONS,
    MIMIC_NEGATED,
    MIMIC_NORMAL_IMP,
    MIMIC_OMIT,
    MIMIC_OPENERS,
    MIMIC_RECOMMEND,
    MIMIC_SCENARIOS,
    NEG_ABBR,
    NEGATION,
    NUMBERED,
    POSITIVE,
    RESOLVED,
    RESOLVED_WORDS,
    SHORTHAND,
    SIDE_ABBR,
    SLOTS,
    TEMPORAL,
    TEMPORAL_WORDS,
)


@dataclass(frozen=True)
class Voice:
    """How one hospital writes: what makes its reports long, short, clean or noisy."""

    headed: float  # chance of FINDINGS:/IMPRESSION: headers; else one paragraph, read whole by the labeler
    findings: float  # chance of a findings section; portable ICU films often carry an impression only
    abbreviate: float  # chance that a finding is written as an abbreviation that hides its word (PTX, RLL atx)
    typo: float  # chance that a finding's longest word is misspelt
    template: float  # chance that each normal region gets its templated sentence ("Heart size is normal.")
    negate: float  # chance that a habitually negated absent finding is negated
    extras: int  # most label-free asides ("Degenerative changes of the spine.")
    numbered: float  # chance of a numbered impression
    detail: float  # chance of a page-long report: more asides, a word more on each finding, a recommendation
    omit: float  # scales the chance that the impression leaves a finding out
    shorthand: float = 0.0  # chance of RLL, b/l, w/ for the words around a finding (its own word stays)


# Difficulty is calibrated here (TF-IDF + logistic regression, see tests/common/test_synthetic.py).
VOICES = {
    "templated": Voice(
        headed=1.0,
        findings=0.97,
        abbreviate=0.01,
        typo=0.005,
        template=0.9,
        negate=0.75,
        extras=1,
        numbered=0.7,
        detail=0.12,
        omit=0.5,
    ),
    "terse": Voice(
        headed=0.95,
        findings=0.55,
        abbreviate=0.1,
        typo=0.015,
        template=0.1,
        negate=0.45,
        extras=0,
        numbered=0,
        detail=0.01,
        omit=0.3,
        shorthand=0.85,
    ),
    "narrative": Voice(
        headed=0.3,
        findings=0.9,
        abbreviate=0.01,
        typo=0.005,
        template=0.6,
        negate=0.55,
        extras=1,
        numbered=0,
        detail=0.08,
        omit=0.6,
    ),
    "oncologic": Voice(
        headed=0.95,
        findings=0.95,
        abbreviate=0.02,
        typo=0.005,
        template=0.5,
        negate=0.6,
        extras=1,
        numbered=0.6,
        detail=0.35,
        omit=0.5,
        shorthand=0.1,
    ),
}
TRUNCATED = 0.04  # share of MIMIC reports cut short after the labeler read them (export damage)
PHRASE_SKEW = 5.0  # how strongly writers keep to their favourite phrasings (see Dice.prefer)
NORMAL_REGIONS = ("Cardiomegaly", "Enlarged Cardiomediastinum", "Fracture")  # denied with a whole templated sentence
LUNG_FINDINGS = (
    "Atelectasis",
    "Lung Opacity",
    "Consolidation",
    "Edema",
    "Pneumonia",
)  # any of them: no "the lungs are clear"


@dataclass(frozen=True)
class LabelerErrors:
    """Chances that the simulated labeler errs on one mention of each hard kind (CheXpert-like)."""

    abbr: float = 0.35  # misses a finding written only as an abbreviation
    typo: float = 0.4  # misses a misspelt finding
    tail: float = 0.2  # misses a finding late in a long list
    far: float = 0.1  # takes a negated finding late in a list for a positive
    resolved: float = 0.1  # takes a resolved finding for a positive
    hedge: float = 0.05  # takes a hedged finding for a positive (misses the hedge)


MIMIC_ERRORS = LabelerErrors()
CT_ERRORS = LabelerErrors(
    abbr=0.25, typo=0.35, tail=0.05, far=0.08, resolved=0.2
)  # a trained classifier, better at lists


class Mention(NamedTuple):
    label: int  # column in the label set
    polarity: str  # pos, unc, neg or gone (resolved since the prior study)
    section: str  # findings or impression
    hard: str = ""  # abbr, typo, tail or far: what may trip a word-matching labeler


class Finding(NamedTuple):
    label: str
    polarity: str  # pos or unc
    when: str  # "" or a TEMPORAL key: how it compares with the prior study
    slots: dict


class Dice:
    """Uniform draws from a seeded Generator, fetched in blocks: a report takes a few hundred draws
    and a Generator call per draw would cost more than writing the report."""

    def __init__(self, rng: np.random.Generator, skew: float = PHRASE_SKEW):
        self._rng, self._block, self.skew, self.taste = rng, [], skew, 0

    def u(self) -> float:
        if not self._block:
            self._block = self._rng.random(4096).tolist()
        return self._block.pop()

    def chance(self, p: float) -> bool:
        return self.u() < p

    def pick(self, options):
        return options[int(self.u() * len(options))]

    def prefer(self, options, taste: bool = True):
        """A Zipf-like pick: writers reuse a favourite phrasing (which one depends on `taste`, the
        hospital) and use the rest rarely; uniform picks make text far more varied than real."""
        return options[(int(self.u() ** self.skew * len(options)) + self.taste * taste) % len(options)]

    def shuffle(self, items: list) -> list:
        keys = [self.u() for _ in items]
        return [items[i] for i in sorted(range(len(items)), key=keys.__getitem__)]


def label_mentions(
    dice: Dice, mentions, n_labels: int, *, sections, errors: LabelerErrors, noise: float, ct: bool
) -> np.ndarray:
    """The simulated labeler's raw values from the mentions in `sections`: 1 beats -1 beats 0, unseen = NaN.

    `noise` is the chance of any other mistake on a mention (a positive read as 0; a negation read
    as 1 at a fifth of that rate). CT-RATE's labeler marks suspected findings positive.
    """
    raw = np.full(n_labels, np.nan, np.float32)
    rank = {1.0: 3, -1.0: 2, 0.0: 1}
    for m in mentions:
        if m.section not in sections:
            continue
        if m.hard in ("abbr", "typo", "tail") and dice.chance(getattr(errors, m.hard)):
            continue  # never seen
        if m.polarity in ("pos", "unc"):
            value = 1.0 if m.polarity == "pos" or dice.chance(errors.hedge) else -1.0
            value = 0.0 if dice.chance(noise) else value
        elif m.polarity == "neg":
            value = 1.0 if (m.hard == "far" and dice.chance(errors.far)) or dice.chance(noise / 5) else 0.0
        else:
            value = 1.0 if dice.chance(errors.resolved) else 0.0
        value = 1.0 if ct and value == -1.0 else value
        if math.isnan(raw[m.label]) or rank[value] > rank[float(raw[m.label])]:
            raw[m.label] = value
    return raw


def generate_realistic(kind: str, *, n_reports: int, seed: int, label_noise: float, hospitals) -> dict:
    """The fields of `SyntheticReports` (all but the label set) for `n_reports` realistic reports."""
    ct = kind == "ct-rate"
    names = (CT_RATE if ct else MIMIC_CXR).labels
    scenarios, background = (CT_SCENARIOS, CT_BACKGROUND) if ct else (MIMIC_SCENARIOS, MIMIC_BACKGROUND)
    dice = Dice(np.random.default_rng(seed))
    out = dict(
        reports=[],
        raw_labels=np.full((n_reports, len(names)), np.nan, np.float32),
        patient_ids=[],
        study_ids=[],
        hospitals=[],
        clinical=[],
        findings=[],
        impressions=[],
    )
    studies_left, prior = 0, {}
    for row in range(n_reports):
        if studies_left == 0:  # a new patient with 1-4 studies at one hospital
            hospital = dice.pick(hospitals)
            patient = str(10000000 + int(dice.u() * 9_000_000) + row)
            studies_left, scenario, prior = dice.pick((1, 1, 2, 2, 3, 4)), None, {}
        studies_left -= 1
        if scenario is None or dice.chance(0.4):  # a patient's problems tend to persist
            weights = np.cumsum([hospital.scenario_weights.get(s, 1.0) for s in scenarios])
            scenario = list(scenarios)[int(np.searchsorted(weights, dice.u() * weights[-1], side="right"))]
        present = {}
        for label in names:
            if label != "No Finding" and dice.chance(
                max(scenarios[scenario].get(label, 0.0), background.get(label, 0.0))
            ):
                when = "" if label not in prior else dice.pick(("same", "same", "same", "better", "worse"))
                when = "new" if prior and not when and dice.chance(0.5) else when
                slots = prior.get(label) or _slots(dice)  # a finding keeps its side from study to study
                present[label] = Finding(label, "unc" if dice.chance(hospital.hedge_rate) else "pos", when, slots)
        gone = {label: slots for label, slots in prior.items() if label not in present and dice.chance(0.5)}
        voice, dice.taste = VOICES[hospital.voice], sum(hospital.name.encode()) % 2  # some hospitals share macros
        clinical = dice.pick(CT_INDICATIONS if ct else MIMIC_INDICATIONS)
        write = _write_ct if ct else _write_mimic
        report, findings, impression, mentions, sections = write(dice, voice, present, gone, clinical, bool(prior))
        raw = label_mentions(
            dice,
            mentions,
            len(names),
            sections=sections,
            errors=CT_ERRORS if ct else MIMIC_ERRORS,
            noise=label_noise,
            ct=ct,
        )
        if not ct:  # CheXpert: No Finding when no pathology (devices aside) is positive or uncertain
            pathology = [j for j, n in enumerate(names) if n not in ("No Finding", "Support Devices")]
            if not np.isin(raw[pathology], (1.0, -1.0)).any():
                raw[names.index("No Finding")] = 1.0
            if dice.chance(TRUNCATED):
                words = report.split(" ")
                report = " ".join(words[: max(3, int(len(words) * (0.5 + 0.45 * dice.u())))])
        out["raw_labels"][row] = raw
        out["patient_ids"].append(patient)
        out["study_ids"].append(str(50000000 + row) if not ct else f"{patient}_{'abcd'[studies_left % 4]}")
        out["hospitals"].append(hospital.name)
        out["clinical"].append(_cap(clinical) + ".")
        out["findings"].append(findings)
        out["impressions"].append(impression)
        out["reports"].append(report)
        prior = {label: f.slots for label, f in present.items()}
    return out


def _slots(dice: Dice) -> dict:
    """Side, lobe, size and measurements of one finding, consistent with each other."""
    slots = {k: dice.prefer(v, taste=False) for k, v in SLOTS.items()}
    side = slots["side"]
    lr = side if side != "bilateral" else dice.pick(("left", "right"))
    slots["lobe"], slots["ab_lobe"] = dice.prefer(LOBES[lr], taste=False)
    slots.update(lr=lr, ab_side=dice.pick(SIDE_ABBR[side]), ab_lr=dice.pick(SIDE_ABBR[lr]))
    return slots


def _shorthand(text: str) -> str:
    for word, short in SHORTHAND:
        text = text.replace(word, short)
    return text


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _typo(dice: Dice, text: str) -> str:
    """Misspell the longest word: swap, drop or double one inner letter."""
    words = text.split(" ")
    i = max(range(len(words)), key=lambda k: len(words[k]))
    word, j = words[i], 1 + int(dice.u() * max(1, len(words[i]) - 3))
    if len(word) < 5:
        return text
    words[i] = dice.pick(
        (word[:j] + word[j + 1] + word[j] + word[j + 2 :], word[:j] + word[j + 1 :], word[:j] + word[j] + word[j:])
    )
    return " ".join(words)


def _phrase(dice: Dice, voice: Voice, forms: dict, slots: dict, form: str = "pos") -> tuple[str, str]:
    """One wording of a finding and what makes it hard to label ("" when nothing)."""
    hard = ""
    if forms.get("abbr") and dice.chance(voice.abbreviate):
        text, hard = dice.prefer(forms["abbr"]), "abbr"
    else:
        text = dice.prefer(forms[form])
    text = text.format(**slots)
    if dice.chance(voice.typo):
        text, hard = _typo(dice, text), "typo"
    return text, hard


def _body(dice, voice, bank, present, gone, negated, names):
    """Findings sentences (devices aside) and their mentions: positives, priors and negations."""
    sentences, mentions, listed = [], [], []
    for f in dice.shuffle(list(present.values())):
        if f.label == "Support Devices" or (f.label == "Pneumonia" and dice.chance(0.5)):
            continue  # devices are written first; pneumonia is often a conclusion of the impression only
        text, hard = _phrase(dice, voice, bank[f.label], f.slots)
        if f.polarity == "pos" and not f.when and dice.chance(0.5):
            listed.append((f.label, text, hard))
            continue
        templates = HEDGED if f.polarity == "unc" else TEMPORAL[f.when] if f.when else POSITIVE
        sentences.append(dice.prefer(templates).format(t=text, T=_cap(text)))
        mentions.append(Mention(names.index(f.label), f.polarity, "findings", hard))
    while listed:  # plain positives run together: "A, B and C." A labeler can lose the tail
        size = 1 + int(dice.u() * 4)
        take, listed = listed[:size], listed[size:]
        words = [t for _, t, _ in take]
        sentences.append(_cap(", ".join(words[:-1]) + (" and " if len(words) > 1 else "") + words[-1]) + ".")
        for k, (label, _, hard) in enumerate(take):
            mentions.append(Mention(names.index(label), "pos", "findings", hard or ("tail" if k >= 2 else "")))
    for label, slots in gone.items():
        if label in bank and dice.chance(0.5):
            text, hard = _phrase(dice, voice, bank[label], slots)
            sentences.append(dice.prefer(RESOLVED).format(t=text, T=_cap(text)))
            mentions.append(Mention(names.index(label), "gone", "findings", hard))
    # Negations come from macros: a fixed order and a favourite list length per hospital.
    items = [
        label
        for label, w in negated.items()
        if label not in present and label not in gone and dice.chance(voice.negate * w)
    ]
    while items:
        size = dice.prefer((3, 2, 4, 1))
        group, items = items[:size], items[size:]
        words, hards = [], []
        for k, label in enumerate(group):
            abbr = NEG_ABBR.get(label) if dice.chance(voice.abbreviate) else None
            words.append(dice.prefer(abbr) if abbr else dice.prefer(bank[label]["neg"]))
            hards.append("abbr" if abbr else "far" if k >= 2 else "")
        template = dice.prefer([t for t in NEGATION if t.count("{") == len(words)])
        sentences.append(template.format(**dict(zip("abcd", words, strict=False)), A=_cap(words[0])))
        mentions += [
            Mention(names.index(label), "neg", "findings", hard) for label, hard in zip(group, hards, strict=True)
        ]
    return sentences, mentions


def _impression(dice, voice, bank, present, gone, names, omit, normal, negated):
    """Impression items (no final period) and their mentions; minor findings may be left out."""
    items, mentions = [], []
    for f in dice.shuffle(list(present.values())):
        if f.label not in bank or dice.chance(omit.get(f.label, 0.1 if omit else 0.0) * voice.omit):
            continue
        text, hard = _phrase(dice, voice, bank[f.label], f.slots, "imp")
        if f.polarity == "unc":
            text = f"{dice.prefer(HEDGE_WORDS)} {text}"
        elif f.when:
            text = f"{dice.prefer(TEMPORAL_WORDS[f.when])} {text}"
        items.append(text)
        mentions.append(Mention(names.index(f.label), f.polarity, "impression", hard))
    for label, slots in gone.items():
        if label in bank and dice.chance(0.25):
            items.append(f"{dice.prefer(RESOLVED_WORDS)} {dice.prefer(bank[label]['imp']).format(**slots)}")
            mentions.append(Mention(names.index(label), "gone", "impression"))
    if not items:
        items.append(dice.prefer(normal).rstrip("."))
    absent = [label for label in negated if label not in present and label not in gone]
    if absent and dice.chance(0.25):
        label = dice.pick(absent)
        items.append(f"no {dice.prefer(bank[label]['neg'])}")
        mentions.append(Mention(names.index(label), "neg", "impression"))
    return items, mentions


def _join_impression(dice, voice, items, tail=()) -> str:
    """Items as a numbered list, one run-on sentence or separate sentences; `tail` sentences follow."""
    if len(items) + len(tail) > 1 and dice.chance(voice.numbered):
        style = dice.pick(NUMBERED)
        return "\n".join(style.format(i=i, s=_cap(s) + ".") for i, s in enumerate([*items, *tail], start=1))
    if len(items) > 1 and dice.chance(0.4):
        items = [", ".join(items[:-1]) + " and " + items[-1]]
    return " ".join(_cap(s) + "." for s in [*items, *tail])


def _write_mimic(dice, voice, present, gone, clinical, follow_up):
    """A chest radiograph report in this voice: (report, findings, impression, mentions, labeler sections)."""
    names = MIMIC_CXR.labels
    body, mentions = _body(dice, voice, MIMIC_BANK, present, gone, MIMIC_NEGATED, names)
    for label in NORMAL_REGIONS:  # "Heart size is normal." names a finding only to deny it
        if label not in present and dice.chance(voice.template):
            body.append(dice.prefer(MIMIC_BANK[label]["normal"]))
            mentions.append(Mention(names.index(label), "neg", "findings"))
    if not any(label in present for label in LUNG_FINDINGS) and dice.chance(voice.template):
        body.append(dice.prefer(MIMIC_CLEAR))
    long = dice.chance(voice.detail)
    body += list(dict.fromkeys(dice.prefer(MIMIC_EXTRA) for _ in range(int(dice.u() * (voice.extras + 1)) + 7 * long)))
    for aside in dice.shuffle(ELABORATIONS)[: (3 + len(present)) * long]:
        body.append(aside.format(meas=dice.pick(SLOTS["meas"]), prev=dice.pick(SLOTS["meas"])))
    devices = []
    if "Support Devices" in present:
        for _ in range(1 + int(dice.u() * 2.5)):
            abbr = dice.chance(voice.abbreviate)
            device = _cap(
                dice.prefer(MIMIC_DEVICES_ABBR if abbr else MIMIC_DEVICES).format(**present["Support Devices"].slots)
            )
            if device not in devices:
                devices.append(device)
                mentions.append(Mention(names.index("Support Devices"), "pos", "findings", "abbr" if abbr else ""))
    if "Support Devices" in gone and dice.chance(0.7):
        devices.append(dice.prefer(MIMIC_DEVICES_GONE))
        mentions.append(Mention(names.index("Support Devices"), "gone", "findings"))
    opener = [dice.prefer(MIMIC_OPENERS)] if voice.template > 0.4 else []  # templated: views first, then devices
    shorthand = dice.chance(voice.shorthand)
    findings = " ".join(opener + devices + dice.shuffle(body))
    has_findings = dice.chance(voice.findings)
    omit = MIMIC_OMIT if has_findings else {}  # without a findings section the impression says it all
    items, imp_mentions = _impression(
        dice, voice, MIMIC_BANK, present, gone, names, omit, MIMIC_NORMAL_IMP, MIMIC_NEGATED
    )
    if "Support Devices" in present and not dice.chance(omit.get("Support Devices", 0.0) * voice.omit):
        items.append(dice.prefer(MIMIC_DEVICES_IMP))
        imp_mentions.append(Mention(names.index("Support Devices"), "pos", "impression"))
    impression = _join_impression(dice, voice, items, [dice.pick(MIMIC_RECOMMEND).rstrip(".")] if long else [])
    findings, impression = (_shorthand(findings), _shorthand(impression)) if shorthand else (findings, impression)
    if not dice.chance(voice.headed):  # one paragraph: the labeler reads all of it
        lead = dice.pick(
            ("Chest radiograph, two views, for", "PA and lateral chest radiographs. History of", "Portable chest for")
        )
        compared = "Comparison is made to the prior study." if follow_up else "No prior studies for comparison."
        summary = dice.pick(("", "In summary, ", "Impression: "))
        impression_text = impression[0].lower() + impression[1:] if summary == "In summary, " else impression
        report = f"{lead} {clinical}. {compared} {findings} {summary}{impression_text}"
        return report, findings, impression, mentions + imp_mentions, ("findings", "impression")
    exam = "CHEST (PORTABLE AP)" if "Support Devices" in present else "CHEST (PA AND LAT)"
    head = "" if voice.shorthand > 0.5 else f"FINAL REPORT\nEXAMINATION: {exam}\n\n"
    technique = "TECHNIQUE: Chest PA and lateral.\n" if voice.template > 0.8 else ""
    head += f"INDICATION: {_cap(clinical)}.\n{technique}COMPARISON: {'___.' if follow_up else 'None.'}\n\n"
    report = head + (f"FINDINGS:\n{findings}\n\n" if has_findings else "") + f"IMPRESSION:\n{impression}\n"
    if not has_findings:  # what the findings said lives only in the impression now
        return report, "", impression, imp_mentions, ("impression",)
    return report, findings, impression, mentions + imp_mentions, ("impression",)


def _write_ct(dice, voice, present, gone, clinical, follow_up):
    """A chest CT report (CT-RATE layout); its labeler reads findings and impression alike."""
    names = CT_RATE.labels
    body, mentions = _body(dice, voice, CT_BANK, present, gone, CT_NEGATED, names)
    if "Cardiomegaly" not in present and dice.chance(voice.template):
        body.append(dice.prefer(CT_BANK["Cardiomegaly"]["normal"]))
        mentions.append(Mention(names.index("Cardiomegaly"), "neg", "findings"))
    body += [s for s in CT_NORMAL_SENTENCES if dice.chance(voice.template * 0.6)]
    body += dice.shuffle(CT_EXTRA)[: int(dice.u() * (voice.extras + 1))]
    findings = " ".join(dice.shuffle(body))
    items, imp_mentions = _impression(dice, voice, CT_BANK, present, gone, names, CT_OMIT, CT_NORMAL_IMP, CT_NEGATED)
    impression = _join_impression(dice, voice, items)
    return (
        f"FINDINGS: {findings}\nIMPRESSION: {impression}",
        findings,
        impression,
        mentions + imp_mentions,
        ("findings", "impression"),
    )
