"""The served model repository, assembled from the template in git plus built weights and runtime state.

``model_repository/`` in git is a template that no command writes. ``shopvision model build``
assembles the repository tritonserver serves in a build directory (``build/model_repository`` or
``$SHOPVISION_MODEL_REPOSITORY``): the template's configs, Python models and labels, each resnet50
version's ``model.onnx`` and ``provenance.json``, and ``promotions.json``. Every config edit
(provenance, version pins) goes through Triton's model-config protobuf on that copy.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shopvision.contract import (
    ENSEMBLE_MODEL,
    MODEL_FILE,
    PROVENANCE_FILE,
    PROVENANCE_PARAMETER_PREFIX,
    RESNET_MODEL,
)
from shopvision.serving.configs import ModelConfig, atomic_write, edit_config, read_config

PYTHON_RUNNER = "model.py"
HISTORY_FILE = "promotions.json"
REPOSITORY_ENV = "SHOPVISION_MODEL_REPOSITORY"
DEFAULT_TEMPLATE = Path("model_repository")
DEFAULT_BUILD_DIR = Path("build") / "model_repository"
_BUILT_FILES = frozenset({MODEL_FILE, PROVENANCE_FILE, HISTORY_FILE})
"""What a build or a promotion writes; the template never has them, and assembling never overwrites them."""


def default_repository() -> Path:
    """The built repository commands use unless told otherwise."""
    return Path(os.environ.get(REPOSITORY_ENV) or DEFAULT_BUILD_DIR)


@dataclass(frozen=True)
class Provenance:
    source: str
    """Zoo model name, local file path, or ``synthetic``."""
    source_sha256: str
    """sha256 of the weights as obtained, before surgery (for synthetic: of the generated graph)."""
    model_sha256: str
    """sha256 of the ``model.onnx`` the server loads."""
    synthetic: bool
    built_at: str
    seed: int | None = None

    def as_parameters(self) -> dict[str, str]:
        return {f"{PROVENANCE_PARAMETER_PREFIX}{key}": _text(value) for key, value in asdict(self).items()}


class ModelRepository:
    """A built repository: its resnet50 versions, which one serves, and the history of promotions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.model_dir = root / RESNET_MODEL
        self.ensemble_config = root / ENSEMBLE_MODEL / "config.pbtxt"

    def resnet_configs(self) -> list[Path]:
        return [self.model_dir / "config.pbtxt", *sorted((self.model_dir / "configs").glob("*.pbtxt"))]

    def built_versions(self) -> list[int]:
        return sorted(int(path.parent.name) for path in self.model_dir.glob(f"[0-9]*/{MODEL_FILE}"))

    def pinned_version(self) -> int | None:
        """The resnet50 version the ensemble is pinned to, or None while it follows the latest one."""
        pinned = _resnet_step(read_config(self.ensemble_config)).model_version
        return pinned if pinned > 0 else None

    def pin_ensemble(self, version: int) -> None:
        def pin(config: ModelConfig) -> None:
            _resnet_step(config).model_version = version

        edit_config(self.ensemble_config, pin)

    def serves_latest(self) -> bool:
        """Whether resnet50 serves its newest version (the template's policy) rather than pinned ones."""
        policy = read_config(self.model_dir / "config.pbtxt").version_policy
        return policy.WhichOneof("policy_choice") in (None, "latest")

    def load_versions(self, versions: list[int]) -> None:
        def pin(config: ModelConfig) -> None:
            config.version_policy.specific.versions[:] = sorted(set(versions))

        for config in self.resnet_configs():
            edit_config(config, pin)

    def stamp_provenance(self, provenance: Provenance) -> None:
        """Expose the serving version's provenance as ``parameters`` in every resnet50 config."""
        def stamp(config: ModelConfig) -> None:
            for key in [key for key in config.parameters if key.startswith(PROVENANCE_PARAMETER_PREFIX)]:
                del config.parameters[key]
            for key, value in provenance.as_parameters().items():
                config.parameters[key].string_value = value

        for config in self.resnet_configs():
            edit_config(config, stamp)

    def history(self) -> list[dict[str, Any]]:
        path = self.model_dir / HISTORY_FILE
        return json.loads(path.read_text()) if path.exists() else []

    def record(self, entry: dict[str, Any]) -> None:
        entries = [*self.history(), {**entry, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}]
        atomic_write(self.model_dir / HISTORY_FILE, (json.dumps(entries, indent=2) + "\n").encode())

    def restore_serving_state(self) -> None:
        """Make the configs say what serves: the last promoted version if any, else the newest build."""
        promoted = [entry["version"] for entry in self.history() if entry["promoted"]]
        built = self.built_versions()
        if promoted and promoted[-1] in built:
            serving = promoted[-1]
            self.load_versions([serving])
            self.pin_ensemble(serving)
        elif built and self.serves_latest():
            serving = built[-1]
        else:
            return
        provenance = read_provenance(self.model_dir / str(serving))
        if provenance is not None:
            self.stamp_provenance(provenance)


def assemble(template: Path, output: Path) -> ModelRepository:
    """Copy the template's configs, Python models and labels into ``output``, keeping what was built there.

    Rerunning it after a template change updates the configs and then re-applies the promotion state,
    so a promoted version keeps serving.
    """
    if not (template / ENSEMBLE_MODEL / "config.pbtxt").is_file():
        raise FileNotFoundError(f"{template} is not the shopvision model repository template "
                                f"(no {ENSEMBLE_MODEL}/config.pbtxt); pass --template")
    for source in sorted(template.rglob("*")):
        if source.name in _BUILT_FILES or "__pycache__" in source.parts or source.is_dir():
            continue
        target = output / source.relative_to(template)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.unlink(missing_ok=True)
            target.symlink_to(os.readlink(source))
        else:
            atomic_write(target, source.read_bytes())
    repository = ModelRepository(output)
    for version in repository.built_versions():
        ensure_python_runner(repository.model_dir, repository.model_dir / str(version))
    repository.restore_serving_state()
    return repository


def _resnet_step(config: ModelConfig) -> Any:
    return next(step for step in config.ensemble_scheduling.step if step.model_name == RESNET_MODEL)


def ensure_python_runner(model_dir: Path, version_dir: Path) -> None:
    """The python_ort config runs ``<version>/model.py``; new versions get version 1's."""
    runner = version_dir / PYTHON_RUNNER
    template = model_dir / "1" / PYTHON_RUNNER
    if not runner.exists() and template.exists():
        shutil.copyfile(template, runner)


def read_provenance(version_dir: Path) -> Provenance | None:
    path = version_dir / PROVENANCE_FILE
    if not path.exists():
        return None
    return Provenance(**json.loads(path.read_text()))


def _text(value: object) -> str:
    """Config parameters are strings: booleans as true/false, a missing value as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
