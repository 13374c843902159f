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


def get_adapter_state(model, *, trainable_only: bool = True) -> OrderedDict[str, np.ndarray]:
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


def check_incoming(model, arrays: dict[str, np.ndarray], *, max_abs: float) -> str | None:
    """Why an incoming (server-sent) adapter must be declined, or None when it may be loaded.

    The adapter must hold exactly the arrays this site trains, each float32 of the expected shape,
    finite and within `max_abs`; any frozen array it also carries (FFA-LoRA's A) must equal the
    site's own. A crafted adapter (an infinite head, A x 1e6) must never reach training: in Opacus a
    zero clip factor times an infinite gradient is NaN, and one NaN breaks the noisy sum.
    Returns a `common.records.Reason` name in lower case: adapter-rejected, adapter-not-finite,
    adapter-out-of-range or frozen-changed.
    """
    from peft import get_peft_model_state_dict

    current = get_peft_model_state_dict(model)
    trained = set(adapter_names(model))
    if not trained <= set(arrays) or not set(arrays) <= set(current):
        return "adapter-rejected"
    for name, value in arrays.items():
        value = np.asarray(value)
        if value.dtype != np.float32 or tuple(value.shape) != tuple(current[name].shape):
            return "adapter-rejected"
        if not np.isfinite(value).all():
            return "adapter-not-finite"
        if value.size and float(np.abs(value).max()) > max_abs:
            return "adapter-out-of-range"
        if name not in trained and not np.array_equal(value, current[name].detach().cpu().float().numpy()):
            return "frozen-changed"
    return None


def all_finite(arrays: dict[str, np.ndarray]) -> bool:
    return all(np.isfinite(np.asarray(v)).all() for v in arrays.values())


def state_bytes(arrays: dict[str, np.ndarray]) -> int:
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def full_model_bytes(model) -> int:
    """Bytes of every parameter of the model (base + adapters), the cost of sending it whole."""
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))
