"""Strict schema validation of every rendered object, in every overlay and every documented
overlay + component combination (`churn k8s render`): built-in kinds against the upstream
Kubernetes schemas (kubernetes-validate --strict), custom resources against strict JSON schemas
(tests/k8s/schemas). An unknown field fails; so does a kind with no schema at all."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

pytestmark = pytest.mark.integration  # renders with the kubectl binary

KUBERNETES_VERSION = "1.37.0"  # newest schemas kubernetes-validate 1.37 ships
SCHEMAS = Path(__file__).parent / "schemas"
CUSTOM_RESOURCE_GROUPS = {"monitoring.coreos.com", "argoproj.io", "kubernetes.dask.org"}


@cache
def custom_schema(api_version: str, kind: str) -> dict:
    group, _, version = api_version.partition("/")
    path = SCHEMAS / group / f"{kind.lower()}_{version}.json"
    if not path.is_file():
        pytest.fail(f"no schema for custom resource {kind} ({api_version}): add {path}")
    return json.loads(path.read_text())


def validate(obj: dict) -> None:
    """Raise with the object, field and rule when ``obj`` breaks its schema."""
    group = obj["apiVersion"].partition("/")[0] if "/" in obj["apiVersion"] else ""
    if group in CUSTOM_RESOURCE_GROUPS:
        jsonschema.Draft7Validator(custom_schema(obj["apiVersion"], obj["kind"])).validate(obj)
        return
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_every_object_of_every_rendering_is_valid_and_has_a_schema(renderings):
    problems = []
    # Most objects are the same in several renderings: each distinct one is validated once.
    distinct: dict[str, tuple[dict, list[str]]] = {}
    for overlay, manifests in renderings.items():
        for obj in manifests.objects:
            key = json.dumps(obj, sort_keys=True)
            distinct.setdefault(key, (obj, []))[1].append(overlay)
    for obj, overlays in distinct.values():
        name = f"{', '.join(overlays)}: {obj['kind']} {obj['metadata'].get('name')}"
        try:
            validate(obj)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{name}: kind unknown to Kubernetes {KUBERNETES_VERSION} "
                            "and not a custom resource with a schema here")
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            path = "/".join(str(p) for p in exc.absolute_path)
            problems.append(f"{name}: {path}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_a_misspelt_field_fails_in_a_built_in_kind_and_in_a_custom_resource(rendered):
    """The validation is strict, so a typo cannot pass as an ignored unknown field."""
    prod = rendered["prod"]
    deployment = copy.deepcopy(prod.get("Deployment", "churn-serve"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        validate(deployment)
    monitor = copy.deepcopy(prod.get("ServiceMonitor", "churn-serve"))
    monitor["spec"]["endpoints"][0]["honourLabels"] = True
    with pytest.raises(jsonschema.ValidationError, match="honourLabels"):
        validate(monitor)
    unknown = {"apiVersion": "monitoring.coreos.com/v1", "kind": "AlertmanagerConfig",
               "metadata": {"name": "x"}}
    with pytest.raises(pytest.fail.Exception, match="no schema for custom resource"):
        validate(unknown)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}})
