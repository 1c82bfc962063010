"""Triton's native ONNX Runtime backend for the tritonserver inside the nvidia-pytriton wheel.

The official tritonserver container ships this backend; the wheel's tritonserver (2.51) does
not. Triton's own ``onnxruntime_backend`` at the server's branch (r24.10) builds against ONNX
Runtime 1.19.2 (the version r24.10 ships) in about a minute, once, into a cache outside the
repository, so that ``shopvision serve`` and the tests run what users deploy: ``backend:
"onnxruntime"`` with the shipped configs.

Every input is pinned. The four Triton repositories come from GitHub with git at fixed commits
(git checks each object's hash), or, with a mirror folder, as ``git archive`` tarballs checked by
sha256. The ONNX Runtime C API header and library are checked by sha256 wherever they come from.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

TRITON_BRANCH = "r24.10"
"""The branch of the Triton repositories that matches tritonserver 2.51 (nvidia-pytriton 0.7.0)."""
ONNXRUNTIME_VERSION = "1.19.2"
BACKEND_LIBRARY = "libtriton_onnxruntime.so"
ONNXRUNTIME_LIBRARY = f"libonnxruntime.so.{ONNXRUNTIME_VERSION}"
ONNXRUNTIME_SONAME = "libonnxruntime.so.1"
BUILD_INFO = "build-info.json"
MIRROR_ENV = "SHOPVISION_BACKEND_MIRROR"
"""A folder holding the pinned inputs (see :data:`SOURCES`), for machines without GitHub."""


class BackendBuildError(RuntimeError):
    """The native backend could not be built; the message says what to install or fix."""


@dataclass(frozen=True)
class TritonSource:
    name: str
    """Repository under github.com/triton-inference-server, and its CMake FetchContent key."""
    commit: str
    mirror_sha256: str
    """Of ``git archive --prefix=<name>/ <commit> | gzip``, the file ``<name>-r24.10.tar.gz`` in a mirror."""

    @property
    def mirror_file(self) -> str:
        return f"{self.name}-{TRITON_BRANCH}.tar.gz"

    @property
    def url(self) -> str:
        return f"https://github.com/triton-inference-server/{self.name}.git"


SOURCES = (
    TritonSource("onnxruntime_backend", "17e5cb23a6fbeb37282eb7079dd0b580cd79530d",
                 "a27ce4b34a31c8dc86a306195030ce40a505e858c13a08ded10959d937be64a2"),
    TritonSource("backend", "ac03a5d97403dec841ad46d0439e93db12c9268f",
                 "151da6fa28fbece76c7357a72e089768d4322e2382cce8b6b578424a82b4987a"),
    TritonSource("common", "578491fc3944f77d16a6a38e3d7691c485c47ba0",
                 "f8d42fac07949257d938261d3330ced625b33829ac02bac37fa837a4c6f6c57c"),
    TritonSource("core", "bfec7c61dc0939433f64f14e89b1973073eac8ba",
                 "a77d172b45f5582fa6a089c894d003cdcd6e81f57d941a196eb4ca93ff7d8a63"),
)


@dataclass(frozen=True)
class PinnedFile:
    name: str
    sha256: str


ONNXRUNTIME_HEADER = PinnedFile("onnxruntime_c_api.h",
                                "bfdb387ef6f576ccbeb18c63e19fe5854aa0c278a3838027e9f764419e61475e")
ONNXRUNTIME_HEADER_URL = ("https://raw.githubusercontent.com/yalue/onnxruntime_go/"
                          "9abc5adfda6e17b667e83331c32254fa55808113/onnxruntime_c_api.h")
"""ONNX Runtime 1.19's C API header (API version 19), verbatim; the backend needs nothing else of ORT's sources."""
ONNXRUNTIME_NPM_PACKAGE = PinnedFile(f"onnxruntime-node-{ONNXRUNTIME_VERSION}.tgz",
                                     "dbd3f1c72e91f783eea3e87b546fb064f75afffbb11a35264656f58eba4c784d")
"""ONNX Runtime's own npm package carries its CPU shared library for Linux x64 and arm64."""
_NPM_ARCHITECTURES = {"x86_64": "x64", "aarch64": "arm64"}


def cache_directory() -> Path:
    return Path(os.environ.get("SHOPVISION_CACHE_DIR") or Path.home() / ".cache" / "shopvision")


def install_directory(cache: Path | None = None) -> Path:
    return (cache or cache_directory()) / "onnxruntime-backend" / f"{TRITON_BRANCH}-ort{ONNXRUNTIME_VERSION}"


def find_native_backend(cache: Path | None = None) -> Path | None:
    """The folder holding a finished build (backend and ONNX Runtime libraries), or None."""
    directory = install_directory(cache)
    return directory if (directory / BUILD_INFO).is_file() else None


def missing_tools(*, need_git: bool, need_npm: bool) -> list[str]:
    """What a build needs and this machine lacks, as Debian package names."""
    tools = [("cmake", "cmake"), ("make", "make"), ("c++", "g++")] + ([("git", "git")] if need_git else [])
    missing = [package for tool, package in tools if shutil.which(tool) is None]
    if not any(Path(prefix, "include", "rapidjson", "rapidjson.h").exists() for prefix in ("/usr", "/usr/local")):
        missing.append("rapidjson-dev")
    if need_npm and shutil.which("npm") is None:
        missing.append("npm")
    return missing


def build_native_backend(*, cache: Path | None = None, mirror: Path | None = None, jobs: int | None = None,
                         log: Path | None = None) -> Path:
    """Build the backend into the cache (once) and return its folder. Raises BackendBuildError."""
    installed = find_native_backend(cache)
    if installed is not None:
        return installed
    if platform.system() != "Linux" or platform.machine() not in _NPM_ARCHITECTURES:
        raise BackendBuildError(f"the native backend builds on Linux x86_64 or aarch64, not "
                                f"{platform.system()} {platform.machine()}")
    need_npm = mirror is None or not (mirror / ONNXRUNTIME_NPM_PACKAGE.name).exists()
    missing = missing_tools(need_git=mirror is None, need_npm=need_npm)
    if missing:
        raise BackendBuildError(f"building the native ONNX Runtime backend needs {', '.join(missing)} "
                                "(Debian: scripts/install-system-deps.sh)")
    target = install_directory(cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=target.parent) as scratch:
        work = Path(scratch)
        sources = _fetch_sources(work / "src", mirror)
        onnxruntime = _fetch_onnxruntime(work / "onnxruntime", mirror)
        library = _compile(sources, onnxruntime, work / "build", jobs=jobs or os.cpu_count() or 1,
                           log=log or work / "build.log")
        staging = work / "install"
        staging.mkdir()
        shutil.copy2(library, staging / BACKEND_LIBRARY)
        shutil.copy2(onnxruntime / "lib" / ONNXRUNTIME_LIBRARY, staging / ONNXRUNTIME_LIBRARY)
        (staging / ONNXRUNTIME_SONAME).symlink_to(ONNXRUNTIME_LIBRARY)
        (staging / BUILD_INFO).write_text(json.dumps({
            "triton_branch": TRITON_BRANCH,
            "commits": {source.name: source.commit for source in SOURCES},
            "onnxruntime": ONNXRUNTIME_VERSION,
            "inputs_from": str(mirror) if mirror else "github + npm",
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "compiler": subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        }, indent=2) + "\n")
        # A finished build appears whole or not at all: a concurrent or interrupted build never
        # leaves a half-filled folder that find_native_backend would take.
        try:
            staging.rename(target)
        except OSError:
            if find_native_backend(cache) is None:
                raise
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, expected: str) -> Path:
    actual = _sha256(path)
    if actual != expected:
        raise BackendBuildError(f"{path} has sha256 {actual}, expected {expected}: refusing to build with it")
    return path


def _run(command: list[str], *, log: Path, cwd: Path | None = None) -> None:
    with log.open("ab") as stream:
        stream.write(f"$ {' '.join(command)}\n".encode())
        stream.flush()
        result = subprocess.run(command, cwd=cwd, stdout=stream, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BackendBuildError(f"`{' '.join(command[:3])} ...` failed (exit {result.returncode}); "
                                f"the end of its output:\n{tail}")


def _fetch_sources(root: Path, mirror: Path | None) -> dict[str, Path]:
    root.mkdir(parents=True)
    trees = {}
    for source in SOURCES:
        if mirror is not None:
            with tarfile.open(_verified(mirror / source.mirror_file, source.mirror_sha256)) as archive:
                archive.extractall(root, filter="data")
        else:
            tree = root / source.name
            log = root / "git.log"
            _run(["git", "init", "--quiet", str(tree)], log=log)
            try:
                _run(["git", "-C", str(tree), "fetch", "--quiet", "--depth", "1", source.url, source.commit], log=log)
            except BackendBuildError as error:
                raise BackendBuildError(f"{error}\n(offline? set {MIRROR_ENV} to a folder holding the pinned "
                                        "inputs)") from error
            _run(["git", "-C", str(tree), "checkout", "--quiet", "--detach", source.commit], log=log)
        trees[source.name] = root / source.name
    return trees


def _fetch_onnxruntime(root: Path, mirror: Path | None) -> Path:
    """``root/include/onnxruntime_c_api.h`` and ``root/lib/libonnxruntime.so*``, both verified."""
    (root / "include").mkdir(parents=True)
    (root / "lib").mkdir()
    header = root / "include" / ONNXRUNTIME_HEADER.name
    if mirror is not None and (mirror / ONNXRUNTIME_HEADER.name).exists():
        shutil.copy2(mirror / ONNXRUNTIME_HEADER.name, header)
    else:
        try:
            with urllib.request.urlopen(ONNXRUNTIME_HEADER_URL, timeout=60) as response, header.open("wb") as stream:
                shutil.copyfileobj(response, stream)
        except OSError as error:
            raise BackendBuildError(f"could not download {ONNXRUNTIME_HEADER_URL}: {error} (offline? set "
                                    f"{MIRROR_ENV} to a folder holding the pinned inputs)") from error
    _verified(header, ONNXRUNTIME_HEADER.sha256)

    package = root / ONNXRUNTIME_NPM_PACKAGE.name
    if mirror is not None and (mirror / package.name).exists():
        shutil.copy2(mirror / package.name, package)
    else:
        _run(["npm", "pack", "--silent", f"onnxruntime-node@{ONNXRUNTIME_VERSION}", "--pack-destination", str(root)],
             log=root / "npm.log")
    member = f"package/bin/napi-v3/linux/{_NPM_ARCHITECTURES[platform.machine()]}/{ONNXRUNTIME_LIBRARY}"
    with tarfile.open(_verified(package, ONNXRUNTIME_NPM_PACKAGE.sha256)) as archive:
        extracted = archive.extractfile(member)
        if extracted is None:
            raise BackendBuildError(f"{package} has no {member}")
        with extracted, (root / "lib" / ONNXRUNTIME_LIBRARY).open("wb") as stream:
            shutil.copyfileobj(extracted, stream)
    package.unlink()
    # CMake's find_library(onnxruntime) looks for the unversioned name.
    (root / "lib" / ONNXRUNTIME_SONAME).symlink_to(ONNXRUNTIME_LIBRARY)
    (root / "lib" / "libonnxruntime.so").symlink_to(ONNXRUNTIME_SONAME)
    return root


def _compile(sources: dict[str, Path], onnxruntime: Path, build: Path, *, jobs: int, log: Path) -> Path:
    build.mkdir()
    configure = [
        "cmake", "-S", str(sources["onnxruntime_backend"]), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        "-DTRITON_ENABLE_GPU=OFF", "-DTRITON_CORE_HEADERS_ONLY=ON",
        "-DTRITON_COMMON_ENABLE_PROTOBUF=OFF", "-DTRITON_COMMON_ENABLE_GRPC=OFF",
        f"-DTRITON_ONNXRUNTIME_INCLUDE_PATHS={onnxruntime / 'include'}",
        f"-DTRITON_ONNXRUNTIME_LIB_PATHS={onnxruntime / 'lib'}",
        # The pinned trees above, never the moving branches the CMake files name.
        *[f"-DFETCHCONTENT_SOURCE_DIR_REPO-{name.upper()}={sources[name]}" for name in ("common", "core", "backend")],
    ]
    # `common` always declares its unit tests, which fetch googletest; Debian's copy saves the download.
    googletest = Path("/usr/src/googletest")
    if googletest.is_dir():
        configure += [f"-DFETCHCONTENT_SOURCE_DIR_GOOGLETEST={googletest}", "-DINSTALL_GTEST=OFF"]
    _run(configure, log=log)
    _run(["cmake", "--build", str(build), "--target", "triton-onnxruntime-backend", f"-j{jobs}"], log=log)
    return build / BACKEND_LIBRARY
