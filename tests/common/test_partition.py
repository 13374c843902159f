import numpy as np
import pytest

from common.datasets import ReportSet
from common.errors import InputError
from common.partition import dataset_splits, partition_sites, patient_split


def _patients_of(data, index):
    return {data.patient_ids[i] for i in index}


def test_patient_level_split_never_shares_a_patient(small_reports):
    train, val, test = dataset_splits(small_reports, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert len(train) + len(val) + len(test) == len(small_reports)
    sets = [_patients_of(small_reports, s) for s in (train, val, test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(set(small_reports.patient_ids)) < len(small_reports)  # the check is not vacuous
    again = dataset_splits(small_reports, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))


def test_official_split_wins_and_val_is_carved_from_train():
    n = 40
    data = ReportSet(
        [f"r{i}" for i in range(n)],
        np.zeros((n, 1), np.float32),
        ("a",),
        [f"p{i // 2}" for i in range(n)],
        [str(i) for i in range(n)],
        splits=["test" if i >= 30 else "train" for i in range(n)],
    )
    train, val, test = dataset_splits(data, val_fraction=0.2, test_fraction=0.5, seed=0)
    assert sorted(test) == list(range(30, 40))  # the official test part, not 50 %
    assert len(val) > 0 and not (_patients_of(data, train) & _patients_of(data, val))


def test_empty_split_is_an_input_error():
    data = ReportSet(["a", "b"], np.zeros((2, 1), np.float32), ("x",), ["p", "p"], ["1", "2"])
    with pytest.raises(InputError, match="split is empty"):
        dataset_splits(data, val_fraction=0.1, test_fraction=0.1, seed=0)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "quantity", "site"])
def test_partitions_cover_disjoint_sites_by_patient(small_reports, scheme):
    index = np.arange(len(small_reports))
    sites = partition_sites(small_reports, index, n_sites=3, scheme=scheme, alpha=0.5, seed=1)
    assert len(sites) == 3 and all(len(s) for s in sites)
    assert sorted(np.concatenate(sites).tolist()) == index.tolist()
    patient_sets = [_patients_of(small_reports, s) for s in sites]
    assert not (patient_sets[0] & patient_sets[1]) and not (patient_sets[1] & patient_sets[2])
    again = partition_sites(small_reports, index, n_sites=3, scheme=scheme, alpha=0.5, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(sites, again, strict=True))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    from common.synthetic import generate

    data = generate("mimic-cxr", n_reports=1500, seed=0).to_report_set()
    index = np.arange(len(data))

    def skew(alpha):
        spreads = []
        for seed in range(3):
            sites = partition_sites(data, index, n_sites=4, scheme="dirichlet", alpha=alpha, seed=seed)
            prevalence = np.array([data.labels[s].mean(axis=0) for s in sites])
            spreads.append(prevalence.std(axis=0).mean())
        return np.mean(spreads)

    assert skew(0.1) > 2 * skew(100.0)


def test_quantity_skew_gives_unequal_sizes():
    from common.synthetic import generate

    data = generate("mimic-cxr", n_reports=800, seed=0).to_report_set()
    sizes = [len(s) for s in partition_sites(data, np.arange(800), n_sites=4, scheme="quantity", alpha=0.3, seed=0)]
    assert max(sizes) > 2 * min(sizes)


def test_site_partition_follows_hospitals(small_reports):
    index = np.arange(len(small_reports))
    sites = partition_sites(small_reports, index, n_sites=4, scheme="site", seed=0)
    assert all(len({small_reports.sites[i] for i in s}) == 1 for s in sites)
    with pytest.raises(InputError, match="use --sites 4"):
        partition_sites(small_reports, index, n_sites=5, scheme="site", seed=0)


def test_partition_bad_inputs(small_reports):
    with pytest.raises(InputError, match="unknown partition"):
        partition_sites(small_reports, [0, 1], n_sites=2, scheme="random")
    with pytest.raises(InputError, match="cannot be split across"):
        partition_sites(small_reports, [0], n_sites=2)


def test_patient_split_fractions():
    train, val, test = patient_split([str(i) for i in range(100)], val_fraction=0.1, test_fraction=0.2, seed=0)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
