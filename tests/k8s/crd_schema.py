"""A CustomResourceDefinition's OpenAPI schema as a strict JSON Schema: every object that lists
its properties gets ``additionalProperties: false`` (the API server would silently prune an
unknown field; here it is an error), and the top level names ``apiVersion``, ``kind`` and
``metadata``. For a CRD a package ships; provenance of each converted schema: the README
beside it (e.g. tests/k8s/schemas/kubernetes.dask.org/README.md).

    python -m tests.k8s.crd_schema CRD.yaml > tests/k8s/schemas/GROUP/KIND_VERSION.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def strict(schema: object) -> object:
    """``schema`` with ``additionalProperties: false`` on every object with properties."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_schema(crd: dict, version: str) -> dict:
    """The strict JSON Schema of ``version`` of the CRD."""
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = strict(served["schema"]["openAPIV3Schema"])
    schema["properties"] = {
        "apiVersion": {"type": "string", "enum": [f"{group}/{version}"]},
        "kind": {"type": "string", "enum": [kind]},
        "metadata": {"type": "object"},
        **schema["properties"],
    }
    schema["required"] = sorted({"apiVersion", "kind", "metadata", *schema.get("required", [])})
    return {"$schema": "http://json-schema.org/draft-07/schema#", **schema}


if __name__ == "__main__":
    source = yaml.safe_load(Path(sys.argv[1]).read_text())
    json.dump(crd_schema(source, source["spec"]["versions"][0]["name"]), sys.stdout, indent=1,
              sort_keys=True)
    sys.stdout.write("\n")
