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


# The recipes measured on the synthetic default (README, "Defaults"). SGD's rate grows with the batch:
# under DP the noise on the mean gradient shrinks as 1/batch, so a smaller batch wants smaller steps
# (6,000 reports, batch 128, ε = 1: weighted F1 0.53 at lr 10 against 0.14 at lr 20).
SGD_LR_PER_256 = 20.0
ADAM_LR = 0.01

DATASETS = ("synthetic-mimic", "synthetic-ctrate", "mimic-cxr", "ct-rate", "csv")


@dataclass
class RunConfig:
    # data
    dataset: str = option("synthetic-mimic", "data.dataset", "data set", choices=DATASETS)
    data: str = option("", "data.path", "folder (mimic-cxr, ct-rate) or file (csv, jsonl) of reports")
    text_column: str = option("text", "data.text-column", "text column of a csv/jsonl file")
    label_columns: str = option("", "data.label-columns", "comma-separated label columns of a csv/jsonl file (default: all others)")
    uncertainty: str = option("ones", "data.uncertainty", "policy for uncertain (-1) labels", choices=("ones", "zeros", "ignore"))
    labeler: str = option("chexpert", "data.labeler", "MIMIC-CXR label file", choices=("chexpert", "negbio"))
    synthetic_reports: int = option(12000, "data.synthetic-reports", "number of synthetic reports: 3 hospitals' worth; DP's utility grows with N")
    label_noise: float = option(0.03, "data.label-noise", "synthetic labeler error rate on mentioned findings")
    val_fraction: float = option(0.1, "data.val-fraction", "patients held out for validation (when no official split)")
    test_fraction: float = option(0.15, "data.test-fraction", "patients held out for testing (when no official split)")
    max_length: int = option(128, "data.max-length", "token limit per report; FINDINGS+IMPRESSION rarely exceed it")
    # model
    model: str = option("minilm", "model.name", "preset (minilm, bert-small, bert-medium, albert-base, tiny), HF id or folder")
    lora_rank: int = option(8, "lora.r", "LoRA rank")
    lora_alpha: int = option(16, "lora.alpha", "LoRA alpha (scale = alpha / rank)")
    lora_dropout: float = option(0.0, "lora.dropout", "LoRA dropout; DP noise already regularizes")
    lora_targets: str = option("query,value", "lora.targets", "comma-separated module names that get LoRA")
    # training
    epochs: float = option(1.0, "train.epochs", "passes over the training reports; under DP, more reports beat more epochs")
    batch_size: int = option(256, "train.batch-size", "expected (Poisson) batch; large batches put less noise on each example")
    optimizer: str = option("auto", "train.optimizer", "auto: plain SGD under DP (noise-robust), Adam without DP (SGD "
                            "needs far more than one epoch there)", choices=("auto", "sgd", "adam"))
    lr: float = option(0.0, "train.lr", "learning rate; 0: for SGD 20 x batch-size / 256 (large because DP clips each "
                       "gradient to norm 0.1), for Adam 0.01")
    seed: int = option(0, "train.seed", "seed of data split, initialization and sampling")
    device: str = option("auto", "train.device", "auto takes CUDA when present", choices=("auto", "cpu", "cuda"))
    grad_sample_mode: str = option("auto", "train.grad-sample-mode", "Opacus per-sample gradients", choices=("auto", "hooks", "functorch", "ghost"))
    # privacy
    epsilon: float = option(1.0, "dp.target-epsilon", "target epsilon per site; inf trains without DP")
    delta: float = option(1e-5, "dp.delta", "target delta; must be below 1/N")
    max_grad_norm: float = option(0.1, "dp.max-grad-norm", "per-example clipping norm C, below the typical gradient norm (~0.27)")
    accountant: str = option("prv", "dp.accountant", "privacy accountant (prv is tighter; rdp cannot reach small epsilon)", choices=("prv", "rdp"))
    # federation
    sites: int = option(3, "fl.sites", "number of hospitals", federated=True)
    partition: str = option("iid", "fl.partition", "how reports are split across sites", federated=True,
                            choices=("iid", "dirichlet", "quantity", "site"))
    alpha: float = option(0.5, "fl.alpha", "Dirichlet concentration of the dirichlet/quantity partitions", federated=True)
    rounds: int = option(6, "fl.rounds", "federated rounds; more, shorter rounds let the sites drift apart less", federated=True)
    local_epochs: float = option(1 / 6, "fl.local-epochs", "local epochs per round (fractions allowed): rounds x this = the "
                                 "epochs of centralized training", federated=True)
    site_batch_size: int = option(0, "fl.site-batch-size", "expected batch per site; 0: the centralized sampling rate "
                                  "(simulation) or --batch-size (a site with its own data)", federated=True)
    dp_level: str = option("sample", "fl.dp-level", "sample: DP-SGD at each site; client: server-side clipping + noise of updates",
                           federated=True, choices=("sample", "client"))
    aggregation: str = option("ffa", "fl.aggregation", "ffa (FFA-LoRA: A frozen at its shared seeded init, only B and the "
                              "head trained and sent) or fedavg (all LoRA arrays)", federated=True, choices=("ffa", "fedavg"))
    client_noise: float = option(-1.0, "fl.client-noise", "client-level DP noise multiplier (dp-level client); -1: calibrated to --epsilon", federated=True)
    client_clip: float = option(1.0, "fl.client-clip", "client-level DP clipping norm of an update (dp-level client)", federated=True)
    min_sites: int = option(1, "fl.min-sites", "fewest replies a round needs to update the global adapter", federated=True)
    wait_seconds: int = option(60, "fl.wait-seconds", "how long the server waits for fl.sites SuperNodes before it starts", federated=True)
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
        if not self.lr >= 0:
            raise InputError(f"--lr must be positive (or 0 for the optimizer's default), got {self.lr}")
        positive = ("epochs", "batch_size", "max_grad_norm", "lora_rank", "max_length", "sites", "rounds",
                    "local_epochs", "synthetic_reports", "client_clip", "alpha", "min_sites")
        for name in positive:
            if not getattr(self, name) > 0:
                raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
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
    def train_optimizer(self) -> str:
        """The optimizer this run uses: `auto` is plain SGD under DP and Adam without it (both measured, README)."""
        if self.optimizer != "auto":
            return self.optimizer
        return "sgd" if self.private and self.dp_level == "sample" else "adam"

    @property
    def train_lr(self) -> float:
        """The learning rate this run uses: `lr`, or the optimizer's measured default when `lr` is 0."""
        if self.lr:
            return self.lr
        return SGD_LR_PER_256 * self.batch_size / 256 if self.train_optimizer == "sgd" else ADAM_LR

    @property
    def lora_target_list(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())

    def to_dict(self) -> dict:
        return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}

    # ---- Flower run config: kebab-case keys with dotted groups, only bool/int/float/str values

    def to_flower(self) -> dict:
        return {f.metadata["key"]: _flower_value(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_flower(cls, run_config: dict) -> "RunConfig":
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
    def from_dict(cls, data: dict) -> "RunConfig":
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(unknown)}")
        return cls(**{k: _coerce(names[k], v) for k, v in data.items()})

    def replace(self, **changes) -> "RunConfig":
        return RunConfig.from_dict({**asdict(self), **changes})


def _flower_value(value):
    return "inf" if isinstance(value, float) and math.isinf(value) else value


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
