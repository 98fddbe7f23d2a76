"""The Dagster instance: the local default (embedded PostgreSQL) and the production configuration."""

from importlib import resources
from pathlib import Path

LOCAL_CONFIG = "local.yaml"
PRODUCTION_CONFIG = "production.yaml"


def instance_config(name: str = LOCAL_CONFIG) -> str:
    """The text of a packaged dagster.yaml (`local.yaml` or `production.yaml`)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def write_instance_config(home: Path, name: str = LOCAL_CONFIG) -> Path:
    """Write a packaged dagster.yaml into `home` (created if needed); returns the file."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    target.write_text(instance_config(name), encoding="utf-8")
    return target
