"""Keys of the records in Flower messages: the wire contract of radfl, and the reason codes of a decline.

A train reply carries one ArrayRecord (`ARRAYS`: the adapter arrays named as PEFT names them) and one
MetricRecord (`METRICS`) of numbers that are data-independent (the ledger's σ, q, steps, ε, a
reason code, the FedAvg weight derived from q and the batch size) — nothing else leaves a site.
No text leaves a site: a failure is a reason code from the fixed list below, and the details stay
in the site's own log.
"""

from enum import IntEnum

ARRAYS = "arrays"
METRICS = "metrics"
CONFIG = "config"

# Train instruction config (set by the server).
GLOBAL_ROUND = "global-round"  # server round + rounds done before a resume
FINAL = "final"  # evaluate instruction: 1 when the adapter is the run's last (sites may release metrics once)

# Reply metrics (numbers only).
WEIGHT = "num-examples"  # FedAvg weight: planned batches per epoch x expected batch (from q), never an exact count
SITE_INDEX = "site-index"  # the site's partition-id, chosen by the site
DECLINED = "declined"  # 1.0 when the site sends no arrays; `REASON` says why
REASON = "reason"  # a `Reason` code
EPSILON_SPENT = "epsilon-spent"  # this run, at the run's δ; inf without DP
LIFETIME_EPSILON = "lifetime-epsilon"  # everything released from the site's reports, at its δ; inf when unbounded
NOISE_MULTIPLIER = "noise-multiplier"
SAMPLE_RATE = "sample-rate"
STEPS = "steps"  # steps of this run so far

# Evaluate reply metrics (only where the site's policy allows plain metrics of the final adapter).
EVAL_METRICS = ("weighted-f1", "micro-f1", "macro-f1")
TEST_REPORTS = "num-examples"


class Reason(IntEnum):
    """Why a site declined a request. The server records the code; the site's log keeps the details."""

    OK = 0
    CONFIG_REJECTED = 1  # the run config is invalid for this site
    NON_PRIVATE_REFUSED = 2  # require-dp: no training without DP noise
    EPSILON_ABOVE_POLICY = 3
    DELTA_ABOVE_POLICY = 4
    CLIENT_LEVEL_REFUSED = 5  # allow-client-level-dp is false
    DISTRIBUTED_REFUSED = 6  # allow-distributed-dp is false
    UNIT_REFUSED = 7  # the site requires patient-level DP
    MODEL_NOT_ALLOWED = 8
    LABELS_NOT_ALLOWED = 9
    RUN_BUDGET_SPENT = 10  # this run's ε would pass its target
    LIFETIME_BUDGET_SPENT = 11  # the data set's lifetime ε would pass lifetime-epsilon
    ADAPTER_REJECTED = 12  # wrong names, shapes or dtype
    ADAPTER_NOT_FINITE = 13
    ADAPTER_OUT_OF_RANGE = 14
    FROZEN_CHANGED = 15  # FFA-LoRA's frozen A differs from the shared start
    UPDATE_NOT_FINITE = 16  # training produced a non-finite update: nothing is sent
    EVALUATION_NOT_ALLOWED = 17
    EVALUATION_ALREADY_RELEASED = 18  # once per run, and at most max-evaluations in the ledger's lifetime
    NO_DATA = 19  # the site's data cannot be read
    SITE_ERROR = 20  # anything else; see the site's log
    SECURE_AGGREGATION_REQUIRED = 21  # distributed DP without SecAgg+, or SecAgg+ settings the site refuses


def reason_name(code) -> str:
    try:
        return Reason(int(code)).name.lower().replace("_", "-")
    except ValueError:
        return f"unknown-{int(code)}"
