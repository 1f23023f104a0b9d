"""`mrcnn serve`'s HTTP server: the app under uvicorn, with a deadline on each request's headers.

uvicorn cuts idle keep-alive connections but gives a client all the time it likes to send a
request's headers, so a few slow-loris connections trickling a byte at a time would each hold a
socket for ever.  The protocol here closes a connection whose request line and headers are not
complete `read_timeout` seconds after it opened (or after its previous response), answering 408;
the app's own deadline (ServeOptions.read_timeout) covers the body."""
from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import uvicorn

TOO_SLOW = json.dumps({'error': 'the request was not sent in time'}).encode()
REQUEST_TIMEOUT = (b'HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n'
                   b'content-length: %d\r\n\r\n%s' % (len(TOO_SLOW), TOO_SLOW))


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a port in use is one error at once,
    and port 0 gets a free port from the system (read it back with getsockname)."""
    from mrcnn_cli.errors import MrcnnError
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise MrcnnError(f'cannot listen on {host}: {e.strerror}') from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # a restart reuses a port in TIME_WAIT
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise MrcnnError(f'cannot listen on {host}:{port}: {e.strerror} (another server there? pick another '
                         '--port, or --port 0 for any free one)') from None
    sock.set_inheritable(True)
    return sock


def run(app: Any, sock: socket.socket, *, read_timeout: float, graceful_timeout: float) -> None:
    """Serve `app` on the bound `sock` until SIGINT or SIGTERM; then stop taking connections, let
    the requests in flight finish (at most `graceful_timeout` seconds) and return."""
    config = uvicorn.Config(app, log_level='warning', timeout_keep_alive=5,
                            timeout_graceful_shutdown=int(graceful_timeout),
                            http=header_deadline_protocol(read_timeout))
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:   # uvicorn re-raises the signal it drained on: the drain is done, a clean exit
        pass
    if not server.started:
        from mrcnn_cli.errors import MrcnnError
        raise MrcnnError('the server did not start (its warm-up failed: see the line above)')


def header_deadline_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (httptools where installed, else h11), closing connections
    whose next request's headers take longer than `seconds`."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderDeadline(AutoHTTPProtocol):   # type: ignore[misc, valid-type]
        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            super().data_received(data)
            if self.cycle is not before:   # a new request's headers are complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():   # kept alive: the next request has as long
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _too_slow(self) -> None:
            self._timer = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.write(REQUEST_TIMEOUT)
                self.transport.close()

    return HeaderDeadline
