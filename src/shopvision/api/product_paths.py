"""Product ids in paths are data: an id may end in ``/image`` or ``/similar`` and still be read back.

A product id is sent percent-encoded, ``/`` as ``%2F`` (the SDK, the page and every ``image_url`` do). Starlette
matches routes on the decoded path, where ``/v1/products/shoe%2Fimage`` (product ``shoe/image``) and
``/v1/products/shoe/image`` (the photo of ``shoe``) look the same; the raw path tells them apart.
"""

from __future__ import annotations

from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

PRODUCT_VIEWS = ("image", "similar")
"""The literal last path segments that name a view of a product rather than part of its id."""


def raw_last_segment(scope: Scope) -> str | None:
    """The path's last segment as sent, still percent-encoded; None where the server gives no raw path."""
    raw = scope.get("raw_path")
    return None if raw is None else raw.decode("latin-1").rsplit("/", 1)[-1]


class ProductRoute(APIRoute):
    """A route ending in a literal segment after a ``{...:path}`` parameter matches only when the raw path ends in
    that literal segment: ``/v1/products/shoe%2Fimage`` falls through to the product itself."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        literal = self.path.rsplit("/", 1)[-1]
        if match is Match.NONE or ":path}" not in self.path or "{" in literal:
            return match, child_scope
        last = raw_last_segment(scope)
        if last is not None and last != literal:
            return Match.NONE, {}
        return match, child_scope


def names_a_view(scope: Scope) -> bool:
    """Whether the raw path ends in a view's literal segment: a write there would store an id that reads back as
    the view, so the id must be sent with its slashes encoded."""
    return raw_last_segment(scope) in PRODUCT_VIEWS
