"""A hospital's privacy policy, read from its SuperNode's node config: what no run config can widen.

The node config is written by the hospital; the run config by whoever submits a run (the server's
side, untrusted). Every train or evaluate request is checked against the policy before any report
is read for it, and a request that asks for more is declined with a reason code (common.records).
Simulated sites (Flower's simulation engine gives them only partition-id and num-partitions) read
the same keys from the `RADFL_SIMULATED_SITES` environment variable, which `radfl federate
--node-config` sets, so simulations run the same checks as deployments.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields

from common.errors import InputError
from common.labels import CT_RATE, MIMIC_CXR

SIMULATED_SITES_ENV = "RADFL_SIMULATED_SITES"
FORMATS = ("mimic-cxr", "ct-rate", "csv")
# The models a site runs unless its policy names others: the bundled encoder and the paper's presets,
# all loaded from local files. A model name is a path or hub id on the site's disk: never arbitrary.
DEFAULT_MODELS = ("minilm", "bert-small", "bert-medium", "albert-base", "tiny", "tiny-albert")


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(value)


def _float(value) -> float:
    return math.inf if str(value).strip().lower() == "inf" else float(value)


def _names(value) -> tuple[str, ...]:
    return tuple(v.strip() for v in str(value).split(",") if v.strip())


@dataclass(frozen=True)
class SitePolicy:
    """Node-config keys (kebab-case) and their defaults: a private, conservative hospital."""

    data_path: str = ""  # the site's own reports; a deployed site without it refuses to start
    data_format: str = ""  # mimic-cxr, ct-rate or csv
    site_name: str = ""
    state_dir: str = ""  # ledgers, split file, caches (owner-only); default ~/.radfl/site-state
    partition_id: int = -1  # the site's label in the server's records (and its simulated partition)
    num_partitions: int = 0  # set by Flower's simulation engine only
    text_column: str = "text"  # csv sites: the report column
    label_columns: str = ""  # csv sites: the only columns that may be used as labels
    max_epsilon: float = 1.0  # per run, at the run's δ
    max_delta: float = 0.0  # 0: 1 / (10 N), N the site's training units
    lifetime_epsilon: float = 4.0  # everything ever released from these reports, composed
    require_dp: bool = True  # decline non-private training
    allow_client_level_dp: bool = False  # client-level DP: the site's update leaves without local noise
    allow_distributed_dp: bool = False  # SecAgg+ noise shares: safe only against an honest-but-curious server
    max_noise_shares: int = 10  # distributed DP: the largest m (this site adds 1/m of the noise variance)
    allow_evaluation: str = "none"  # none, or final: plain metrics of a run's final adapter, once per run
    max_evaluations: int = 10  # plain evaluations released in the ledger's lifetime
    models: str = ",".join(DEFAULT_MODELS)
    privacy_unit: str = ""  # empty: the run's; "patient" makes patient-level DP mandatory
    max_adapter_abs: float = 100.0  # incoming adapter values beyond this are declined
    val_fraction: float = 0.1  # the site's own split of its reports (fixed once, kept in state_dir)
    test_fraction: float = 0.15

    @property
    def simulated(self) -> bool:
        return self.num_partitions > 0 and not self.data_path

    @property
    def allowed_models(self) -> tuple[str, ...]:
        return _names(self.models)

    def delta_cap(self, n_units: int) -> float:
        """Largest δ this site accepts: its `max-delta`, else 1 / (10 N)."""
        return self.max_delta if self.max_delta > 0 else 1.0 / (10 * max(n_units, 1))

    def allowed_labels(self) -> tuple[str, ...]:
        if self.data_format == "mimic-cxr":
            return MIMIC_CXR.labels
        if self.data_format == "ct-rate":
            return CT_RATE.labels
        return _names(self.label_columns)

    @classmethod
    def from_node_config(cls, node_config: dict, environ=os.environ) -> SitePolicy:
        """Parse a node config (plus, for a simulated site, its entry in `RADFL_SIMULATED_SITES`).

        Unknown keys are errors: a typo such as `data_path` must not silently fall back to a default.
        """
        values = dict(node_config)
        if "num-partitions" in values and "data-path" not in values and environ.get(SIMULATED_SITES_ENV):
            sites = json.loads(environ[SIMULATED_SITES_ENV])
            values = {**sites.get("*", {}), **sites.get(str(values.get("partition-id", 0)), {}), **values}
        by_key = {f.name.replace("_", "-"): f for f in fields(cls)}
        unknown = sorted(set(values) - set(by_key))
        if unknown:
            raise InputError(
                f"unknown node-config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(by_key))}"
            )
        parsed = {}
        for key, raw in values.items():
            f = by_key[key]
            try:
                kind = type(f.default)
                parsed[f.name] = (
                    _bool(raw)
                    if kind is bool
                    else _float(raw)
                    if kind is float
                    else int(raw)
                    if kind is int
                    else str(raw)
                )
            except (TypeError, ValueError):
                raise InputError(f"node config {key} must be a {type(f.default).__name__}, got {raw!r}") from None
        policy = cls(**parsed)
        policy.validate()
        return policy

    def validate(self) -> None:
        if not self.simulated and not self.data_path:
            raise InputError(
                "node config has no data-path: a hospital's SuperNode must name its own reports "
                "(--node-config \"data-path='/data/reports' data-format='mimic-cxr' ...\")"
            )
        if self.data_path and self.data_format not in FORMATS:
            raise InputError(f"node config data-format {self.data_format!r} must be one of {', '.join(FORMATS)}")
        if self.data_format == "csv" and not self.label_columns:
            raise InputError("a csv site names its label columns in its node config: label-columns='col1,col2,...'")
        if not self.max_epsilon > 0 or not self.lifetime_epsilon > 0:
            raise InputError("node config max-epsilon and lifetime-epsilon must be positive (inf allows anything)")
        if not 0 <= self.max_delta < 1:
            raise InputError("node config max-delta must lie in [0, 1) (0: 1 / (10 N))")
        if self.allow_evaluation not in ("none", "final"):
            raise InputError("node config allow-evaluation must be none or final")
        if self.privacy_unit not in ("", "report", "patient"):
            raise InputError("node config privacy-unit must be report or patient")
        if not self.max_adapter_abs > 0:
            raise InputError("node config max-adapter-abs must be positive")

    def state_folder(self) -> str:
        """The site's state folder, created owner-only (0700) the first time: ledgers, split, caches, log."""
        path = (
            self.state_dir
            or os.environ.get("RADFL_STATE_DIR")
            or os.path.join(os.path.expanduser("~"), ".radfl", "site-state")
        )
        if not os.path.isdir(path):
            os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def label(self) -> int:
        """The number the server's records list this site under (its partition-id; -1 when none given)."""
        return self.partition_id


def simulated_sites_env(node_config: str, sites: int) -> str:
    """`radfl federate --node-config "key=value ..."` (all sites) or "0: key=value; 1: key=value" (per site)
    as the JSON that simulated sites read from `RADFL_SIMULATED_SITES`."""
    import shlex

    result: dict[str, dict] = {}
    for part in [p for p in node_config.split(";") if p.strip()]:
        target, _, body = part.partition(":") if ":" in part.split("=", 1)[0] else ("*", "", part)
        target = target.strip()
        if target != "*" and not (target.isdigit() and int(target) < sites):
            raise InputError(f"--node-config: {target!r} is not a site number below {sites}")
        entry = result.setdefault(target, {})
        for item in shlex.split(body):
            key, sep, value = item.partition("=")
            if not sep:
                raise InputError(f"--node-config: {item!r} is not key=value")
            entry[key.strip()] = value
    for entry in result.values():  # a typo fails here, before any Flower process starts
        SitePolicy.from_node_config({**entry, "partition-id": 0, "num-partitions": sites}, environ={})
    return json.dumps(result)
