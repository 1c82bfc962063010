"""Every published report is what its results say: rendered again from its results.json, it is the committed text.

A report edited by hand, or results republished without their report (or the other way round), fails here."""

from __future__ import annotations

import json

import pytest

from benchmarks import INT8_INSTRUCTIONS, PUBLISHED, REPORTS, cpu_facts, machine_of, render_published

PUBLISHED_REPORTS = sorted(path.name for path in PUBLISHED.iterdir() if (path / "results.json").is_file())


UNTIED = {
    "gpu-feed": "measured on a lent H200 before results recorded their code; measuring it again needs a GPU",
}
"""Published results that do not say both the commit and the code fingerprint that measured them, and why."""


def test_every_published_report_has_its_renderer() -> None:
    assert sorted(REPORTS) == PUBLISHED_REPORTS, "register a new report's folder in benchmarks.REPORTS"


@pytest.mark.parametrize("name", PUBLISHED_REPORTS)
def test_the_report_is_rendered_from_its_results(name: str) -> None:
    assert render_published(name) == (PUBLISHED / name / "report.md").read_text()


def test_a_report_names_the_cpu_where_its_results_recorded_it() -> None:
    """Results before the CPU was recorded render as they did; an int8 model's report says its CPU's int8
    instructions, which its accuracy can depend on."""
    facts = cpu_facts()
    assert set(facts["int8_instructions"]) <= set(INT8_INSTRUCTIONS)
    assert machine_of({"machine": "x86_64", "cores": 2}) == "x86_64 with 2 cores"
    recorded = {"machine": "x86_64", "cores": 2, "cpu": {"model": "Xeon", "int8_instructions": ["avx2", "amx_int8"]}}
    assert machine_of(recorded) == "x86_64 with 2 cores (Xeon; int8 instructions: avx2, amx_int8)"
    assert machine_of({**recorded, "cpu": {"model": "", "int8_instructions": []}}).endswith(
        "(CPU unnamed; int8 instructions: none)")
    for name in ("real-weights", "multi-photo"):
        results_cpu = json.loads((PUBLISHED / name / "results.json").read_text())["cpu"]
        assert f"int8 instructions: {', '.join(results_cpu['int8_instructions'])}" in render_published(name), name


@pytest.mark.parametrize("name", PUBLISHED_REPORTS)
def test_the_results_say_which_code_measured_them(name: str) -> None:
    """The commit and the code fingerprint (benchmarks.publish), in the results or in each of their sections
    (benchmarks.run); a report listed in UNTIED must not have them, so that the list shrinks when it is rerun."""
    results = json.loads((PUBLISHED / name / "results.json").read_text())
    stamps = list(results["sections"].values()) if "sections" in results else [results]
    tied = all(stamp.get("commit") and (stamp.get("code_fingerprint") or stamp.get("fingerprint")) for stamp in stamps)
    assert tied != (name in UNTIED), UNTIED.get(name, f"{name}: rerun it with its command to record its code")
