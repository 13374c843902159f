"""The typed, validated configuration of one run, shared by the CLI and the Flower apps.

Each field has a CLI flag (`--batch-size`) and a Flower run-config key (`train.batch-size`), so the
same options reach `radfl train`, `radfl federate` and `flwr run --run-config`. Unknown keys are an
error, never ignored. Every default says why it is what it is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from common.errors import InputError


def option(default, key: str, help: str, *, federated: bool = False, choices=None):
    return field(default=default, metadata={"key": key, "help": help, "federated": federated, "choices": choices})


DATASETS = ("synthetic-mimic", "synthetic-ctrate", "mimic-cxr", "ct-rate", "csv")


@dataclass
class RunConfig:
    # data
    dataset: str = option("synthetic-mimic", "data.dataset", "data set", choices=DATASETS)
    data: str = option("", "data.path", "folder (mimic-cxr, ct-rate) or file (csv, jsonl) of reports")
    text_column: str = option("text", "data.text-column", "text column of a csv/jsonl file")
    label_columns: str = option(
        "", "data.label-columns", "comma-separated label columns of a csv/jsonl file (default: all others)"
    )
    uncertainty: str = option(
        "ones", "data.uncertainty", "policy for uncertain (-1) labels", choices=("ones", "zeros", "ignore")
    )
    labeler: str = option("chexpert", "data.labeler", "MIMIC-CXR label file", choices=("chexpert", "negbio"))
    synthetic_reports: int = option(
        12000, "data.synthetic-reports", "number of synthetic reports: 3 hospitals' worth; DP's utility grows with N"
    )
    synthetic_difficulty: str = option(
        "realistic",
        "data.synthetic-difficulty",
        "realistic: as varied as real reports; easy: clean templates",
        choices=("realistic", "easy"),
    )
    label_noise: float = option(0.03, "data.label-noise", "synthetic labeler error rate on mentioned findings")
    val_fraction: float = option(0.1, "data.val-fraction", "patients held out for validation (when no official split)")
    test_fraction: float = option(0.15, "data.test-fraction", "patients held out for testing (when no official split)")
    max_length: int = option(128, "data.max-length", "token limit per report; FINDINGS+IMPRESSION rarely exceed it")
    # model
    model: str = option(
        "minilm", "model.name", "preset (minilm, bert-small, bert-medium, albert-base, tiny), HF id or folder"
    )
    lora_rank: int = option(8, "lora.r", "LoRA rank")
    lora_alpha: int = option(16, "lora.alpha", "LoRA alpha (scale = alpha / rank)")
    lora_dropout: float = option(0.0, "lora.dropout", "LoRA dropout; DP noise already regularizes")
    lora_targets: str = option("query,value", "lora.targets", "comma-separated module names that get LoRA")
    warm_start: str = option(
        "auto",
        "model.warm-start",
        "auto (synthetic for mimic-cxr/ct-rate, else none), synthetic "
        "(an adapter trained without DP on public synthetic reports), synthetic-easy (the same on the easy "
        "generator's reports, written unlike the realistic default), none, or an adapter folder",
    )
    # training
    epochs: float = option(0.0, "train.epochs", "passes over the training reports; 0: the recipe's (common/recipe.py)")
    batch_size: int = option(0, "train.batch-size", "expected (Poisson) batch; 0: the recipe's, from N and epsilon")
    optimizer: str = option("auto", "train.optimizer", "auto: the recipe's (Adam)", choices=("auto", "sgd", "adam"))
    lr: float = option(
        0.0, "train.lr", "learning rate of the LoRA matrices (the head's too when given); 0: the recipe's"
    )
    max_examples: int = option(
        0,
        "train.max-examples",
        "compute cap: examples processed at most, shared by a federation's sites; 0: the recipe's "
        "(under DP 10,000 on CPU, 40,000 on CUDA; 15,000 without DP)",
    )
    seed: int = option(0, "train.seed", "seed of data split, initialization and sampling")
    device: str = option("auto", "train.device", "auto takes CUDA when present", choices=("auto", "cpu", "cuda"))
    grad_sample_mode: str = option(
        "auto",
        "train.grad-sample-mode",
        "Opacus per-sample gradients (the guard checks any choice; ghost: centralized only)",
        choices=("auto", "hooks", "functorch", "ghost"),
    )
    # privacy
    epsilon: float = option(1.0, "dp.target-epsilon", "target epsilon per site; inf trains without DP")
    delta: float = option(1e-5, "dp.delta", "target delta; must be below 1/N")
    max_grad_norm: float = option(
        0.0, "dp.max-grad-norm", "per-example clipping norm C; 0: the recipe's (0.1, below the typical gradient norm)"
    )
    privacy_unit: str = option(
        "report",
        "dp.unit",
        "report: each report protected at epsilon (a patient with k reports at "
        "about k x epsilon); patient: sampling and clipping per patient",
        choices=("report", "patient"),
    )
    accountant: str = option(
        "prv",
        "dp.accountant",
        "privacy accountant (prv is tighter; rdp cannot reach small epsilon)",
        choices=("prv", "rdp"),
    )
    thresholds: str = option(
        "auto",
        "eval.thresholds",
        "decision thresholds: auto (tuned on the validation split without "
        "DP; under DP, tuned on public synthetic reports or 0.5), or 0.5",
        choices=("auto", "0.5"),
    )
    baseline: str = option(
        "on",
        "eval.baseline",
        "TF-IDF + logistic regression (and its DP twin) on the same splits",
        choices=("on", "off"),
    )
    # federation
    sites: int = option(3, "fl.sites", "number of hospitals", federated=True)
    partition: str = option(
        "iid",
        "fl.partition",
        "how reports are split across sites",
        federated=True,
        choices=("iid", "dirichlet", "quantity", "site"),
    )
    alpha: float = option(
        0.5, "fl.alpha", "Dirichlet concentration of the dirichlet/quantity partitions", federated=True
    )
    rounds: int = option(
        6, "fl.rounds", "federated rounds; more, shorter rounds let the sites drift apart less", federated=True
    )
    local_epochs: float = option(
        0.0, "fl.local-epochs", "local epochs per round; 0: the site's recipe spread over the rounds", federated=True
    )
    site_batch_size: int = option(
        0, "fl.site-batch-size", "expected batch per site; 0: the recipe's for the site's own N", federated=True
    )
    dp_level: str = option(
        "sample",
        "fl.dp-level",
        "sample: DP-SGD at each site; client: server-side clipping + noise of "
        "updates; distributed: noise shares summed under SecAgg+",
        federated=True,
        choices=("sample", "client", "distributed"),
    )
    sample_rate: float = option(
        0.0,
        "fl.sample-rate",
        "distributed DP: every site's Poisson rate q (one step per round); 0: each site's recipe",
        federated=True,
    )
    secagg_m: int = option(
        0,
        "fl.secagg-m",
        "distributed DP: m, the sites whose noise shares the guarantee counts on (each "
        "adds 1/m of the variance; SecAgg+ threshold = m); 0: every connected site",
        federated=True,
    )
    aggregation: str = option(
        "ffa",
        "fl.aggregation",
        "ffa (FFA-LoRA: A frozen at its shared seeded init, only B and the "
        "head trained and sent) or fedavg (all LoRA arrays); distributed DP trains A, B and the head as radfl train does",
        federated=True,
        choices=("ffa", "fedavg"),
    )
    client_noise: float = option(
        -1.0,
        "fl.client-noise",
        "client-level DP noise multiplier (dp-level client); -1: calibrated to --epsilon",
        federated=True,
    )
    client_clip: float = option(
        1.0, "fl.client-clip", "client-level DP clipping norm of an update (dp-level client)", federated=True
    )
    monitor_rounds: int = option(
        5,
        "fl.monitor-rounds",
        "simulations: evaluations of the global adapter on a subset of the test split before the last "
        "round, evenly spread; 0: the final evaluation only",
        federated=True,
    )
    min_sites: int = option(
        1, "fl.min-sites", "fewest replies a round needs to update the global adapter", federated=True
    )
    wait_seconds: int = option(
        60, "fl.wait-seconds", "how long the server waits for fl.sites SuperNodes before it starts", federated=True
    )
    out: str = option("runs/latest", "run.out", "output folder")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise InputError(f"--{f.name.replace('_', '-')} {value!r} is not one of {', '.join(choices)}")
        if not self.epsilon > 0:
            raise InputError(f"--epsilon must be positive (or inf), got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise InputError(f"--delta must lie strictly between 0 and 1, got {self.delta}")
        if self.dp_level == "distributed" and math.isinf(self.epsilon):
            raise InputError(
                "--dp-level distributed sums noise shares under SecAgg+ and needs a finite --epsilon; "
                "for a non-private federation use --dp-level sample --epsilon inf"
            )
        for name in ("lr", "epochs", "batch_size", "max_grad_norm", "local_epochs", "max_examples", "monitor_rounds"):
            if not getattr(self, name) >= 0:
                raise InputError(
                    f"--{name.replace('_', '-')} must be positive (or 0 for the recipe's), got {getattr(self, name)}"
                )
        positive = (
            "lora_rank",
            "max_length",
            "sites",
            "rounds",
            "synthetic_reports",
            "client_clip",
            "alpha",
            "min_sites",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0 <= self.sample_rate <= 1 or self.secagg_m < 0:
            raise InputError("--sample-rate must lie in [0, 1] and --secagg-m must be 0 or positive")
        if self.site_batch_size < 0:
            raise InputError("--site-batch-size must be 0 (automatic) or positive")
        if self.client_noise < 0 and self.client_noise != -1:
            raise InputError("--client-noise must be -1 (calibrate to --epsilon) or a noise multiplier >= 0")
        if not 0 <= self.label_noise < 0.5:
            raise InputError("--label-noise must lie in [0, 0.5)")

    @property
    def private(self) -> bool:
        return not math.isinf(self.epsilon)

    @property
    def lora_target_list(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())

    def to_dict(self) -> dict:
        return {k: to_json(v) for k, v in asdict(self).items()}

    # ---- Flower run config: kebab-case keys with dotted groups, only bool/int/float/str values

    def to_flower(self) -> dict:
        return {f.metadata["key"]: _flower_value(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_flower(cls, run_config: dict) -> RunConfig:
        by_key = {f.metadata["key"]: f for f in fields(cls)}
        unknown = sorted(set(run_config) - set(by_key))
        if unknown:
            raise InputError(f"unknown run-config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(by_key))}")
        values = {}
        for key, raw in run_config.items():
            f = by_key[key]
            values[f.name] = _coerce(f, raw)
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(unknown)}")
        return cls(**{k: _coerce(names[k], v) for k, v in data.items()})

    def replace(self, **changes) -> RunConfig:
        return RunConfig.from_dict({**asdict(self), **changes})


def to_json(value):
    """Non-private is `math.inf` in memory and on the wire, and the string "inf" on disk (JSON has no infinity)."""
    return "inf" if isinstance(value, float) and math.isinf(value) else value


def from_json(value) -> float:
    """The inverse of `to_json` for a budget: "inf" (or inf, or None from an old record) → math.inf."""
    return math.inf if value in ("inf", None) or (isinstance(value, float) and math.isinf(value)) else float(value)


_flower_value = to_json


def _coerce(f, raw):
    kind = type(f.default)
    try:
        if kind is float:
            return float(raw)
        if kind is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise InputError(f"{f.metadata['key']} must be a {kind.__name__}, got {raw!r}") from None


def config_fields(*, federated: bool):
    """Fields a command exposes: every field for `federate`, the non-federated ones for `train`."""
    return [f for f in fields(RunConfig) if federated or not f.metadata["federated"]]
