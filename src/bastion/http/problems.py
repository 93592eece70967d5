"""RFC 7807 problem+json answers with stable `type`s."""

from __future__ import annotations

from typing import Any

import orjson

from bastion.http.headers import Headers
from bastion.http.messages import BodyTimeout, BodyTooLarge, Request, Response

PROBLEM_BASE = "https://bastion.dev/problems/"


TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    410: "Gone",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def body_problem(exc: Exception, req: Request, stopped_by: str = "") -> Response | None:
    """The answer for a body that could not be read (413, 408); None when the client left."""
    if isinstance(exc, BodyTooLarge):
        return problem(
            413,
            "body-too-large",
            f"the request body is larger than {req.body_limit} bytes",
            request_id=req.request_id,
            stopped_by=stopped_by,
            extra={"max_bytes": req.body_limit},
        )
    if isinstance(exc, BodyTimeout):
        return problem(
            408,
            "body-timeout",
            "the request body did not arrive in time",
            request_id=req.request_id,
            stopped_by=stopped_by,
        )
    return None


def problem(
    status: int,
    type_: str,
    detail: str,
    *,
    request_id: str = "",
    stopped_by: str = "",
    headers: Headers | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """An RFC 7807 `application/problem+json` response with a stable `type`."""
    doc: dict[str, Any] = {
        "type": PROBLEM_BASE + type_,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if request_id:
        doc["request_id"] = request_id
    if extra:
        doc.update(extra)
    body = orjson.dumps(doc)
    hs: Headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if headers:
        hs.extend(headers)
    return Response(status, hs, body, stopped_by=stopped_by, reason=type_)
