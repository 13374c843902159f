"""Process settings every run applies: threads, device, precision, stopping on request."""

from __future__ import annotations

import os
import threading

import torch


def configure_threads(cores: int | None = None) -> int:
    """Use the cores this process may run on (at least 1); `RADFL_THREADS` overrides."""
    wanted = int(os.environ.get("RADFL_THREADS", 0)) or cores or len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, wanted))
    return torch.get_num_threads()


def autocast_dtype(device: torch.device):
    """bf16 autocast on CUDA GPUs that support it; full precision on CPU.

    The weights, the loss and the optimizer stay in float32. Under DP it is used only after
    `common.guard.autocast_is_safe` has checked Opacus' per-sample gradients under it.
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


_STOP = threading.Event()


def request_stop() -> None:
    """Ask long loops to stop (SIGTERM/Ctrl-C). The signal handler also raises KeyboardInterrupt, but
    Python drops an exception raised while a finalizer (`__del__`, a GC callback) runs; loops that
    call `check_stop` between steps and cells stop anyway."""
    _STOP.set()


def check_stop() -> None:
    if _STOP.is_set():
        raise KeyboardInterrupt
