import math

import pytest

from common.config import RunConfig
from common.errors import InputError


def test_auto_optimizer_is_sgd_under_dp_and_adam_without():
    assert (RunConfig().train_optimizer, RunConfig().train_lr) == ("sgd", 20.0)
    non_private = RunConfig(epsilon=math.inf)
    assert (non_private.train_optimizer, non_private.train_lr) == ("adam", 0.01)
    client_dp = RunConfig(dp_level="client")  # local training is not DP-SGD there
    assert client_dp.train_optimizer == "adam"


def test_sgd_default_lr_scales_with_the_batch():
    assert RunConfig(batch_size=128).train_lr == 10.0
    assert RunConfig(batch_size=128, epsilon=math.inf).train_lr == 0.01  # Adam's does not


def test_explicit_optimizer_and_lr_win():
    cfg = RunConfig(epsilon=math.inf, optimizer="sgd", lr=0.5)
    assert (cfg.train_optimizer, cfg.train_lr) == ("sgd", 0.5)
    assert RunConfig(optimizer="adam").train_lr == 0.01


def test_flower_round_trip_and_unknown_keys():
    cfg = RunConfig(epsilon=math.inf, sites=4, partition="dirichlet", lr=0.1)
    assert RunConfig.from_flower(cfg.to_flower()) == cfg
    with pytest.raises(InputError, match="unknown run-config key"):
        RunConfig.from_flower({"train.learning-rate": 0.1})


@pytest.mark.parametrize("changes, message", [
    ({"lr": -1.0}, "--lr"), ({"epsilon": 0.0}, "--epsilon"), ({"delta": 1.0}, "--delta"),
    ({"optimizer": "rmsprop"}, "--optimizer"), ({"batch_size": 0}, "--batch-size"),
])
def test_bad_values_are_input_errors(changes, message):
    with pytest.raises(InputError, match=message):
        RunConfig(**changes)
