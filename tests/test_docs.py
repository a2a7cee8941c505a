"""The README and docs/: links that resolve, and a README a newcomer reads in five minutes."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
README_LIMIT = 12_000  # characters: the history lives in docs/benchmarks.md


def test_every_relative_link_resolves() -> None:
    broken = [f"{doc.relative_to(REPO)}: {target}" for doc in DOCS
              for target in LINK.findall(doc.read_text())
              if "://" not in target and not (doc.parent / target).exists()]
    assert not broken, broken


def test_the_readme_stays_short() -> None:
    assert len((REPO / "README.md").read_text()) <= README_LIMIT
