"""The objects the canary commands act on, for the tests."""

from __future__ import annotations

STABLE_TAG = "streaming_churn:v1stable"


def _deployment(name: str, track: str, replicas: int, ready: int) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "churn-serve"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "churn-serve", "track": track}},
            "template": {
                "metadata": {"labels": {"app": "churn-serve", "track": track}},
                "spec": {"containers": [{
                    "name": "churn-serve", "image": "registry.example/churn-serve:1.0",
                    "env": [{"name": "CHURN_MODEL_TAG", "valueFrom": {"configMapKeyRef": {
                        "name": "churn-model", "key": "CHURN_MODEL_TAG"}}},
                        {"name": "CHURN_SHADOW_MODEL_TAG", "valueFrom": {"configMapKeyRef": {
                            "name": "churn-model", "key": "CHURN_SHADOW_MODEL_TAG",
                            "optional": True}}},
                        {"name": "CHURN_HOME", "value": "/var/lib/churn"}]}]},
            },
        },
        "status": {"replicas": ready, "readyReplicas": ready},
    }


def initial_objects() -> list[dict]:
    """Stable (3 ready pods, model from the churn-model ConfigMap), an idle canary Deployment
    with the same pod template, and the ConfigMap."""
    return [
        _deployment("churn-serve", "stable", 3, 3),
        _deployment("churn-serve-canary", "canary", 0, 0),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "churn-model"},
         "data": {"CHURN_MODEL_TAG": STABLE_TAG, "CHURN_SHADOW_MODEL_TAG": ""}},
    ]
