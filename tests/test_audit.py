"""`make audit`'s reading of pip-audit: vulnerabilities fail, and an unreachable advisory database is said."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "audit.py"


def audit():
    spec = importlib.util.spec_from_file_location("audit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_known_vulnerabilities_fail_and_unaudited_packages_are_named() -> None:
    status, text = audit().verdict({"dependencies": [
        {"name": "starlette", "version": "0.40.0", "vulns": [{"id": "GHSA-x", "fix_versions": ["0.47.2"]}]},
        {"name": "numpy", "version": "1.26.4", "vulns": []},
        {"name": "private", "skip_reason": "Dependency not found on PyPI"}]})
    assert status == 1
    assert "starlette 0.40.0: GHSA-x (fixed in 0.47.2)" in text and "2 packages audited, 1 with known" in text
    assert "1 not audited: private" in text


def test_an_unreachable_advisory_database_is_said_not_reported_as_clean() -> None:
    status, text = audit().verdict({"dependencies": [{"name": "numpy", "skip_reason": "not found on PyPI"},
                                                     {"name": "pillow", "skip_reason": "not found on PyPI"}]})
    assert status == 0 and "could not reach an advisory database: none of 2 packages was audited" in text
    assert audit().verdict({"dependencies": [{"name": "numpy", "version": "1.26.4", "vulns": []}]}) == (
        0, "1 packages audited, 0 with known vulnerabilities")
