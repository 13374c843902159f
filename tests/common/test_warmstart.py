"""The public warm start: built from synthetic reports only, cached once, loaded whole (frozen A included)."""

import json

import numpy as np
import pytest

import common.warmstart as warmstart
from common.config import RunConfig
from common.errors import InputError
from common.labels import MIMIC_CXR
from common.model import build_classifier, lora_spec


@pytest.fixture
def small(monkeypatch, tmp_path):
    monkeypatch.setattr(warmstart, "WARM_REPORTS", 300)  # the real default is 6,000; the mechanism is the same
    monkeypatch.setenv("RADFL_CACHE", str(tmp_path / "cache"))
    return RunConfig(
        model="tiny",
        dataset="mimic-cxr",
        data=str(tmp_path / "private-reports-that-do-not-exist"),
        out=str(tmp_path / "o"),
    )


def test_the_warm_start_reads_no_private_report(small, monkeypatch):
    import common.data

    def forbidden(*args, **kwargs):
        raise AssertionError("the warm start tried to read the private data set")

    for module, name in ((common.data, "load_reports"), (common.data, "prepare")):
        monkeypatch.setattr(module, name, forbidden)
    warm = warmstart.ensure(small, log=lambda *_: None)
    assert warm.kind == "synthetic" and "public synthetic" in warm.record()["private_data"]
    assert warm.settings["generator"] == "mimic-cxr" and "data" not in json.dumps(warm.settings).replace("data set", "")


def test_it_is_built_once_and_cached(small, monkeypatch):
    first = warmstart.ensure(small, log=lambda *_: None)
    monkeypatch.setattr(warmstart, "_build", lambda *a, **k: pytest.fail("rebuilt although cached"))
    second = warmstart.ensure(
        small.replace(seed=7, out="elsewhere", epsilon=10.0), log=lambda *_: None
    )  # run settings do not matter
    assert first.sha256 == second.sha256 and first.path == second.path


def test_every_adapter_array_is_loaded_and_ffa_freezes_the_warm_starts_a(small):
    warm = warmstart.ensure(small, log=lambda *_: None)
    arrays = warmstart.load_arrays(warm)
    classifier = build_classifier(
        "tiny", MIMIC_CXR.labels, lora=lora_spec(small.replace(aggregation="ffa"), federated=True)
    )
    warmstart.apply_warm_start(classifier, small.replace(aggregation="ffa"), log=lambda *_: None)
    from peft import get_peft_model_state_dict

    state = {n: v.detach().numpy() for n, v in get_peft_model_state_dict(classifier.model).items()}
    assert any(".lora_A." in n for n in state)
    assert all(not p.requires_grad for n, p in classifier.model.named_parameters() if ".lora_A." in n)
    assert set(state) == set(arrays)
    for name, value in arrays.items():
        assert np.array_equal(state[name], value), name
    assert any(np.abs(v).max() > 0 for k, v in arrays.items() if ".lora_B." in k)  # it did learn something


def test_none_and_a_folder(small, tmp_path):
    assert warmstart.ensure(small.replace(warm_start="none")) is None
    assert (
        warmstart.resolve(small.replace(dataset="synthetic-mimic")) == "none"
    )  # no warm start from the generator being evaluated
    with pytest.raises(InputError, match="not a saved radfl adapter"):
        warmstart.ensure(small.replace(warm_start=str(tmp_path)))
    with pytest.raises(InputError, match="covers MIMIC-CXR and CT-RATE"):
        warmstart.ensure(small.replace(dataset="csv", warm_start="synthetic"))


def test_synthetic_easy_builds_its_own_start_from_the_easy_generator(small, monkeypatch):
    built = []

    def record(cfg, settings, folder, log):
        built.append(settings)
        raise RuntimeError("stop after the settings")

    monkeypatch.setattr(warmstart, "_build", record)
    for choice in ("synthetic", "synthetic-easy"):
        with pytest.raises(RuntimeError, match="stop after"):
            warmstart.ensure(small.replace(dataset="synthetic-mimic", warm_start=choice), log=lambda *_: None)
    assert [s["difficulty"] for s in built] == ["realistic", "easy"]
    assert built[0]["generator"] == built[1]["generator"] == "mimic-cxr"
    with pytest.raises(InputError, match="--warm-start synthetic-easy covers MIMIC-CXR and CT-RATE"):
        warmstart.ensure(small.replace(dataset="csv", warm_start="synthetic-easy"))
