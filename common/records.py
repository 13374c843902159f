"""Keys of the records in Flower messages and in a site's state: the wire contract of radfl.

A train reply carries exactly one ArrayRecord (`ARRAYS`: the adapter arrays named as PEFT names
them) and one MetricRecord (`METRICS`) of scalar numbers. Nothing else leaves a site.
"""

ARRAYS = "arrays"
METRICS = "metrics"
CONFIG = "config"

# Train instruction config (set by the server).
SERVER_ROUND = "server-round"  # injected by Flower's FedAvg
GLOBAL_ROUND = "global-round"  # server round + rounds done before a resume

# Reply metrics (scalars only).
NUM_EXAMPLES = "num-examples"  # training (or test) reports, not batches: FedAvg weights by it
SITE_INDEX = "site-index"
DECLINED = "declined"  # 1.0 when the site's budget cannot afford the round; then no arrays are sent
EPSILON_SPENT = "epsilon-spent"
NOISE_MULTIPLIER = "noise-multiplier"
SAMPLE_RATE = "sample-rate"
STEPS = "steps"
TRAIN_LOSS = "train-loss"
TRAIN_SECONDS = "train-seconds"
EXAMPLES_SEEN = "examples-seen"  # reports in this round's Poisson batches (a count, not a list)

# Evaluate reply metrics.
EVAL_METRICS = ("weighted-f1", "micro-f1", "macro-f1")

# context.state keys of a site.
LEDGER = "privacy-ledger"
