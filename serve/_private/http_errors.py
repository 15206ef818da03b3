"""Errors as both services answer them: OpenAI's error body, with the parameter at fault named,
for bad bodies, refused requests and anything unexpected (a 500 that names no internals); and
the OpenAPI schema that says so, with the bearer key every route but the health check needs."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from models._private.core.errors import AccessDenied, Limited, RequestError

__all__ = ["ErrorResponse", "error_body", "error_response", "install_error_handlers", "request_id_of"]

log = logging.getLogger("swarmray.serve")
_PLACES = {"body", "query", "path", "header"}  # where FastAPI found a parameter, not its name


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body, which every error of both services has."""

    error: ErrorDetail


def error_body(
    message: str, kind: str, param: str | None = None, code: str | None = None, request_id: str | None = None
) -> dict:
    """OpenAI's error object (`ErrorResponse`), as a response body or an in-band stream event,
    with the request's id when there is one (the service log has the details under it)."""
    detail = ErrorDetail(message=message, type=kind, param=param, code=code, request_id=request_id)
    return ErrorResponse(error=detail).model_dump(exclude=None if request_id else {"error": {"request_id"}})


def request_id_of(request: Any) -> str | None:
    """Serve's id of the request (its x-request-id, in the response and the log too)."""
    return request.headers.get("x-request-id") if request is not None else None


def error_response(
    status: int,
    message: str,
    kind: str,
    param: str | None = None,
    code: str | None = None,
    request: Any = None,
) -> JSONResponse:
    body = error_body(message, kind, param, code, request_id_of(request))
    return JSONResponse(body, status_code=status)


# What any route may answer besides its own success (the middleware refuses before routing).
_ERRORS = {
    "400": "A body or parameter is invalid; `param` names it.",
    "401": "No API key, or one that is unknown, revoked or expired.",
    "403": "Out of the key's scopes, models or namespaces.",
    "404": "No such model, namespace or object.",
    "413": "The body is over 32 MiB.",
    "429": "Over one of the key's limits; see Retry-After.",
    "500": "Unexpected; the service log has it under the request id.",
    "503": "No backend or shard could answer, or a model's queue is full; see Retry-After.",
}


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":  # its loc is a character offset, not a parameter
        where = first.get("loc", ("body", "?"))[-1]
        why = first.get("ctx", {}).get("error", "JSON decode error")
        message = f"the request body is not valid JSON: {why} (at character {where})"
        return error_response(400, message, "invalid_request_error", "body", "invalid_json", request)
    loc = list(first.get("loc", ()))
    if loc and loc[0] in _PLACES:
        loc = loc[1:]
    param = ".".join(str(p) for p in loc) or None
    return error_response(
        400,
        f"{param or 'body'}: {first.get('msg', 'invalid request')}",
        "invalid_request_error",
        param,
        "invalid_value",
        request,
    )


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    # Starlette's own: a body it could not parse (not UTF-8, say), an unknown route or method.
    if exc.status_code == 400:
        message = "the request body is not valid JSON (it could not be parsed as UTF-8 JSON text)"
        return error_response(400, message, "invalid_request_error", "body", "invalid_json", request)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    response = error_response(exc.status_code, str(exc.detail), "invalid_request_error", None, code, request)
    response.headers.update(exc.headers or {})  # a 405's Allow
    return response


async def _refused(request: Request, exc: RequestError) -> JSONResponse:
    return error_response(400, str(exc), "invalid_request_error", exc.param, exc.code, request)


async def _denied(request: Request, exc: AccessDenied) -> JSONResponse:
    request.state.refusal = "insufficient_permissions"  # for the audit record
    return error_response(403, str(exc), "permission_error", None, "insufficient_permissions", request)


async def _limited(request: Request, exc: Limited) -> JSONResponse:
    request.state.refusal = exc.code  # for the audit record and the refusals metric
    response = error_response(429, str(exc), "rate_limit_error", None, exc.code, request)
    if exc.retry_after_s is not None:
        response.headers["retry-after"] = str(math.ceil(exc.retry_after_s))
    return response


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request %s: unexpected error", request_id_of(request), exc_info=exc)
    return error_response(
        500, "internal error; the service log has the details", "server_error", None, None, request
    )


def install_error_handlers(app: FastAPI) -> None:
    """Bad bodies and parameters (400), `RequestError` (400), a key's object limits (403), its
    token limits (429), and the last resort (500)."""
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestError, _refused)
    app.add_exception_handler(AccessDenied, _denied)
    app.add_exception_handler(Limited, _limited)
    app.add_exception_handler(Exception, _internal)
    _document(app)


def _document(app: FastAPI) -> None:
    """The schema lists the errors above on every route instead of FastAPI's 422 (a bad body is
    a 400 here), and the bearer key as the security scheme."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None or "securitySchemes" not in app.openapi_schema.get("components", {}):
            schema = build()
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            error = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(error.pop("$defs", {}), ErrorResponse=error)
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
                    for status, what in _ERRORS.items():
                        operation["responses"].setdefault(status, {"description": what, "content": body})
            components["securitySchemes"] = {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "sr-…, from `swarm keys create`.",
                }
            }
            schema["security"] = [{"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
