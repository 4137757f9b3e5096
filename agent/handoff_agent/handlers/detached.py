"""A request body read past tornado, straight into page-aligned buffers, and its answer.

Tornado reads a streamed body into a buffer of its own, copies it into another and slices
each chunk off as new bytes: three copies of every byte, on the event loop's thread. A bundle
upload takes the stream over once its headers pass (``HTTP1Connection.detach``, as a
websocket does) and reads with ``IOStream.read_into``: one copy, the kernel's. The handler
answers through ``Connection``, as through tornado's own; then the stream closes.
"""

from __future__ import annotations

import asyncio

from tornado import httputil, iostream

from ..errors import BadRequest


class Connection(httputil.HTTPConnection):
    """The answer to a request whose stream was detached: HTTP/1.1 with ``Connection:
    close``, and the stream closed once it is sent. A client that went away gets nothing."""

    def __init__(self, stream: iostream.IOStream):
        self.stream = stream

    def write_headers(self, start_line, headers, chunk=None) -> asyncio.Future:
        headers["Connection"] = "close"
        lines = [f"HTTP/1.1 {start_line.code} {start_line.reason}"]
        lines += [f"{name}: {value}" for name, value in headers.get_all()]
        return self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (chunk or b""))

    def write(self, chunk: bytes) -> asyncio.Future:
        if self.stream.closed():
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return self.stream.write(chunk)

    def finish(self) -> None:
        if not self.stream.closed():
            self.stream.write(b"").add_done_callback(lambda _: self.stream.close())

    def set_close_callback(self, callback) -> None:
        """Nothing to call: a detached request learns of a closed stream from its reads."""


async def read_body(request: httputil.HTTPServerRequest, size: int, upload) -> None:
    """Detach the request's stream (its answer then goes through ``Connection``) and read
    ``size`` body bytes into ``upload``'s buffers (``buffer``, ``write``) within the server's
    body timeout; first "100 Continue" when the client waits for it. A body cut short or
    late is refused: the upload aborted, the stream closed."""
    timeout = request.connection.params.body_timeout
    stream = request.connection.detach()
    request.connection = Connection(stream)
    expect_continue = request.headers.get("Expect", "").lower() == "100-continue"
    try:
        async with asyncio.timeout(timeout):
            if expect_continue:
                await stream.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            left = size
            while left:
                buffer = upload.buffer()
                view = buffer.view[: min(left, len(buffer.view))]
                await stream.read_into(view)  # on failure the upload is aborted, pool and all
                upload.write(view, buffer)
                left -= len(view)
    except BaseException as e:
        upload.abort()
        stream.close()
        if not isinstance(e, (iostream.StreamClosedError, TimeoutError)):
            raise
        raise BadRequest(
            f"The connection closed, or the time ran out, before the body's {size} bytes came.",
            "Push again.",
            code="body_incomplete",
        ) from None
