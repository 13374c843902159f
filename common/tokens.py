"""Tokenize once, cache on disk, pad per batch.

Token ids are cached under `$RADFL_CACHE` (default `~/.cache/radfl/tokens`; a deployed site keeps
them in its own state folder) keyed by the texts' hash, the tokenizer and the maximum length, so a
sweep that trains many cells on one data set tokenizes each data set once. Token ids decode to the
report text: the cache is a plain copy of the reports, so its folder and files are owner-only
(0700 / 0600) and `radfl site-clean` removes a site's. Batches are padded to their own longest
report, never to a fixed length: sequence length is the cost of training.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.cache import cache_root


def cache_dir() -> Path:
    return cache_root("tokens")


def tokenize(
    texts: list[str], tokenizer, *, max_length: int, fingerprint: str, cache: Path | None = None
) -> list[np.ndarray]:
    """Token ids (truncated to `max_length`) of each text, from the cache (`cache` or `cache_dir()`) when it has them."""
    vocab = hashlib.sha256(str(sorted(tokenizer.get_vocab().items())[:2000]).encode()).hexdigest()[:12]
    key = f"{fingerprint}-{type(tokenizer).__name__}-{vocab}-{len(tokenizer)}-{max_length}"
    path = Path(cache or cache_dir()) / f"{key}.npz"
    if path.is_file():
        with np.load(path) as stored:
            flat, offsets = stored["flat"], stored["offsets"]
        return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    ids = [np.asarray(e, dtype=np.int32) for e in encoded]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in ids])]).astype(np.int64)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, flat=np.concatenate(ids) if ids else np.zeros(0, np.int32), offsets=offsets)
    os.chmod(tmp, 0o600)
    tmp.replace(path)  # atomic: concurrent simulated clients never read half a file
    return ids


class TokenizedReports(Dataset):
    """(token ids, targets) pairs; targets are float with NaN for an ignored label."""

    def __init__(self, ids: list[np.ndarray], labels: np.ndarray):
        if len(ids) != len(labels):
            raise ValueError("ids and labels differ in length")
        self.ids = ids
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return torch.as_tensor(self.ids[i], dtype=torch.long), self.labels[i]


def make_collate(pad_id: int):
    """Pad a batch to its longest member; returns input_ids, attention_mask, labels."""

    def collate(items):
        if not items:
            return torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 0)
        longest = max(len(ids) for ids, _ in items)
        input_ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, (ids, _) in enumerate(items):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        return input_ids, mask, torch.stack([y for _, y in items])

    return collate


def eval_loader(dataset: TokenizedReports, *, batch_size: int, pad_id: int) -> DataLoader:
    """Batches in length order: evaluation pads little and is deterministic."""
    order = np.argsort([len(x) for x in dataset.ids], kind="stable")
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return DataLoader(dataset, batch_sampler=batches, collate_fn=make_collate(pad_id))
