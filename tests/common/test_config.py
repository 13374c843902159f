import math

import pytest

from common.config import RunConfig, from_json, to_json
from common.errors import InputError


def test_flower_round_trip_and_unknown_keys():
    cfg = RunConfig(epsilon=math.inf, sites=4, partition="dirichlet", lr=0.1, privacy_unit="patient", dp_level="client")
    assert RunConfig.from_flower(cfg.to_flower()) == cfg
    with pytest.raises(InputError, match="unknown run-config key"):
        RunConfig.from_flower({"train.learning-rate": 0.1})


def test_one_representation_of_non_private_each_way():
    assert to_json(math.inf) == "inf" and from_json("inf") == math.inf and from_json(None) == math.inf
    assert to_json(1.5) == 1.5 and from_json(1.5) == 1.5
    assert RunConfig(epsilon=math.inf).to_dict()["epsilon"] == "inf"
    assert RunConfig.from_flower({"dp.target-epsilon": "inf"}).epsilon == math.inf


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lr": -1.0}, "--lr"),
        ({"epsilon": 0.0}, "--epsilon"),
        ({"delta": 1.0}, "--delta"),
        ({"optimizer": "rmsprop"}, "--optimizer"),
        ({"batch_size": -1}, "--batch-size"),
        ({"privacy_unit": "hospital"}, "--privacy-unit"),
        ({"dp_level": "secret"}, "--dp-level"),
        ({"epochs": -2.0}, "--epochs"),
        ({"dp_level": "distributed", "epsilon": math.inf}, "needs a finite --epsilon"),
    ],
)
def test_bad_values_are_input_errors(changes, message):
    with pytest.raises(InputError, match=message):
        RunConfig(**changes)
