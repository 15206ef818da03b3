"""Errors as both services answer them: OpenAI's error body, with the parameter at fault named,
for bad bodies, refused requests and anything unexpected (a 500 that names no internals)."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from models._private.core.errors import RequestError
from serve._private.guard import AccessDenied, Limited
from serve._private.protocol import error_response, request_id_of

__all__ = ["install_error_handlers"]

log = logging.getLogger("swarmray.serve")
_PLACES = {"body", "query", "path", "header"}  # where FastAPI found a parameter, not its name


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


async def _refused(request: Request, exc: RequestError) -> JSONResponse:
    return error_response(400, str(exc), "invalid_request_error", exc.param, exc.code, request)


async def _denied(request: Request, exc: AccessDenied) -> JSONResponse:
    return error_response(403, str(exc), "permission_error", None, "insufficient_permissions", request)


async def _limited(request: Request, exc: Limited) -> JSONResponse:
    response = error_response(429, str(exc), "rate_limit_error", None, exc.code, request)
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
    app.add_exception_handler(RequestError, _refused)
    app.add_exception_handler(AccessDenied, _denied)
    app.add_exception_handler(Limited, _limited)
    app.add_exception_handler(Exception, _internal)
