"""The feed's errors: what stops a sync as a whole (a single row's trouble is a RowProblem, not an error)."""

from __future__ import annotations

from shopvision.errors import ShopvisionError


class FeedError(ShopvisionError):
    """The feed cannot be opened or read, or the sync's options do not fit it."""
