"""Every published report is what its results say: rendered again from its results.json, it is the committed text.

A report edited by hand, or results republished without their report (or the other way round), fails here."""

from __future__ import annotations

import pytest

from benchmarks import PUBLISHED, REPORTS, render_published

PUBLISHED_REPORTS = sorted(path.name for path in PUBLISHED.iterdir() if (path / "results.json").is_file())


def test_every_published_report_has_its_renderer() -> None:
    assert sorted(REPORTS) == PUBLISHED_REPORTS, "register a new report's folder in benchmarks.REPORTS"


@pytest.mark.parametrize("name", PUBLISHED_REPORTS)
def test_the_report_is_rendered_from_its_results(name: str) -> None:
    assert render_published(name) == (PUBLISHED / name / "report.md").read_text()
