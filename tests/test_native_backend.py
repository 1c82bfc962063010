"""Building Triton's native ONNX Runtime backend: pinned inputs, a clear fallback, nothing half-built.

The build itself runs before the suite (`make test` needs it), and every integration test serves
on what it built; these tests cover what a user meets when the build cannot happen.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shopvision.serving import native_backend
from shopvision.serving.server import LocalTritonServer, ServerError, ServerOptions, TritonInstallation

SHOPVISION = Path(sys.executable).parent / "shopvision"


def test_the_pins_cover_every_input() -> None:
    assert {source.name for source in native_backend.SOURCES} == {"onnxruntime_backend", "backend", "common", "core"}
    for pin in [*native_backend.SOURCES]:
        assert len(pin.commit) == 40 and len(pin.mirror_sha256) == 64
    assert len(native_backend.ONNXRUNTIME_HEADER.sha256) == len(native_backend.ONNXRUNTIME_NPM_PACKAGE.sha256) == 64


def test_a_tampered_mirror_is_refused_and_nothing_is_installed(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for source in native_backend.SOURCES:
        (mirror / source.mirror_file).write_bytes(b"not the pinned tarball")
    with pytest.raises(native_backend.BackendBuildError, match="sha256"):
        native_backend.build_native_backend(cache=tmp_path / "cache", mirror=mirror)
    assert native_backend.find_native_backend(tmp_path / "cache") is None
    assert list((tmp_path / "cache" / "onnxruntime-backend").iterdir()) == []  # the scratch folder is gone too


def test_without_a_toolchain_serve_falls_back_to_the_stand_in_with_a_clear_message(tmp_path: Path) -> None:
    environment = {**os.environ, "PATH": str(tmp_path / "empty-bin"), "SHOPVISION_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([SHOPVISION, "backend", "build"], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "needs cmake, make, g++" in result.stderr and "python_ort" in result.stderr
    required = subprocess.run([SHOPVISION, "backend", "build", "--require"], env=environment, capture_output=True,
                              text=True)
    assert required.returncode != 0 and "error: building the native ONNX Runtime backend needs" in required.stderr


def test_a_native_configuration_without_the_backend_is_refused_before_starting(tmp_path: Path) -> None:
    installation = TritonInstallation.from_wheel()
    without = TritonInstallation(installation.binary, installation.python_backend, installation.stub,
                                 installation.libraries, native_backend=None)
    assert without.default_config_name == "python_ort"
    server = LocalTritonServer(ServerOptions(tmp_path, config_name="cpu"), installation=without, work_dir=tmp_path)
    with pytest.raises(ServerError, match="shopvision backend build"):
        server.start()


def test_the_backend_directory_links_the_build_and_the_wheels_server_library(tmp_path: Path) -> None:
    installation = TritonInstallation.from_wheel()
    assert installation.native_backend is not None, "run `shopvision backend build` (make test does)"
    onnxruntime = installation.backend_directory(tmp_path) / "onnxruntime"
    names = {path.name for path in onnxruntime.iterdir()}
    assert {native_backend.BACKEND_LIBRARY, native_backend.ONNXRUNTIME_SONAME, "libtritonserver.so"} <= names
    assert (onnxruntime / "libtritonserver.so").resolve().parent == installation.libraries.resolve()
    linked = subprocess.run(["ldd", onnxruntime / native_backend.BACKEND_LIBRARY], capture_output=True, text=True,
                            env={**os.environ, **installation.environment()}).stdout
    resolved = dict(line.strip().split(" => ", 1) for line in linked.splitlines() if " => " in line)
    for library in ("libtritonserver.so", native_backend.ONNXRUNTIME_SONAME):
        assert str(onnxruntime) in resolved[library], resolved  # found next to the backend ($ORIGIN)
