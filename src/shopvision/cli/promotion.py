"""The CLI's promotion wiring, one for every target: ``model promote|rollback`` and ``categories promote|rollback``."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from shopvision.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    add_json_option,
    add_repository_argument,
    add_url_option,
    print_json,
)
from shopvision.repository.files import default_repository

if TYPE_CHECKING:
    from shopvision.repository.promotion import Target
    from shopvision.repository.records import PromotionRecord

RESNET_VERSIONS = "resnet50"
CATEGORIES_HEADS = "categories"


def add_promotion_actions(actions: argparse._SubParsersAction, *, target: str, texts: dict[str, str],
                          epilog: str) -> None:
    """``promote VERSION`` and ``rollback`` of ``target``: the same options and output for every target."""
    for name, text in texts.items():
        action = actions.add_parser(
            name, help=text,
            description=f"{text[0].upper()}{text[1:]}. Needs `shopvision serve --model-control explicit`, the admin "
                        "key in $SHOPVISION_ADMIN_KEY and the server's model repository on this filesystem. "
                        "No request is dropped; a failed check leaves what served serving.",
            epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "promote":
            action.add_argument("version", type=int)
        add_repository_argument(action)
        add_url_option(action)
        add_json_option(action, "the outcome and each check")
        action.set_defaults(handler=run_promotion, target=target)


def _target(name: str, repository: Path) -> Target:
    # Imported here: the serving side loads onnxruntime and protobuf, which other commands do not need.
    if name == CATEGORIES_HEADS:
        from shopvision.repository.heads import Heads

        return Heads(repository)
    from shopvision.repository.lifecycle import ResnetVersions

    return ResnetVersions(repository)


def run_promotion(args: argparse.Namespace) -> int:
    """``promote VERSION`` or ``rollback`` on the server at ``--url``, then what serves now."""
    from shopvision.repository import promotion

    target = _target(args.target, args.repository or default_repository())
    key = admin_key()
    if getattr(args, "version", None) is not None:
        report = promotion.promote(target, args.version, url=args.url, admin_key=key)
    else:
        report = promotion.rollback(target, url=args.url, admin_key=key)
    return print_promotion(report, subject=target.subject, as_json=args.json)


def admin_key() -> str:
    from shopvision.contract import ADMIN_KEY_ENV
    from shopvision.repository.promotion import PromotionError

    key = os.environ.get(ADMIN_KEY_ENV)
    if not key:
        raise PromotionError(f"set ${ADMIN_KEY_ENV} to the server's admin key: loading models is an admin API")
    return key


def print_promotion(report: PromotionRecord, *, subject: str, as_json: bool = False) -> int:
    """The checks, then one line: what serves now (or all of it as one JSON document)."""
    failed = not report.promoted and report.version != report.previous
    if as_json:
        print_json({"subject": subject, **asdict(report)})
        return EXIT_FAILED if failed else EXIT_OK
    for check, outcome in report.checks.items():
        print(f"check {check}: {outcome}")
    if report.promoted:
        print(f"{subject} {report.version} is serving (was {report.previous})")
        return EXIT_OK
    if report.version == report.previous:
        print(f"nothing to do: {report.reason}")
        return EXIT_OK
    print(f"{subject} {report.version} NOT promoted: {report.reason}; {subject} {report.previous} keeps serving",
          file=sys.stderr)
    return EXIT_FAILED
