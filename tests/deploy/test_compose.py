"""docker-compose.yml held against the code: commands exist, env vars are read, wiring is consistent.

No Docker engine runs here, so this is the check that a renamed setting or CLI option cannot
silently break the compose deployment.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import click
import pytest
import yaml

from service.cli import main as autoprune_cli
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict = COMPOSE["services"]
APP_SERVICES = [name for name, svc in SERVICES.items() if svc.get("image", "").startswith("autoprune")]
# Variables that belong to Ray itself, not to autoprune's settings.
RAY_VARS = {"RAY_USAGE_STATS_ENABLED", "RAY_ADDRESS"}


def _settings_env_names() -> set[str]:
    names = set()
    for field_name, field in Settings.model_fields.items():
        names.add(f"AUTOPRUNE_{field_name.upper()}")
        alias = field.validation_alias
        for choice in getattr(alias, "choices", ()):
            if isinstance(choice, str):
                names.add(choice.upper())
    return names


def _parse(cli: click.Group, argv: list[str]) -> click.Context:
    """Parses ``argv`` with the real click command: unknown commands or options raise."""
    name, *args = argv
    command = cli.commands[name]  # KeyError: the command does not exist
    return command.make_context(name, list(args), resilient_parsing=False)


def test_expected_services_present() -> None:
    assert {"postgres", "ray-head", "ray-worker", "ray-worker-gpu", "controller"} <= set(SERVICES)
    assert set(APP_SERVICES) == {"ray-head", "ray-worker", "ray-worker-gpu", "controller"}


@pytest.mark.parametrize("service", APP_SERVICES)
def test_command_exists_and_parses(service: str) -> None:
    program, *argv = SERVICES[service]["command"]
    if program == "autoprune":
        ctx = _parse(autoprune_cli, argv)
        assert ctx.params  # options were recognised by the real `autoprune serve`
    elif program == "ray":
        from ray.scripts.scripts import cli as ray_cli

        _parse(ray_cli, argv)
    else:
        pytest.fail(f"{service}: unexpected program {program!r}")


@pytest.mark.parametrize("service", APP_SERVICES)
def test_environment_is_read_by_settings(service: str) -> None:
    known = _settings_env_names() | RAY_VARS
    env = SERVICES[service].get("environment", {})
    unknown = sorted(k for k in env if k not in known)
    assert not unknown, f"{service} sets variables nobody reads: {unknown}"


def test_dockerfile_env_is_read_by_settings() -> None:
    env_names = re.findall(r"\b(AUTOPRUNE_[A-Z_]+)=", (ROOT / "Dockerfile").read_text())
    assert env_names
    assert set(env_names) <= _settings_env_names()


def test_controller_port_and_database_wiring() -> None:
    ctl = SERVICES["controller"]
    ctx = _parse(autoprune_cli, ctl["command"][1:])
    host, published, container = ctl["ports"][0].rsplit(":", 2)
    assert host == "127.0.0.1", "the API must be published on loopback only"
    assert int(container) == ctx.params["port"]
    assert ctx.params["host"] == "0.0.0.0"  # inside the container, reachable through the mapping

    db = urlparse(ctl["environment"]["AUTOPRUNE_DATABASE_URL"].replace("${POSTGRES_PASSWORD:-autoprune}", "pw"))
    pg = SERVICES["postgres"]["environment"]
    assert db.hostname == "postgres" and db.port == 5432
    assert db.username == pg["POSTGRES_USER"] and db.path.lstrip("/") == pg["POSTGRES_DB"]
    assert ctl["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in SERVICES["postgres"]


def test_ray_nodes_join_the_head() -> None:
    from ray.scripts.scripts import cli as ray_cli

    head = _parse(ray_cli, SERVICES["ray-head"]["command"][1:])
    assert head.params["head"] and head.params["block"]
    head_address = f"ray-head:{head.params['port']}"
    assert SERVICES["controller"]["environment"]["RAY_ADDRESS"] == head_address
    for worker in ("ray-worker", "ray-worker-gpu"):
        ctx = _parse(ray_cli, SERVICES[worker]["command"][1:])
        assert ctx.params["address"] == head_address and ctx.params["block"]
    gpu = _parse(ray_cli, SERVICES["ray-worker-gpu"]["command"][1:])
    assert gpu.params["num_gpus"] == 1  # jobs with target.device=cuda need a GPU resource


def _mount(volume: str) -> tuple[str, str]:
    """(source, target) of a short-syntax volume; the source may hold ``${VAR:-default}``."""
    parts = volume.split(":")
    if parts[-1] in ("ro", "rw"):
        parts = parts[:-1]
    return ":".join(parts[:-1]), parts[-1]


def test_volumes_are_declared_and_paths_consistent() -> None:
    declared = set(COMPOSE["volumes"])
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            source, _ = _mount(volume)
            if not source.startswith((".", "/", "$")):
                assert source in declared, f"{name} mounts undeclared volume {source!r}"
    for name in APP_SERVICES:
        env = {**SERVICES[name].get("environment", {})}
        mounts = [_mount(v)[1] for v in SERVICES[name]["volumes"]]
        for key in ("AUTOPRUNE_CACHE_DIR", "AUTOPRUNE_ARTIFACTS_DIR", "AUTOPRUNE_UPLOADS_DIR", "AUTOPRUNE_DATA_ROOTS"):
            path = env[key]
            assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), (
                f"{name}: {key}={path} is not on a mounted volume"
            )


def test_depends_on_names_real_services() -> None:
    for name, svc in SERVICES.items():
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            assert dep in SERVICES, f"{name} depends on unknown service {dep!r}"
