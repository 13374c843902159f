"""pyproject.toml's Flower run config must list every option with its default (Flower rejects
unknown keys, and `flwr run .` runs on these defaults)."""

import tomllib
from pathlib import Path

from common.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_flower_run_config_matches_the_run_configuration():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    flower = pyproject["tool"]["flwr"]["app"]["config"]
    expected = {**RunConfig().to_flower(), "run.out": "runs/flwr"}
    assert flower == expected, "regenerate [tool.flwr.app.config] from common/config.py"
    assert pyproject["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "server.server_app:app",
        "clientapp": "clients.client_app:app",
    }
    assert RunConfig.from_flower(flower).sites == 3  # the defaults parse: 3 sites, synthetic MIMIC, MiniLM, ε = 1
