"""A pure-ASGI request-size limit: 413 before a large body is read into memory."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """Rejects bodies over ``max_bytes`` (``upload_bytes`` on upload paths) with 413.

    Checks ``Content-Length`` first and also counts streamed (chunked) bodies.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, upload_bytes: int, upload_prefix: str) -> None:
        self.app, self.max_bytes, self.upload_bytes, self.upload_prefix = app, max_bytes, upload_bytes, upload_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_bytes if scope["path"].startswith(self.upload_prefix) else self.max_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _reject(send, limit)
            return
        seen = 0
        started = rejected = False

        async def limited_receive() -> Message:
            # Over the limit mid-stream: answer 413 ourselves, then tell the app the client left
            # (a raised exception would be swallowed by the body parser and turned into a 400).
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    rejected = True
                    if not started:
                        await _reject(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return  # the 413 is already sent; drop whatever the app answers after it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            if not rejected:  # after a 413 the app may complain that the client left: expected
                raise


async def _reject(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body exceeds the limit of {limit} bytes"}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
