"""cluster.yaml and scripts/cluster_local.yaml pass Ray's own cluster-config validation.

``ray up`` fills in the provider's defaults (``prepare_config``) and validates the result
against Ray's JSON schema (``validate_config``); these tests do the same, without a cloud.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"aws": ROOT / "cluster.yaml", "local": ROOT / "scripts" / "cluster_local.yaml"}


def load(kind: str) -> dict[str, Any]:
    return yaml.safe_load(CONFIGS[kind].read_text(encoding="utf-8"))


def start_commands(config: dict[str, Any]) -> list[str]:
    return [*config["head_start_ray_commands"], *config["worker_start_ray_commands"]]


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_cluster_config_passes_ray_validation(kind: str) -> None:
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load(kind)
    schema_file = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    jsonschema.validate(raw, schema)  # the file as written, before Ray's defaults
    validate_config(prepare_config(raw))  # what `ray up` checks


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_cluster_config_keeps_dashboard_on_loopback(kind: str) -> None:
    head = " ".join(load(kind)["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in CONFIGS[kind].read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_cluster_config_has_no_credentials(kind: str) -> None:
    text = CONFIGS[kind].read_text(encoding="utf-8")
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # an AWS access key id
    assert not re.search(r"\b[0-9a-f]{64}\b", text)  # a Ray token
    secret_keys = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "password"}
    assert not secret_keys & {key.lower() for key in keys_of(load(kind))}


def keys_of(value: Any) -> list[str]:
    """Every mapping key in a parsed YAML document, at any depth."""
    if isinstance(value, dict):
        return [str(k) for k in value] + [k for v in value.values() for k in keys_of(v)]
    if isinstance(value, list):
        return [k for v in value for k in keys_of(v)]
    return []


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_cluster_config_installs_this_ray_version(kind: str) -> None:
    import ray

    pins = re.findall(r"ray\[[a-z,]+\]==([0-9.]+)", " ".join(load(kind)["setup_commands"]))
    assert pins == [ray.__version__], "keep the cluster's Ray equal to the one that runs `ray up`"


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_cluster_config_syncs_project_and_token(kind: str) -> None:
    config = load(kind)
    assert config["file_mounts"]["~/cxr_tune"] == "."
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert all("RAY_AUTH_MODE=token" in c for c in start_commands(config) if "ray start" in c)


def test_aws_config_autoscales_gpu_workers_from_zero() -> None:
    config = load("aws")
    head = config["available_node_types"][config["head_node_type"]]
    workers = [t for name, t in config["available_node_types"].items() if name != "head"]
    assert head["resources"] == {"CPU": 0}  # trials never land on the head
    assert len(workers) == 1
    assert workers[0]["min_workers"] == 0
    assert 1 <= workers[0]["max_workers"] <= config["max_workers"]
    assert workers[0]["node_config"]["InstanceType"].startswith(("g", "p"))
