"""One way to promote a model version on a running server without dropping a request, and to roll back.

What is promoted is a :class:`Target`: resnet50's versions (:mod:`shopvision.repository.lifecycle`) and the
categories heads (:mod:`shopvision.repository.heads`) are two. Every promotion of version N while C serves runs
the same steps:

1. refuse N if it cannot serve here (not built, another embedding width...);
2. hold what serves: pin C in the files, so that no reload brings in anything unchecked;
3. load the model with versions [C, N] (C keeps serving) and check N (the target's checks, in the server);
4. only then switch the ensemble to N (one atomic reload) and unload C;
5. a failed load or check unloads N and leaves C serving, and the report says why;
6. record the outcome in the model's ``promotions.json``; a rollback promotes what served before the last
   successful promotion.

Needs a server in explicit model-control mode with the admin key, and the repository on this filesystem.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from shopvision.client import Client
from shopvision.errors import PermissionDeniedError, ShopvisionError
from shopvision.repository.files import VersionedModel
from shopvision.repository.records import PromotionRecord


class PromotionError(ShopvisionError):
    """A promotion or rollback could not start (bad version, no history, server not in explicit mode)."""


@dataclass(frozen=True)
class Checked:
    """What a target's checks of a loaded version found: each check's outcome, and why it must not serve."""

    checks: dict[str, str]
    failure: str | None = None


class Target(ABC):
    """What is promoted: a model of the repository and the checks, pins and switch that are its own."""

    subject: str
    """How the report names a version of it: ``resnet50 version``, ``categories head``."""

    def __init__(self, files: VersionedModel) -> None:
        self.files = files
        """Its model in the repository; ``files.model`` is loaded with both versions while the new one is checked."""

    @abstractmethod
    def serving(self, client: Client) -> int:
        """The version the server runs now (0: none, where the target allows it)."""

    @abstractmethod
    def require_built(self, version: int) -> None:
        """Raise :class:`PromotionError` unless ``version`` is built (asked before the server is)."""

    def refuse(self, version: int, current: int) -> None:  # noqa: B027 (most targets refuse nothing more)
        """Raise :class:`PromotionError` if ``version`` cannot replace ``current`` live."""

    def already(self, version: int) -> str:
        return f"{self.subject} {version} is already serving"

    @abstractmethod
    def hold(self, client: Client, current: int) -> None:
        """Pin ``current`` in the files before anything loads: a reload must not bring in an unchecked version."""

    @abstractmethod
    def check(self, client: Client, version: int) -> Checked:
        """Check ``version``, loaded beside the serving one, in the server."""

    @abstractmethod
    def switch(self, client: Client, version: int) -> None:
        """Make the ensemble serve ``version`` (one reload)."""

    def after(self, version: int) -> dict[str, str]:
        """Warnings once ``version`` serves (added to the report's checks)."""
        return {}


def promote(target: Target, version: int, *, url: str, admin_key: str) -> PromotionRecord:
    """Make ``version`` what serves on the server at ``url`` (gRPC or HTTP), checking it first."""
    target.require_built(version)
    with Client(url, admin_key=admin_key) as client:
        try:
            current = target.serving(client)
        except PermissionDeniedError as error:
            raise PromotionError(f"cannot read the server's models: {error}") from error
        if version == current:
            return PromotionRecord.now(version=version, previous=current, promoted=False,
                                       reason=target.already(version))
        target.refuse(version, current)
        with repository_operations():
            outcome = _switch(client, target, current, version)
    report = PromotionRecord.now(version=version, previous=current, promoted=outcome.failure is None,
                                 checks=outcome.checks, reason=outcome.failure)
    target.files.record(report)
    return report


def rollback(target: Target, *, url: str, admin_key: str) -> PromotionRecord:
    """Promote what served before the last successful promotion."""
    return promote(target, served_before_last_promotion(target.files.history()), url=url, admin_key=admin_key)


def served_before_last_promotion(history: list[PromotionRecord]) -> int:
    promotions = [entry for entry in history if entry.promoted]
    if not promotions:
        raise PromotionError("nothing to roll back: no successful promotion is recorded")
    return promotions[-1].previous


@contextlib.contextmanager
def repository_operations() -> Iterator[None]:
    """The server's refusals while models are switched, as one error that says what to check."""
    try:
        yield
    except ShopvisionError as error:
        raise PromotionError(f"the server refused a repository operation ({error}); is it in "
                             "explicit model-control mode, and is the admin key right?") from error


def _switch(client: Client, target: Target, current: int, version: int) -> Checked:
    """Steps 2-5 of the module docstring: what the checks found, and why ``version`` does not serve if it does
    not. Version 0 (a target without a version, such as no categories head) has nothing to load or check: the
    ensemble switches to it."""
    target.hold(client, current)
    checks: dict[str, str] = {}
    if version:
        target.files.load_versions([v for v in (current, version) if v])
        try:
            client.load_model(target.files.model)
        except PermissionDeniedError:
            raise
        except ShopvisionError as error:  # the new version failed to load; the old one still serves
            checked = Checked({"load": str(error)}, f"{target.subject} {version} failed to load: {error}")
        else:
            checked = target.check(client, version)
        checks.update(checked.checks)
        if checked.failure is not None:
            if current:
                target.files.load_versions([current])
                client.load_model(target.files.model)
            return Checked(checks, checked.failure)
    target.switch(client, version)
    if version:
        target.files.load_versions([version])
        client.load_model(target.files.model)
    return Checked({**checks, **target.after(version)})
