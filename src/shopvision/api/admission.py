"""How many requests the service takes in at once, counted before any body is read: each upload may hold up
to the image limit in memory while it waits for Triton, so past the bound a request is refused at the door
(503 with Retry-After) instead of queueing its body. The probes are never refused: a busy pod is not a dead one."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from shopvision.api.problems import Problem, problem_response

PROBES = frozenset({"/healthz", "/readyz"})


class AdmissionLimit:
    def __init__(self, app: ASGIApp, *, limit: int, retry_after_s: int) -> None:
        self._app, self._limit, self._retry_after_s = app, limit, retry_after_s
        self.in_flight = 0  # changed only on the event loop's thread

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self._app(scope, receive, send)
            return
        if self.in_flight >= self._limit:
            busy = Problem(503, "Service busy", f"{self.in_flight} requests are being served, the most this service "
                           "takes at once (SHOPVISION_API_MAX_REQUESTS); try again shortly",
                           headers={"Retry-After": str(self._retry_after_s)})
            await problem_response(Request(scope), busy)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self.in_flight -= 1
