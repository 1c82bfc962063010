"""The layout by role (docs/development.md): which of shopvision's packages may import which, read from the source.

A package may import the SDK (shopvision's own top-level modules) and the packages named for it below, nothing
else; code that Triton's Python stub loads may import only what the container installs for it."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "shopvision"
SDK = "(sdk)"
ALLOWED: dict[str, set[str]] = {
    SDK: set(),
    "backend": {SDK},
    "catalog": {SDK},
    "repository": {SDK},
    "server": {SDK},
    "modelbuild": {SDK, "repository"},
    "categories": {SDK, "catalog", "repository"},
    "api": {SDK, "catalog"},
    "cli": {SDK, "api", "catalog", "categories", "modelbuild", "repository", "server"},
}
# What the container installs for the Python-backend models (deploy/Dockerfile) besides the standard library.
TRITON_SIDE_PACKAGES = {"numpy", "PIL", "onnxruntime", "openvino", "triton_python_backend_utils"}
TRITON_SIDE_SHOPVISION = {"shopvision.contract", "shopvision.errors", "shopvision.backend"}


def imported_modules(source: Path) -> set[str]:
    """Every absolute module a file imports, at any depth (an import inside a function counts too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def part_of(module: str) -> str | None:
    """The layout part a shopvision module belongs to: a package's name, the SDK, or None for another project."""
    parts = module.split(".")
    if parts[0] != "shopvision":
        return None
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return SDK if len(parts) == 1 or (PACKAGE / f"{parts[1]}.py").exists() else None


def test_the_layout_names_every_package() -> None:
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages == set(ALLOWED) - {SDK}


@pytest.mark.parametrize("source", sorted(PACKAGE.rglob("*.py")), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_a_module_imports_only_what_its_part_may(source: Path) -> None:
    own = part_of(".".join(("shopvision", *source.relative_to(PACKAGE).with_suffix("").parts)))
    assert own is not None
    wrong = sorted(module for module in imported_modules(source)
                   if (other := part_of(module)) is not None and other != own and other not in ALLOWED[own])
    assert not wrong, f"{own} may import {sorted(ALLOWED[own])}, not {wrong}"


@pytest.mark.parametrize("source", [*sorted((PACKAGE / "backend").glob("*.py")),
                                    *sorted((ROOT / "model_repository").glob("*/1/model.py"))],
                         ids=lambda path: path.name if path.parent.name == "backend" else path.parent.parent.name)
def test_what_triton_loads_imports_only_what_the_container_installs(source: Path) -> None:
    wrong = sorted(
        module for module in imported_modules(source)
        if not (module.split(".")[0] in sys.stdlib_module_names or module.split(".")[0] in TRITON_SIDE_PACKAGES
                or module == "__future__.annotations"
                or any(module == allowed or module.startswith(f"{allowed}.") for allowed in TRITON_SIDE_SHOPVISION)))
    assert not wrong, f"the Python backend's stub cannot import {wrong}"
