"""Every YAML file of the project (contract, training, service and monitoring configs) is read
here: a file becomes a pydantic model, or one error that names the file, the key and the rule."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from kernel.config_files import ConfigFile, find_config

M = TypeVar("M", bound=BaseModel)


class JobConfig(BaseModel):
    """The settings of one job (service, training, monitoring, canary, drill): one YAML file,
    every key with a default that works. Subclasses name their file and error type."""

    CONFIG_NAME: ClassVar[str]  # e.g. "monitoring.yaml" under configs/
    CONFIG_KIND: ClassVar[str]  # e.g. "monitoring config", in messages
    CONFIG_ERROR: ClassVar[type[Exception]] = ValueError
    CONFIG_ENV: ClassVar[str | None] = None  # a variable naming the file (the service's)

    @classmethod
    def from_yaml(cls, path: Path | None) -> Self:
        """Read ``path``; None gives the defaults. Raises CONFIG_ERROR naming the bad key."""
        if path is None:
            return cls()
        return load_yaml_model(cls, path, cls.CONFIG_KIND, cls.CONFIG_ERROR)

    @classmethod
    def find(cls, explicit: Path | None = None) -> ConfigFile:
        """Which file: ``explicit`` (``--config``), else the project's one rule
        (``kernel.config_files``)."""
        return find_config(cls.CONFIG_NAME, explicit, cls.CONFIG_ENV)

    @classmethod
    def locate(cls, explicit: Path | None = None) -> Self:
        """The settings from ``find(explicit)``, after logging which file that is."""
        return cls.from_yaml(cls.find(explicit).announce().path)


def load_yaml_model(
    model: type[M], path: Path, what: str, error: type[Exception] = ValueError
) -> M:
    """Parse ``path`` into ``model``; an empty file is an empty mapping (all defaults)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise error(f"{what} not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from exc
    return validate_mapping(model, {} if raw is None else raw, f"{what} {path}", error)


def validate_mapping(
    model: type[M], raw: object, source: str, error: type[Exception] = ValueError
) -> M:
    """Validate an already parsed mapping; every broken rule is listed, by dotted key."""
    if not isinstance(raw, dict):
        raise error(f"{source}: expected a mapping at the top level")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise error(f"{source} is invalid: {details}") from exc
