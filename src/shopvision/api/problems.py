"""Every error as ``application/problem+json`` (RFC 9457), from one set of exception handlers."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from shopvision.api.catalog_access import CatalogBusyError
from shopvision.catalog import CatalogError
from shopvision.errors import (
    InvalidImageError,
    PermissionDeniedError,
    RequestRejectedError,
    RequestTimeoutError,
    ServerUnavailableError,
    ShopvisionError,
)

PROBLEM_TYPE = "application/problem+json"


class Problem(Exception):
    """An answer other than success: its status, a short title and what a person should know."""

    def __init__(self, status: int, title: str, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.headers = dict(headers or {})


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body = {"type": "about:blank", "title": problem.title, "status": problem.status, "detail": problem.detail,
            "instance": request.url.path}
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_TYPE)


def from_shopvision_error(error: ShopvisionError, *, retry_after_s: int) -> Problem:
    if isinstance(error, InvalidImageError):
        return Problem(400, "Invalid image", error.reason)
    if isinstance(error, RequestRejectedError):
        return Problem(413, "Request refused by the model server", str(error))
    if isinstance(error, ServerUnavailableError):
        return Problem(503, "Model server unavailable", f"{error}; try again shortly",
                       headers={"Retry-After": str(retry_after_s)})
    if isinstance(error, RequestTimeoutError):
        return Problem(504, "Model server timed out", str(error))
    if isinstance(error, CatalogBusyError):
        return Problem(503, "Catalog busy", str(error), headers={"Retry-After": str(retry_after_s)})
    if isinstance(error, CatalogError):
        return Problem(409, "Catalog refused the operation", str(error))
    if isinstance(error, PermissionDeniedError):
        return Problem(502, "Model server refused the service", str(error))
    return Problem(502, "Model server error", str(error))


def install(app: FastAPI, *, retry_after_s: int) -> None:
    async def on_problem(request: Request, problem: Exception) -> JSONResponse:
        assert isinstance(problem, Problem)
        return problem_response(request, problem)

    async def on_shopvision_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ShopvisionError)
        return problem_response(request, from_shopvision_error(error, retry_after_s=retry_after_s))

    async def on_validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        reasons = "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors())
        return problem_response(request, Problem(422, "Invalid parameters", reasons))

    async def on_http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        return problem_response(request, Problem(error.status_code, str(error.detail), str(error.detail),
                                                 headers=error.headers))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(ShopvisionError, on_shopvision_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
