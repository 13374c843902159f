"""Checkpoints of a federated run: the global adapter after every round, and the round history.

A run started again with the same configuration and output folder resumes after its last finished
round; each site's lifetime ledger lives at the site, so a resume never resets ε.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from common.adapters import get_adapter_state, set_adapter_state
from common.errors import InputError
from common.model import load_classifier, save_classifier
from common.outputs import write_json_atomic


class CheckpointStore:
    def __init__(self, out: Path, config: dict, *, model_name: str, max_length: int):
        self.folder = Path(out) / "checkpoints"
        self.config, self.model_name, self.max_length = config, model_name, max_length

    def resume(self, classifier) -> tuple[int, list[dict]]:
        """(rounds done, history) of an interrupted run in this folder, its adapter loaded into `classifier`."""
        state_file = self.folder / "state.json"
        if not state_file.is_file():
            return 0, []
        state = json.loads(state_file.read_text())
        if state["config"] != self.config:
            raise InputError(
                f"{self.folder.parent} holds a checkpoint of a run with another configuration; use another --out"
            )
        done = int(state["round"])
        restored, _ = load_classifier(self.folder / f"round-{done:03d}")
        saved = get_adapter_state(restored.model, trainable_only=False)
        wanted = get_adapter_state(classifier.model)
        set_adapter_state(classifier.model, {k: v for k, v in saved.items() if k in wanted})
        return done, state["history"]

    def save(self, global_round: int, classifier, history: list[dict]) -> None:
        save_classifier(
            classifier,
            self.folder / f"round-{global_round:03d}",
            model_name=self.model_name,
            max_length=self.max_length,
        )
        write_json_atomic(
            self.folder / "state.json", {"round": global_round, "config": self.config, "history": history}
        )
        for old in self.folder.glob("round-*"):  # keep the last two rounds
            if old.is_dir() and int(old.name.split("-")[1]) < global_round - 1:
                shutil.rmtree(old, ignore_errors=True)
