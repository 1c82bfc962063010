"""The README is a front page that links every document, and no relative link points nowhere."""

from __future__ import annotations

import json
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


def median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def test_the_search_service_figures_are_the_reports() -> None:
    from benchmarks.search_service import ratios

    results = json.loads((ROOT / "benchmarks" / "results" / "search-service" / "results.json").read_text())
    found = {name: median(values) for name, values in ratios(results["rounds"]).items()}
    service = {point: median([r[point]["core_ms_per_request"]["service"] for r in results["rounds"]])
               for point in ("api_classify_c8", "api_search_c1")}
    text = " ".join((ROOT / "docs" / "search-service.md").read_text().split())
    for figure in (f"serves {found['throughput']:.2f}× the SDK's", f"p99 {found['p99_added_ms']:.1f} ms above",
                   f"search adds {found['search_added_p50_ms']:.1f} ms to the p50",
                   f"{service['api_classify_c8']:.1f} core-ms per classification",
                   f"{service['api_search_c1']:.1f} per search",
                   f"{results['memory']['per_100k_mb']} MB per 100,000 products"):
        assert figure in text, figure


def test_the_readme_states_how_shopvision_compares_with_the_naive_server_as_measured() -> None:
    from benchmarks import paired

    results = json.loads((ROOT / "benchmarks" / "results" / "full" / "results.json").read_text())
    medians = {target.name: target.median for target in paired.targets(results["paired"])}
    text = " ".join((ROOT / "README.md").read_text().split())
    c1, c8 = medians["served ≥ 0.95× naive server, HTTP c=1"], medians["served ≥ 1.00× naive server, HTTP c=8"]
    p99 = medians["… with p99 no worse than the naive server's, HTTP c=8 (Triton/naive p99)"]
    assert (f"{c1:.2f}× its images a second over HTTP at concurrency 1 and {c8:.2f}× at concurrency 8, "
            f"with about {round(p99)}× its p99 there") in text
