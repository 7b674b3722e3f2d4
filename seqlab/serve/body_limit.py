"""The request-body limit of ``seqlab serve``: ASGI middleware that refuses an oversized
body with 413 before the application reads it, and the JSON error response it sends."""

from __future__ import annotations

from fastapi.responses import JSONResponse


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with 413 before the
    application sees it: at once when its declared length is over, else (chunked) as soon
    as the bytes received pass the limit; a body within it is handed on unchanged."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = error_response(413, f"the request body is over this server's limit of {self.limit} bytes")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.limit:
                return await too_big(scope, receive, send)
            return await self.app(scope, receive, send)  # the server reads no more than declared
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                return await too_big(scope, receive, send)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


__all__ = ["BodyLimit", "error_response"]
