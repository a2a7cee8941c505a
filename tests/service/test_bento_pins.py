"""The image installs exactly the locked versions of what serving imports."""

from __future__ import annotations

import pytest
import yaml

from service.bento_pins import REPO, locked_versions, pin


def test_bentofile_pins_equal_the_lock():
    text = (REPO / "bentofile.yaml").read_text()
    assert pin(text, locked_versions(REPO / "uv.lock")) == text, \
        "bentofile.yaml is out of date: run `make lock` (python -m service.bento_pins)"
    packages = yaml.safe_load(text)["python"]["packages"]
    assert all("==" in p for p in packages)
    assert not {"mlflow", "optuna", "evidently", "imbalanced-learn"} & {
        p.split("==")[0] for p in packages}


def test_pin_rewrites_only_the_package_list_and_refuses_unknown_packages():
    text = 'include:\n  - "x.py"\npython:\n  packages:\n    - "numpy>=1"  # why\n' \
           'docker:\n  distro: debian\n'
    assert pin(text, {"numpy": "2.0.1"}) == text.replace('"numpy>=1"', '"numpy==2.0.1"')
    with pytest.raises(KeyError, match="numpy"):
        pin(text, {})
