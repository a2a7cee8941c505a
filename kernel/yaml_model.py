"""Every YAML file of the project (contract, training, service and monitoring configs) is read
here: a file becomes a pydantic model, or one error that names the file, the key and the rule."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


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
