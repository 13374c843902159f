"""The hospital: a Flower ClientApp that trains DP-LoRA on its own reports and sends only adapters.

train: parse config → this site's model and data → load the global adapter → restore the privacy
ledger → train locally under DP → reply with the adapter arrays and scalar metrics.
evaluate: metrics of the global adapter on this site's own test reports.
"""

from __future__ import annotations

import os
from pathlib import Path

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.site import ledger_file, plan_ledger, restore_ledger, round_steps, session, store_ledger
from common import records as R
from common.adapters import get_adapter_state, set_adapter_state
from common.config import RunConfig
from common.data import Site
from common.metrics import compute_metrics
from common.runtime import autocast_dtype, configure_threads
from common.training import predict_probs, train_local

app = ClientApp()


def _setup(context: Context):
    configure_threads()
    cfg = RunConfig.from_flower(context.run_config)
    site = Site.from_node_config(context.node_config)
    # Where the site mirrors its privacy ledger: node config, else the runner's choice, else home.
    state_dir = (str(context.node_config.get("state-dir", "")) or os.environ.get("RADFL_STATE_DIR")
                 or os.path.join(os.path.expanduser("~"), ".radfl", "site-state"))
    return cfg, site, session(cfg, site), ledger_file(cfg, site, state_dir)


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg, site, s, ledger_path = _setup(context)
    n_train = len(s.train)
    ledger = restore_ledger(context.state, ledger_path) or plan_ledger(cfg, n_train, s.batch_size)
    steps = round_steps(cfg, n_train, s.batch_size)
    metrics = {R.NUM_EXAMPLES: n_train, R.SITE_INDEX: site.index, R.NOISE_MULTIPLIER: ledger.noise_multiplier,
               R.SAMPLE_RATE: ledger.sample_rate, R.TRAIN_LOSS: 0.0, R.TRAIN_SECONDS: 0.0, R.EXAMPLES_SEEN: 0}
    if not ledger.can_afford(steps):
        # Out of budget: train nothing, send nothing but the ledger's numbers.
        metrics.update({R.DECLINED: 1.0, R.EPSILON_SPENT: _eps(ledger), R.STEPS: ledger.steps_taken, R.NUM_EXAMPLES: 0})
        return Message(RecordDict({R.METRICS: MetricRecord(metrics)}), reply_to=msg)
    set_adapter_state(s.classifier.model, {k: v.numpy() for k, v in msg.content[R.ARRAYS].items()})
    global_round = int(msg.content[R.CONFIG].get(R.GLOBAL_ROUND, msg.content[R.CONFIG][R.SERVER_ROUND]))
    result = train_local(
        s.classifier.model, s.data.dataset(s.train), ledger=ledger, steps=steps, batch_size=s.batch_size,
        lr=cfg.train_lr, optimizer=cfg.train_optimizer, pad_id=s.classifier.pad_id, device=s.device, seed=cfg.seed * 100_003 + global_round * 101 + site.index,
        grad_sample_mode=s.grad_sample_mode, autocast_dtype=s.train_autocast)
    store_ledger(context.state, ledger_path, ledger)
    metrics.update({R.DECLINED: 0.0, R.EPSILON_SPENT: _eps(ledger), R.STEPS: ledger.steps_taken,
                    R.TRAIN_LOSS: result.mean_loss, R.TRAIN_SECONDS: result.seconds, R.EXAMPLES_SEEN: result.examples})
    arrays = ArrayRecord({k: Array(v) for k, v in get_adapter_state(s.classifier.model).items()})
    return Message(RecordDict({R.ARRAYS: arrays, R.METRICS: MetricRecord(metrics)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, site, s, _ = _setup(context)
    set_adapter_state(s.classifier.model, {k: v.numpy() for k, v in msg.content[R.ARRAYS].items()})
    probs = predict_probs(s.classifier.model, s.data.dataset(s.test), pad_id=s.classifier.pad_id, device=s.device,
                          autocast_dtype=autocast_dtype(s.device))
    m = compute_metrics(s.data.reports.labels[s.test], probs, s.data.label_names)
    reply = {R.NUM_EXAMPLES: len(s.test), R.SITE_INDEX: site.index, "weighted-f1": m["weighted_f1"],
             "micro-f1": m["micro_f1"], "macro-f1": m["macro_f1"]}
    return Message(RecordDict({R.METRICS: MetricRecord(reply)}), reply_to=msg)


def _eps(ledger) -> float:
    """MetricRecord takes numbers only: a non-private site reports ε = -1."""
    return ledger.spent() if ledger.private else -1.0
