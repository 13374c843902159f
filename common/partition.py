"""Patient-level splits (train/val/test) and partitions of one data set across sites.

Everything works on patients, never on single reports: a patient's studies stay together, so no
patient is in two splits or at two sites. All functions are deterministic in `seed`.
"""

from __future__ import annotations

import numpy as np

from common.datasets import ReportSet
from common.errors import InputError

PARTITIONS = ("iid", "dirichlet", "quantity", "site")


def _patients(patient_ids) -> tuple[list[str], dict[str, list[int]]]:
    members: dict[str, list[int]] = {}
    for i, p in enumerate(patient_ids):
        members.setdefault(p, []).append(i)
    return list(members), members


def patient_split(patient_ids, *, val_fraction: float, test_fraction: float, seed: int):
    """Shuffle patients and cut them into train / val / test; returns three sorted index arrays."""
    patients, members = _patients(patient_ids)
    order = np.random.default_rng(seed).permutation(len(patients))
    n_test = int(round(test_fraction * len(patients)))
    n_val = int(round(val_fraction * len(patients)))
    cuts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    return tuple(
        np.array(sorted(i for k in cuts[name] for i in members[patients[k]]), dtype=int)
        for name in ("train", "val", "test")
    )


def dataset_splits(data: ReportSet, *, val_fraction: float = 0.1, test_fraction: float = 0.15, seed: int = 0):
    """Train / val / test indices by patient; the data set's official split wins when present.

    Without an official validation part, validation patients are carved out of the train part.
    """
    if data.splits is None:
        parts = patient_split(data.patient_ids, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    else:
        split = np.array(data.splits)
        train, val, test = (np.flatnonzero(split == s) for s in ("train", "val", "test"))
        if len(val) == 0 and len(train):
            sub_train, sub_val, _ = patient_split(
                [data.patient_ids[i] for i in train], val_fraction=val_fraction, test_fraction=0.0, seed=seed
            )
            train, val = train[sub_train], train[sub_val]
        if len(test) == 0:
            sub_train, _, sub_test = patient_split(
                [data.patient_ids[i] for i in train], val_fraction=0.0, test_fraction=test_fraction, seed=seed
            )
            train, test = train[sub_train], train[sub_test]
        parts = (train, val, test)
    for name, idx in zip(("train", "validation", "test"), parts, strict=True):
        if len(idx) == 0:
            raise InputError(
                f"the {name} split is empty ({len(data)} reports); give more reports or other split fractions"
            )
    return parts


def partition_sites(
    data: ReportSet, index, *, n_sites: int, scheme: str = "iid", alpha: float = 0.5, seed: int = 0
) -> list[np.ndarray]:
    """Split the reports `index` of `data` across `n_sites` sites by patient.

    iid: patients dealt at random. dirichlet: each patient's rarest positive label is its class, and
    each class is spread over sites by a Dirichlet(alpha) draw (label skew; small alpha = more skew).
    quantity: site sizes drawn from Dirichlet(alpha). site: the data set's own hospitals (site column
    or synthetic hospital), grouped onto `n_sites` sites.
    """
    if scheme not in PARTITIONS:
        raise InputError(f"unknown partition {scheme!r}; use one of {', '.join(PARTITIONS)}")
    if n_sites < 1:
        raise InputError("the number of sites must be at least 1")
    if alpha <= 0:
        raise InputError("the Dirichlet alpha must be positive")
    index = np.asarray(index, dtype=int)
    patients, members = _patients([data.patient_ids[i] for i in index])
    if len(patients) < n_sites:
        raise InputError(f"{len(patients)} patients cannot be split across {n_sites} sites; use fewer sites")
    rng = np.random.default_rng(seed)
    if scheme == "site":
        site_of_patient = _by_hospital(data, index, patients, members, n_sites)
    elif scheme == "iid":
        site_of_patient = rng.permutation(len(patients)) % n_sites
    elif scheme == "quantity":
        site_of_patient = _by_quantity(rng, len(patients), n_sites, alpha)
    else:
        site_of_patient = _by_label(rng, data, index, patients, members, n_sites, alpha)
    sites = [[] for _ in range(n_sites)]
    for p, site in zip(patients, site_of_patient, strict=True):
        sites[int(site)].extend(index[members[p]])
    return [np.array(sorted(s), dtype=int) for s in sites]


def _by_hospital(data, index, patients, members, n_sites):
    if data.sites is None:
        raise InputError("partition 'site' needs a site column (or synthetic data); use iid, dirichlet or quantity")
    hospital = {p: data.sites[index[members[p][0]]] for p in patients}
    names = sorted(set(hospital.values()))
    if len(names) < n_sites:
        raise InputError(
            f"partition 'site' found {len(names)} hospitals, fewer than {n_sites} sites; use --sites {len(names)}"
        )
    group = {name: i % n_sites for i, name in enumerate(names)}
    return np.array([group[hospital[p]] for p in patients])


def _by_quantity(rng, n_patients, n_sites, alpha):
    shares = rng.dirichlet(np.full(n_sites, alpha))
    counts = np.maximum(1, np.floor(shares * n_patients).astype(int))
    while counts.sum() > n_patients:
        counts[np.argmax(counts)] -= 1
    counts[np.argmax(shares)] += n_patients - counts.sum()
    return rng.permutation(np.repeat(np.arange(n_sites), counts))


def _by_label(rng, data, index, patients, members, n_sites, alpha):
    labels = np.nan_to_num(data.labels[index]) > 0
    prevalence = labels.mean(axis=0)
    # A patient's class: its rarest positive label, or "none"; rare classes drive label skew.
    classes = []
    for p in patients:
        positive = np.flatnonzero(labels[members[p]].any(axis=0))
        classes.append(int(positive[np.argmin(prevalence[positive])]) if len(positive) else -1)
    classes = np.array(classes)
    site_of = np.zeros(len(patients), dtype=int)
    for c in np.unique(classes):
        who = rng.permutation(np.flatnonzero(classes == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(n_sites, alpha)))[:-1] * len(who)).astype(int)
        for site, part in enumerate(np.split(who, cuts)):
            site_of[part] = site
    # Every site needs at least one patient; give an empty site one from the largest.
    for site in range(n_sites):
        if not (site_of == site).any():
            largest = np.bincount(site_of, minlength=n_sites).argmax()
            site_of[np.flatnonzero(site_of == largest)[0]] = site
    return site_of
