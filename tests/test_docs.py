"""The README is a front page that links every document, and no relative link points nowhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(document: Path) -> list[str]:
    return [link for link in LINK.findall(document.read_text()) if not re.match(r"[a-z]+://|#|mailto:", link)]


def test_the_readme_links_every_document_and_fits_two_screens() -> None:
    linked = {(ROOT / link.split("#")[0]).resolve() for link in relative_links(ROOT / "README.md")}
    assert set(DOCUMENTS[1:]) <= linked, sorted(str(path) for path in set(DOCUMENTS[1:]) - linked)
    assert len((ROOT / "README.md").read_text().splitlines()) <= 110


def test_every_relative_link_resolves() -> None:
    broken = [f"{document.relative_to(ROOT)}: {link}" for document in DOCUMENTS for link in relative_links(document)
              if not (document.parent / link.split("#")[0]).exists()]
    assert broken == []
