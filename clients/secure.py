"""A hospital's side of distributed DP: a noise share per round, sent only through Flower's SecAgg+.

`secure_aggregation_mod` sits on the train function. A message of the SecAgg+ workflow goes through the
site's checks (its policy must allow distributed noise; the workflow's settings must give at least m
shares, a threshold of at least m, ranges that cannot overflow, and consistent survivor lists) and then
through Flower's `secaggplus_mod`, which masks the share; any other message goes to the plain handler.
A refusal raises with a fixed reason name, never data: Flower sends the exception text to the server.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from clients.handlers import Declined, budget_refusal, check_request, parse_run, site_log, site_plan
from clients.policy import SitePolicy
from clients.site import session
from common import records as R
from common.ledger import charge, open_ledger
from common.privacy import epsilon_spent
from common.training import private_gradient_sum

Reason = R.Reason
CONFIGS = "secaggplus_configs"


class SiteRefused(RuntimeError):
    """Raised to leave a SecAgg+ round; its text is a reason name only."""


def _refuse(reason: Reason) -> SiteRefused:
    return SiteRefused(f"radfl site declined: {R.reason_name(reason)}")


def secure_aggregation_mod(msg: Message, context: Context, call_next) -> Message:
    configs = msg.content.config_records.get(CONFIGS)
    if configs is None:
        return call_next(msg, context)
    from flwr.client.mod import secaggplus_mod

    try:
        policy = SitePolicy.from_node_config(context.node_config)
        cfg = parse_run(context.run_config)
        if not policy.allow_distributed_dp or cfg.dp_level != "distributed":
            raise Declined(Reason.DISTRIBUTED_REFUSED)
        _check_protocol(configs, m=cfg.secagg_m or int(configs.get("sample_num", 0)), policy=policy)
    except Declined as declined:
        site_log(None).info("secure aggregation declined: %s", declined)
        raise _refuse(declined.reason) from None
    except Exception:  # noqa: BLE001
        site_log(None).exception("secure aggregation check failed")
        raise _refuse(Reason.SITE_ERROR) from None
    return secaggplus_mod(msg, context, lambda m, c: secure_train(m, c))


def _check_protocol(configs, *, m: int, policy: SitePolicy) -> None:
    """The SecAgg+ settings this site accepts: every share counted, a threshold of at least m, no overflow."""
    stage = configs.get("stage")
    if stage == "setup":
        n, shares, t = int(configs["sample_num"]), int(configs["share_num"]), int(configs["threshold"])
        q, modulus = int(configs["target_range"]), int(configs["mod_range"])
        if n < m or shares != n or t < m or 2 * t <= n or m > policy.max_noise_shares:
            raise Declined(Reason.SECURE_AGGREGATION_REQUIRED, f"n={n} shares={shares} t={t} m={m}")
        if q >= 2**31 or n * q >= modulus or modulus & (modulus - 1) or float(configs["max_weight"]) != 1.0:
            raise Declined(Reason.SECURE_AGGREGATION_REQUIRED, "ranges")
    elif stage == "unmask":
        active, dead = set(configs["active_nids"]), set(configs["dead_nids"])
        if active & dead or len(active) < m:  # a server listing a site as both alive and dead could unmask it alone
            raise Declined(Reason.SECURE_AGGREGATION_REQUIRED, "inconsistent survivor lists")


def secure_train(msg: Message, context: Context) -> Message:
    """The collect stage: this round's noise share of the gradient sum, as a legacy FitRes for secaggplus_mod."""
    try:
        policy = SitePolicy.from_node_config(context.node_config)
        arrays, numbers = _share(policy, context.run_config, msg.content)
    except Declined as declined:
        site_log(None).info("secure round declined: %s", declined)
        raise _refuse(declined.reason) from None
    except Exception:  # noqa: BLE001
        site_log(None).exception("secure round failed")
        raise _refuse(Reason.SITE_ERROR) from None
    return Message(
        RecordDict(
            {
                "fitres.parameters": ArrayRecord(arrays),  # masked by secaggplus_mod, then removed from the reply
                "fitres.num_examples": MetricRecord({"num_examples": 1}),  # plaintext: a constant, so every weight is 1
                "fitres.metrics": ConfigRecord(numbers),  # plaintext: the ledger's data-independent numbers only
                "fitres.status": ConfigRecord({"code": 0, "message": ""}),
            }
        ),
        reply_to=msg,
    )


def _share(policy: SitePolicy, run_config: dict, content) -> tuple[list[np.ndarray], dict]:
    cfg = parse_run(run_config)
    check_request(policy, cfg)
    s = session(cfg, policy)
    model = s.classifier.model
    names = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    incoming = (
        [a.numpy() for a in content["fitins.parameters"].values()]
        if "fitins.parameters" in content.array_records
        else []
    )
    if len(incoming) != len(names):
        raise Declined(Reason.ADAPTER_REJECTED, "array count")
    arrays = dict(zip(names, incoming, strict=True))
    _check_arrays(model, arrays, policy)
    unit = cfg.privacy_unit
    n_units = s.n_units(unit)
    if cfg.delta > min(policy.delta_cap(n_units), 1.0 / n_units):
        raise Declined(Reason.DELTA_ABOVE_POLICY)
    plan = site_plan(cfg.replace(local_epochs=0.0), n_units, private=True, reports_per_unit=len(s.train) / n_units)
    q = cfg.sample_rate or plan.sample_rate
    from common.privacy import calibrate_noise

    sigma = calibrate_noise(
        target_epsilon=cfg.epsilon, delta=cfg.delta, sample_rate=q, steps=cfg.rounds, accountant=cfg.accountant
    )
    m = cfg.secagg_m or cfg.sites
    from clients.handlers import run_key

    key = run_key(cfg, "train-distributed")
    life_delta = policy.delta_cap(n_units)
    with open_ledger(policy.state_folder(), s.fingerprint) as ledger:
        release = ledger.release(key)
        history = list(release.history) if release else []
        entry = (sigma, q, 1)
        refusal = budget_refusal(ledger, history, entry, cfg, policy, life_delta)
        if refusal:
            raise Declined(refusal)
        charge(
            ledger,
            run=key,
            kind="train",
            unit=unit,
            epsilon_target=cfg.epsilon,
            delta=cfg.delta,
            accountant=cfg.accountant,
            noise_multiplier=sigma,
            sample_rate=q,
            steps=1,
        )
        history = list(ledger.release(key).history)
        life = ledger.lifetime_epsilon(delta=life_delta, accountant=cfg.accountant)
    params = dict(model.named_parameters())
    import torch

    with torch.no_grad():
        for name, value in arrays.items():
            params[name].copy_(torch.as_tensor(value))
    share = private_gradient_sum(
        model,
        s.data.dataset(s.train),
        noise_multiplier=sigma,
        noise_share=m,
        sample_rate=q,
        max_grad_norm=plan.max_grad_norm,
        pad_id=s.classifier.pad_id,
        device=s.device,
        grad_sample_mode=s.grad_sample_mode,
        units=s.units(unit),
        autocast_dtype=s.train_autocast,
    )
    vectors = [share[n] for n in names] + [
        np.array([q * n_units], dtype=np.float64)
    ]  # the expected batch rides in the sum too
    if not all(np.isfinite(v).all() for v in vectors):
        raise Declined(Reason.UPDATE_NOT_FINITE)
    numbers = {
        R.SITE_INDEX: policy.label(),
        R.EPSILON_SPENT: epsilon_spent(history, delta=cfg.delta, accountant=cfg.accountant),
        R.LIFETIME_EPSILON: life if math.isfinite(life) else -1.0,
        R.NOISE_MULTIPLIER: sigma,
        R.SAMPLE_RATE: q,
        R.STEPS: int(sum(h[2] for h in history)),
    }
    return vectors, numbers


def _check_arrays(model, arrays: dict[str, np.ndarray], policy: SitePolicy) -> None:
    params = dict(model.named_parameters())
    for name, value in arrays.items():
        if value.dtype != np.float32 or tuple(value.shape) != tuple(params[name].shape):
            raise Declined(Reason.ADAPTER_REJECTED, name)
        if not np.isfinite(value).all():
            raise Declined(Reason.ADAPTER_NOT_FINITE, name)
        if value.size and float(np.abs(value).max()) > policy.max_adapter_abs:
            raise Declined(Reason.ADAPTER_OUT_OF_RANGE, name)
