"""`radfl predict`: per-label probabilities of reports from a saved adapter."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np

from common.datasets import extract_sections
from common.errors import InputError
from common.model import load_classifier, resolve_device
from common.runtime import configure_threads
from common.tokens import TokenizedReports
from common.training import predict_probs


def read_inputs(path: str, text_column: str) -> list[str]:
    """Reports from a .txt file (one per line) or a .csv/.jsonl file with a text column."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"file not found: {file}")
    if file.suffix == ".txt":
        texts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        texts = _table_texts(file, text_column)
    if not texts:
        raise InputError(f"{file} holds no reports")
    return texts


def _table_texts(file: Path, text_column: str) -> list[str]:
    import json

    if file.suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        with open(file, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    if rows and text_column not in rows[0]:
        raise InputError(f"{file}: no text column {text_column!r}; found {', '.join(rows[0])} (use --text-column)")
    texts = []
    for number, row in enumerate(rows, start=1):
        text = " ".join(str(row.get(text_column) or "").split())
        if not text:
            raise InputError(f"{file} row {number}: empty report; fill or remove it")
        texts.append(text)
    return texts


def predict_texts(classifier, texts: list[str], *, max_length: int, device, batch_size: int = 64) -> np.ndarray:
    sections = [extract_sections(t) for t in texts]
    ids = classifier.tokenizer(sections, truncation=True, max_length=max_length)["input_ids"]
    dataset = TokenizedReports(
        [np.asarray(i) for i in ids], np.zeros((len(ids), len(classifier.label_names)), np.float32)
    )
    return predict_probs(classifier.model, dataset, pad_id=classifier.pad_id, device=device, batch_size=batch_size)


def predict_command(args) -> int:
    configure_threads()
    device = resolve_device(args.device)
    classifier, meta = load_classifier(args.adapter, device=device)
    texts = [args.text] if args.text is not None else read_inputs(args.input, args.text_column)
    if any(not t.strip() for t in texts):
        raise InputError("the report is empty; pass some report text")
    started = time.perf_counter()
    probs = predict_texts(classifier, texts, max_length=meta["max_length"], device=device, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    names = classifier.label_names
    cut = meta.get("thresholds") or {}
    thresholds = np.array([float(cut.get(n, 0.5)) for n in names], dtype=np.float32)
    if args.text is not None and not args.output:
        print(f"{'label':<36}{'probability':>12}{'threshold':>11}")
        for name, p, t in sorted(zip(names, probs[0], thresholds, strict=True), key=lambda x: -x[1]):
            print(f"{name:<36}{p:>12.3f}{t:>11.2f}{'  *' if p >= t else ''}")
        print("\n* predicted positive (probability >= the label's threshold, saved with the adapter)")
        return 0
    handle = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout
    writer = csv.writer(handle)
    writer.writerow(["index", *names, *(f"{n} (positive)" for n in names)])
    for i, row in enumerate(probs):
        writer.writerow([i, *(f"{p:.4f}" for p in row), *(int(p >= t) for p, t in zip(row, thresholds, strict=True))])
    if args.output:
        handle.close()
        print(
            f"wrote probabilities of {len(texts)} reports to {args.output} ({len(texts) / max(seconds, 1e-9):.1f} reports/s)"
        )
    return 0
