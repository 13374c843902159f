"""Get and set the adapter state: the only arrays that ever leave a site.

Names are PEFT's adapter state names (`get_peft_model_state_dict`): LoRA A/B of the target modules
and the classification head. This module is the one place that knows those names and PEFT's
wrapper prefixes; everything else handles plain `{name: numpy array}` dictionaries.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch


def adapter_names(model, *, trainable_only: bool = True) -> list[str]:
    """PEFT adapter-state names, restricted to what this site trains (FFA-LoRA leaves out A)."""
    from peft import get_peft_model_state_dict

    names = list(get_peft_model_state_dict(model).keys())
    if trainable_only and _a_frozen(model):
        names = [n for n in names if ".lora_A." not in n]
    return names


def _a_frozen(model) -> bool:
    return any(".lora_A." in n and not p.requires_grad for n, p in model.named_parameters())


def get_adapter_state(model, *, trainable_only: bool = True) -> "OrderedDict[str, np.ndarray]":
    """Adapter arrays as float32 numpy, in a stable order. Nothing of the base model is included."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model)
    keep = set(adapter_names(model, trainable_only=trainable_only))
    return OrderedDict((k, v.detach().float().cpu().numpy().copy()) for k, v in state.items() if k in keep)


def set_adapter_state(model, arrays: dict[str, np.ndarray]) -> None:
    """Load adapter arrays into `model`; unknown names, missing names or wrong shapes are errors."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    current = get_peft_model_state_dict(model)
    unknown = sorted(set(arrays) - set(current))
    if unknown:
        raise ValueError(f"adapter state has names this model lacks: {unknown[:3]}")
    expected = set(adapter_names(model))
    missing = sorted(expected - set(arrays))
    if missing:
        raise ValueError(f"adapter state lacks {len(missing)} arrays, e.g. {missing[0]}")
    tensors = {}
    for name, value in arrays.items():
        if tuple(value.shape) != tuple(current[name].shape):
            raise ValueError(f"{name}: shape {tuple(value.shape)} does not match {tuple(current[name].shape)}")
        tensors[name] = torch.as_tensor(np.asarray(value), dtype=current[name].dtype)
    # Start from the current state so that arrays a site does not train (FFA-LoRA's A) are kept.
    merged = {**{k: v for k, v in current.items()}, **tensors}
    result = set_peft_model_state_dict(model, merged)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"unexpected adapter keys: {result.unexpected_keys[:3]}")


def state_bytes(arrays: dict[str, np.ndarray]) -> int:
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def full_model_bytes(model) -> int:
    """Bytes of every parameter of the model (base + adapters), the cost of sending it whole."""
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))
