#!/usr/bin/env python3
"""`make audit`: pip-audit over the resolved environment (.venv), saying plainly what it could not check.

pip-audit reports "No known vulnerabilities found" even when it reached no advisory database (every package
skipped as "not found on PyPI", as behind a package mirror without PyPI's JSON API, or offline). This wrapper
reads its JSON instead: known vulnerabilities fail (exit 1); packages it could not audit are listed and counted,
and when it could audit none, it says the advisory database was out of reach and exits 0, so an offline build
still passes while its log says that nothing was checked.
"""

from __future__ import annotations

import json
import subprocess
import sys


def verdict(report: dict) -> tuple[int, str]:
    """The exit status and what to print, from pip-audit's JSON report."""
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    skipped = [d for d in dependencies if "skip_reason" in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    if dependencies and not audited:
        return 0, (f"pip-audit could not reach an advisory database: none of {len(dependencies)} packages was "
                   f"audited (first reason: {skipped[0]['skip_reason']}). Run `make audit` where PyPI's JSON API "
                   "or OSV is reachable.")
    lines = [f"{d['name']} {d['version']}: {v['id']} (fixed in {', '.join(v.get('fix_versions') or ['no release'])})"
             for d in vulnerable for v in d["vulns"]]
    lines.append(f"{len(audited)} packages audited, {len(vulnerable)} with known vulnerabilities"
                 + (f"; {len(skipped)} not audited: {', '.join(d['name'] for d in skipped)}" if skipped else ""))
    return (1 if vulnerable else 0), "\n".join(lines)


def main() -> int:
    completed = subprocess.run([sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off"],
                               capture_output=True, text=True, check=False)
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"pip-audit could not reach an advisory database, nothing was audited: {last}")
        return 0
    status, text = verdict(report)
    print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
