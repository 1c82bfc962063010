"""Fit the categories head and measure it: multinomial logistic regression on frozen embeddings.

The regularisation strength is picked by stratified cross-validation on the training split (log loss);
a held-out split the search never saw measures the model that will serve. That model is fitted on the
training split only, so every number in the report describes exactly what is installed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

HELD_OUT_FRACTION = 0.25
REGULARISATION_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
"""Candidate ``C`` (inverse regularisation strength). Embeddings are unit length, so their logits are small
and the useful strengths are weak ones."""
MAX_FOLDS = 5
MAX_ITERATIONS = 5000
CALIBRATION_BINS = 10
CONFUSED_PAIRS = 5


@dataclass(frozen=True)
class CategoryScores:
    precision: float
    recall: float
    photos: int


@dataclass(frozen=True)
class Confusion:
    category: str
    predicted_as: str
    photos: int
    """How many of ``category``'s held-out photos were taken for ``predicted_as``."""


@dataclass(frozen=True)
class CalibrationBin:
    confidence: str
    """The bin's top-1 confidence range, such as ``0.8-0.9``."""
    photos: int
    mean_confidence: float
    accuracy: float


@dataclass(frozen=True)
class Calibration:
    expected_calibration_error: float
    brier: float
    log_loss: float
    bins: list[CalibrationBin]


@dataclass(frozen=True)
class HeldOutScores:
    """The installed model, measured on photos it never saw."""

    accuracy: float
    chance: float
    """The accuracy of always answering the largest category."""
    per_category: dict[str, CategoryScores]
    most_confused: list[Confusion]
    calibration: Calibration


@dataclass(frozen=True)
class GridPoint:
    C: float  # noqa: N815 (scikit-learn's name)
    cv_log_loss: float


@dataclass(frozen=True)
class Regularisation:
    C: float  # noqa: N815 (scikit-learn's name)
    folds: int
    scoring: str
    grid: list[GridPoint]


@dataclass(frozen=True)
class Split:
    train: int
    held_out: int


@dataclass(frozen=True)
class Evaluation:
    """How a head was chosen and how well it does: the training report's ``photos``, ``regularisation`` and
    ``held_out``."""

    photos: Split
    regularisation: Regularisation
    held_out: HeldOutScores

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainedHead:
    categories: list[str]
    """Category names in output order."""
    weights: NDArray[np.float32]
    """(categories, embedding width): logits = embedding @ weights.T + bias."""
    bias: NDArray[np.float32]
    classifier: Any
    """The fitted ``sklearn.linear_model.LogisticRegression`` (its ``predict_proba`` is the reference)."""
    evaluation: Evaluation
    train_rows: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    """The rows of the training data the classifier was fitted on (cross-validation included)."""
    held_out_rows: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    """The rows it never saw, which ``evaluation.held_out`` is measured on."""


def train_head(vectors: NDArray[np.float32], labels: list[str], *, seed: int = 0,
               held_out_fraction: float = HELD_OUT_FRACTION) -> TrainedHead:
    """Split, pick ``C`` by cross-validation on the training part, fit, and evaluate on the held-out part."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split

    categories = sorted(set(labels))
    targets = np.array([categories.index(label) for label in labels])
    train, held_out = train_test_split(np.arange(len(labels)), test_size=held_out_fraction, stratify=targets,
                                       random_state=seed)
    folds = int(min(MAX_FOLDS, np.bincount(targets[train]).min()))
    search = GridSearchCV(LogisticRegression(max_iter=MAX_ITERATIONS), {"C": list(REGULARISATION_GRID)},
                          cv=StratifiedKFold(folds, shuffle=True, random_state=seed), scoring="neg_log_loss")
    search.fit(vectors[train], targets[train])
    classifier = search.best_estimator_
    weights, bias = _softmax_parameters(classifier)
    probabilities = classifier.predict_proba(vectors[held_out])
    evaluation = Evaluation(
        photos=Split(train=len(train), held_out=len(held_out)),
        regularisation=Regularisation(
            C=float(classifier.C), folds=folds, scoring="log loss, stratified cross-validation",
            grid=[GridPoint(C=float(c), cv_log_loss=float(-score)) for c, score in
                  zip(REGULARISATION_GRID, search.cv_results_["mean_test_score"], strict=True)]),
        held_out=held_out_metrics(targets[held_out], probabilities, categories),
    )
    return TrainedHead(categories=categories, weights=weights, bias=bias, classifier=classifier,
                       evaluation=evaluation, train_rows=train, held_out_rows=held_out)


def _softmax_parameters(classifier: Any) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The classifier as one softmax layer. Two classes are a sigmoid in scikit-learn:
    softmax over logits (0, z) is sigmoid(z), so the first row is zero."""
    coefficients, intercepts = classifier.coef_, classifier.intercept_
    if coefficients.shape[0] == 1:
        coefficients = np.vstack([np.zeros_like(coefficients), coefficients])
        intercepts = np.concatenate([[0.0], intercepts])
    return coefficients.astype(np.float32), intercepts.astype(np.float32)


def held_out_metrics(targets: NDArray[Any], probabilities: NDArray[Any], categories: list[str]) -> HeldOutScores:
    """Accuracy against chance, per-category precision and recall, the most confused pairs, calibration."""
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

    indices = list(range(len(categories)))
    predicted = probabilities.argmax(axis=1)
    precision, recall, _, support = precision_recall_fscore_support(targets, predicted, labels=indices,
                                                                    zero_division=0)
    confusion = confusion_matrix(targets, predicted, labels=indices)
    pairs = sorted(((int(confusion[t, p]), categories[t], categories[p]) for t in indices for p in indices
                    if t != p and confusion[t, p] > 0), reverse=True)[:CONFUSED_PAIRS]
    return HeldOutScores(
        accuracy=float((predicted == targets).mean()),
        chance=float(np.bincount(targets, minlength=len(categories)).max() / len(targets)),
        per_category={name: CategoryScores(precision=float(precision[i]), recall=float(recall[i]),
                                           photos=int(support[i])) for i, name in enumerate(categories)},
        most_confused=[Confusion(category=true, predicted_as=guess, photos=count) for count, true, guess in pairs],
        calibration=calibration(targets, probabilities,
                                log_loss=float(log_loss(targets, probabilities, labels=indices))),
    )


def calibration(targets: NDArray[Any], probabilities: NDArray[Any], *, log_loss: float) -> Calibration:
    """Expected calibration error over top-1 confidence bins, the multi-class Brier score, and the bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    bins, error = [], 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if not inside.any():
            continue
        mean_confidence, accuracy = float(confidence[inside].mean()), float(correct[inside].mean())
        error += inside.mean() * abs(mean_confidence - accuracy)
        bins.append(CalibrationBin(confidence=f"{low:.1f}-{high:.1f}", photos=int(inside.sum()),
                                   mean_confidence=mean_confidence, accuracy=accuracy))
    one_hot = np.eye(probabilities.shape[1])[targets]
    return Calibration(expected_calibration_error=float(error),
                       brier=float(((probabilities - one_hot) ** 2).sum(axis=1).mean()), log_loss=log_loss, bins=bins)
