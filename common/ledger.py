"""A site's lifetime privacy ledger: every release ever made from one set of reports, composed.

One file per data set a site holds, keyed by a fingerprint of the reports themselves (their
texts), never by anything a server sends: a new run, output folder or seed cannot reset it.
Every private run on those reports adds its (σ, q, steps) history, and the lifetime ε is the
composition of all of them at the site's δ (the accountant composes heterogeneous histories, so
runs at different σ and q add up exactly as their steps would in one run; Dwork & Roth 2014, §3.5).
A release without noise makes the lifetime ε infinite, for ever: the ledger never lowers a count.

The file is changed only under an exclusive lock, written to a temporary file, fsynced and renamed,
so a crash leaves either the old or the new ledger. Callers charge a round before they train
(`charge`), so a crash after training can over-count but never under-count.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.privacy import epsilon_spent


@dataclass
class Release:
    """One run's releases from the data set: its plan and the steps charged so far."""

    run: str  # the site's own name for the run (Flower run id + a hash of its privacy settings)
    kind: str  # "train" or "evaluate"
    started: float  # unix time of the first charge
    unit: str  # privacy unit: report or patient
    epsilon_target: float  # inf: a release without noise
    delta: float
    accountant: str
    noise_multiplier: float
    sample_rate: float
    history: list = field(default_factory=list)  # [(σ, q, steps)], only ever grows
    plain: int = 0  # releases without noise (non-private training, plain evaluation metrics)

    @property
    def steps(self) -> int:
        return int(sum(h[2] for h in self.history))

    def epsilon(self) -> float:
        if self.plain and math.isinf(self.epsilon_target):
            return math.inf
        return epsilon_spent(self.history, delta=self.delta, accountant=self.accountant)


@dataclass
class LedgerState:
    fingerprint: str
    releases: list[Release] = field(default_factory=list)
    # The site's policy when last charged (for `radfl ledger`): δ of the lifetime ε, its cap, the units it covers.
    policy: dict = field(default_factory=dict)

    def release(self, run: str) -> Release | None:
        return next((r for r in self.releases if r.run == run), None)

    def lifetime_epsilon(self, *, delta: float, accountant: str = "prv", extra=()) -> float:
        """ε of every DP release ever made from these reports (plus `extra` planned steps) at `delta`.

        Plain metrics that the site's policy allows (`allow-evaluation`) are counted apart, not in ε.
        """
        counted = [r for r in self.releases if r.kind != "evaluate"]
        if any(r.plain and math.isinf(r.epsilon_target) for r in counted):
            return math.inf
        history = [tuple(h) for r in counted for h in r.history] + list(extra)
        return epsilon_spent(history, delta=delta, accountant=accountant)

    def to_dict(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "policy": {k: ("inf" if v == math.inf else v) for k, v in self.policy.items()},
            "releases": [_plain(asdict(r)) for r in self.releases],
        }

    @classmethod
    def from_dict(cls, data: dict) -> LedgerState:
        releases = []
        for r in data.get("releases", []):
            r = dict(r)
            r["epsilon_target"] = math.inf if r.get("epsilon_target") == "inf" else float(r["epsilon_target"])
            r["history"] = [tuple(h) for h in r.get("history", [])]
            releases.append(Release(**r))
        policy = {k: (math.inf if v == "inf" else v) for k, v in data.get("policy", {}).items()}
        return cls(data["fingerprint"], releases, policy)


def _plain(release: dict) -> dict:
    release["history"] = [list(h) for h in release["history"]]
    if math.isinf(release["epsilon_target"]):
        release["epsilon_target"] = "inf"
    return release


def ledger_path(state_dir, fingerprint: str) -> Path:
    return Path(state_dir) / "ledgers" / f"{fingerprint}.json"


@contextlib.contextmanager
def open_ledger(state_dir, fingerprint: str):
    """The ledger of one data set, locked for the duration; written back (fsync) when the block ends."""
    path = ledger_path(state_dir, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = read_ledger(path) if path.is_file() else LedgerState(fingerprint)
            if state.fingerprint != fingerprint:
                raise ValueError(f"{path} belongs to another data set")
            before = json.dumps(state.to_dict(), sort_keys=True)
            yield state
            if json.dumps(state.to_dict(), sort_keys=True) != before:
                _write_durably(path, state.to_dict())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_ledger(path) -> LedgerState:
    return LedgerState.from_dict(json.loads(Path(path).read_text()))


def all_ledgers(state_dir) -> list[LedgerState]:
    folder = Path(state_dir) / "ledgers"
    return [read_ledger(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def charge(
    state: LedgerState,
    *,
    run: str,
    kind: str,
    unit: str,
    epsilon_target: float,
    delta: float,
    accountant: str,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
) -> Release:
    """Add `steps` at (σ, q) to `run`'s release (created on first use). Call before the data is used."""
    release = state.release(run)
    if release is None:
        release = Release(
            run, kind, time.time(), unit, epsilon_target, delta, accountant, noise_multiplier, sample_rate
        )
        state.releases.append(release)
    if math.isinf(epsilon_target) or noise_multiplier <= 0:
        release.plain += 1
    else:
        release.history = _merge(release.history, (noise_multiplier, sample_rate, steps))
    return release


def _merge(history: list, entry: tuple) -> list:
    """Append (σ, q, steps), merging with the last entry at the same σ and q (as Opacus' accountant does)."""
    history = [tuple(h) for h in history]
    if history and history[-1][0] == entry[0] and history[-1][1] == entry[1]:
        history[-1] = (entry[0], entry[1], int(history[-1][2]) + int(entry[2]))
    else:
        history.append((float(entry[0]), float(entry[1]), int(entry[2])))
    return history


def _write_durably(path: Path, data: dict) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
