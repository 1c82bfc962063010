"""The served model repository, assembled from the template in git plus built weights and runtime state.

``model_repository/`` in git is a template that no command writes. ``shopvision model build``
assembles the repository tritonserver serves in a build directory (``build/model_repository`` or
``$SHOPVISION_MODEL_REPOSITORY``): the template's configs, Python models and labels, each resnet50
version's ``model.onnx`` and ``provenance.json``, and ``promotions.json``. Every config edit
(provenance, version pins) goes through Triton's model-config protobuf on that copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from shopvision._files import atomic_write
from shopvision.contract import (
    CATEGORIES_MODEL,
    CATEGORISED_EMBEDDING,
    CATEGORY_LABELS_FILE,
    CATEGORY_PROBABILITIES,
    EMBEDDING,
    ENSEMBLE_MODEL,
    MODEL_FILE,
    PROVENANCE_FILE,
    PROVENANCE_PARAMETER_PREFIX,
    RESNET_EMBEDDING,
    RESNET_MODEL,
)
from shopvision.errors import ModelBuildError
from shopvision.repository.configs import ModelConfig, edit_config, model_config_pb2, read_config
from shopvision.repository.records import (
    HISTORY_FILE,
    HeadProvenance,
    PromotionRecord,
    read_history,
    read_weights_provenance,
    record_history,
)
from shopvision.types import WeightsProvenance

PYTHON_RUNNER = "model.py"
REPOSITORY_ENV = "SHOPVISION_MODEL_REPOSITORY"
DEFAULT_TEMPLATE = Path("model_repository")
DEFAULT_BUILD_DIR = Path("build") / "model_repository"
_BUILT_FILES = frozenset({MODEL_FILE, PROVENANCE_FILE, HISTORY_FILE, CATEGORY_LABELS_FILE})
"""What a build or a promotion writes; the template never has them, and assembling never overwrites them."""


def default_repository() -> Path:
    """The built repository commands use unless told otherwise."""
    return Path(os.environ.get(REPOSITORY_ENV) or DEFAULT_BUILD_DIR)


class VersionedModel:
    """A model of the built repository with numbered versions: which are built, which its configs load, and the
    history of its promotions (``promotions.json``). What resnet50 and the categories heads share."""

    model: str

    def __init__(self, root: Path) -> None:
        self.root = root
        self.model_dir = root / self.model
        self.ensemble_config = root / ENSEMBLE_MODEL / "config.pbtxt"

    def configs(self) -> list[Path]:
        """The model's configs (the default and the named ones); none before its first version, for a head."""
        main = self.model_dir / "config.pbtxt"
        return [main, *sorted((self.model_dir / "configs").glob("*.pbtxt"))] if main.exists() else []

    def built_versions(self) -> list[int]:
        return sorted(int(path.parent.name) for path in self.model_dir.glob(f"[0-9]*/{MODEL_FILE}"))

    def load_versions(self, versions: list[int]) -> None:
        """Make every config load exactly these versions (Triton's ``specific`` version policy)."""
        pin_versions(self.configs(), versions)

    def history(self) -> list[PromotionRecord]:
        return read_history(self.model_dir)

    def record(self, entry: PromotionRecord) -> None:
        record_history(self.model_dir, entry)


class ModelRepository(VersionedModel):
    """A built repository: its resnet50 versions, which one serves, and the history of promotions."""

    model = RESNET_MODEL

    def resnet_configs(self) -> list[Path]:
        return self.configs()

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

    def stamp_provenance(self, provenance: WeightsProvenance) -> None:
        """Expose the serving version's provenance as ``parameters`` in every resnet50 config, and make every
        config's embedding as wide as that version's (the ensemble's, and the categories head's once built)."""
        def stamp(config: ModelConfig) -> None:
            for key in [key for key in config.parameters if key.startswith(PROVENANCE_PARAMETER_PREFIX)]:
                del config.parameters[key]
            for key, value in provenance.as_parameters().items():
                config.parameters[key].string_value = value

        for config in self.resnet_configs():
            edit_config(config, stamp)
        set_embedding_width([*self.resnet_configs(), self.ensemble_config, *CategoryHeads(self.root).configs()],
                            provenance.embedding_dim)

    def restore_serving_state(self) -> None:
        """Make the configs say what serves: the last promoted version if any, else the newest build."""
        promoted = [entry.version for entry in self.history() if entry.promoted]
        built = self.built_versions()
        if promoted and promoted[-1] in built:
            serving = promoted[-1]
            self.load_versions([serving])
            self.pin_ensemble(serving)
        elif built and self.serves_latest():
            serving = built[-1]
        else:
            return
        provenance = read_weights_provenance(self.model_dir / str(serving))
        if provenance is not None:
            self.stamp_provenance(provenance)


def assemble(template: Path, output: Path) -> ModelRepository:
    """Copy the template's configs, Python models and labels into ``output``, keeping what was built there.

    Rerunning it after a template change updates the configs and then re-applies the promotion state,
    so a promoted version keeps serving.
    """
    if not (template / ENSEMBLE_MODEL / "config.pbtxt").is_file():
        raise ModelBuildError(f"{template} is not the shopvision model repository template "
                                f"(no {ENSEMBLE_MODEL}/config.pbtxt); pass --template")
    heads = CategoryHeads(output)
    for source in sorted(template.rglob("*")):
        if source.name in _BUILT_FILES or "__pycache__" in source.parts or source.is_dir():
            continue
        if source.relative_to(template).parts[0] == CATEGORIES_MODEL and not heads.built_versions():
            continue  # a model with no version fails to load: the head's configs arrive with its first version
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
    heads.restore_serving_state()
    return repository


class CategoryHeads(VersionedModel):
    """The categories model of a built repository: its head versions, and which one the ensemble serves.

    The template's ensemble has no categories step. While a head serves, the built ensemble config has a
    step running it (pinned to its version) between resnet50 and the ``embedding`` output, and a
    ``category_probabilities`` output whose label file is that version's ``categories.txt``, copied next
    to the ensemble's config under a versioned name.
    """

    model = CATEGORIES_MODEL

    def categories(self, version: int) -> list[str]:
        return (self.model_dir / str(version) / CATEGORY_LABELS_FILE).read_text().splitlines()

    def provenance(self, version: int) -> HeadProvenance:
        return HeadProvenance.read(self.model_dir / str(version))

    def install(self, model: bytes, provenance: HeadProvenance, *, template: Path) -> int:
        """Write a new head version (the next number) with its labels and provenance; returns its number.

        The configs, copied from the template with the first version, take the width of the embeddings it reads.

        It does not serve until promoted (or, without any promotion recorded, until the next assembly)."""
        if not (self.model_dir / "config.pbtxt").exists():
            source = template / CATEGORIES_MODEL
            if not (source / "config.pbtxt").is_file():
                raise ModelBuildError(f"{template} has no {CATEGORIES_MODEL}/config.pbtxt; pass --template")
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                target = self.model_dir / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(target, path.read_bytes())
            set_embedding_width(self.configs(), _input_width(model))
        version = max(self.built_versions(), default=0) + 1
        version_dir = self.model_dir / str(version)
        version_dir.mkdir(parents=True)
        ensure_python_runner(self.root / RESNET_MODEL, version_dir)
        atomic_write(version_dir / CATEGORY_LABELS_FILE,
                     "".join(f"{name}\n" for name in provenance.categories).encode())
        provenance.write(version_dir)
        atomic_write(version_dir / MODEL_FILE, model)  # last: a version counts as built once this exists
        return version

    def serving_version(self) -> int | None:
        """The head version the ensemble config runs, or None when it has no categories step."""
        step = _categories_step(read_config(self.ensemble_config))
        return None if step is None else int(step.model_version)

    def serve(self, version: int | None) -> None:
        """Make the ensemble config run head ``version`` (None: no head, the template's ensemble)."""
        label_file = f"{CATEGORIES_MODEL}-{version}.txt"
        if version is not None:
            atomic_write(self.ensemble_config.parent / label_file,
                         (self.model_dir / str(version) / CATEGORY_LABELS_FILE).read_bytes())

        def rewire(config: ModelConfig) -> None:
            outputs = [output for output in config.output if output.name != CATEGORY_PROBABILITIES]
            steps = [step for step in config.ensemble_scheduling.step if step.model_name != CATEGORIES_MODEL]
            del config.output[:]
            config.output.extend(outputs)
            del config.ensemble_scheduling.step[:]
            config.ensemble_scheduling.step.extend(steps)
            resnet = _resnet_step(config)
            if version is None:
                resnet.output_map[EMBEDDING] = EMBEDDING
                return
            resnet.output_map[EMBEDDING] = RESNET_EMBEDDING
            config.output.add(name=CATEGORY_PROBABILITIES, data_type=model_config_pb2.TYPE_FP32,
                              dims=[len(self.categories(version))], label_filename=label_file)
            step = config.ensemble_scheduling.step.add(model_name=CATEGORIES_MODEL, model_version=version)
            step.input_map[EMBEDDING] = RESNET_EMBEDDING
            step.output_map[CATEGORY_PROBABILITIES] = CATEGORY_PROBABILITIES
            step.output_map[CATEGORISED_EMBEDDING] = EMBEDDING

        edit_config(self.ensemble_config, rewire)

    def restore_serving_state(self) -> None:
        """The last promoted head serves (version 0: none). Before any promotion was tried, the newest built
        one does, as a new resnet50 build does; after a failed first promotion, none."""
        built, history = self.built_versions(), self.history()
        promoted = [entry.version for entry in history if entry.promoted]
        if promoted:
            serving = promoted[-1] if promoted[-1] in built else None
        else:
            serving = built[-1] if built and not history else None
        if serving is None and self.serving_version() is None:
            return  # nothing to change: the built ensemble stays a plain copy of the template
        if serving is not None:
            self.load_versions([serving])
        self.serve(serving)


def set_embedding_width(configs: list[Path], width: int) -> None:
    """Make the embedding tensors of these configs (inputs and outputs, under any of their names) ``width`` wide."""
    names = {EMBEDDING, CATEGORISED_EMBEDDING}

    def widen(config: ModelConfig) -> None:
        for tensor in (*config.input, *config.output):
            if tensor.name in names:
                tensor.dims[:] = [width]

    for config in configs:
        if config.exists():
            edit_config(config, widen)


def pin_versions(configs: list[Path], versions: list[int]) -> None:
    """Make every config of a model load exactly these versions (Triton's ``specific`` version policy)."""
    def pin(config: ModelConfig) -> None:
        config.version_policy.specific.versions[:] = sorted(set(versions))

    for config in configs:
        edit_config(config, pin)


def _resnet_step(config: ModelConfig) -> Any:
    return next(step for step in config.ensemble_scheduling.step if step.model_name == RESNET_MODEL)


def _categories_step(config: ModelConfig) -> Any:
    return next((step for step in config.ensemble_scheduling.step if step.model_name == CATEGORIES_MODEL), None)


def ensure_python_runner(model_dir: Path, version_dir: Path) -> None:
    """The cpu config runs ``<version>/model.py``; new versions get version 1's of ``model_dir``
    (resnet50's for the categories head too: it runs any ONNX model with the config's inputs and outputs)."""
    runner = version_dir / PYTHON_RUNNER
    template = model_dir / "1" / PYTHON_RUNNER
    if not runner.exists() and template.exists():
        shutil.copyfile(template, runner)


def _input_width(model: bytes) -> int:
    """The width of an ONNX head's ``embedding`` input."""
    import onnx

    graph = onnx.load_from_string(model).graph
    embedding = next(value for value in graph.input if value.name == EMBEDDING)
    return int(embedding.type.tensor_type.shape.dim[-1].dim_value)
