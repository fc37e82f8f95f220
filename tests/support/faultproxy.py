"""A TCP proxy a test starts and controls, to cut a database off.

``kill()`` closes every connection and refuses new ones (a server that is
down); ``pause()`` keeps accepting and forwards nothing either way (a server
that hangs, or a network that drops packets); ``resume()`` undoes both, on
the same port, and what was held during a pause flows on.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

from sqlalchemy.engine import make_url

__all__ = ["FaultProxy", "fault_proxy"]

_CHUNK = 65536


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: Optional[socket.socket] = None
        self._closed = False
        self._listen()

    # -- control ---------------------------------------------------------------

    def kill(self) -> None:
        """Close every connection and stop listening: connects are refused."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets = list(self._sockets)
            self._sockets.clear()
        if listener is not None:
            listener.close()
        for sock in sockets:
            _close(sock, reset=True)
        self._flowing.set()  # let the pumps see their sockets closed and end

    def pause(self) -> None:
        """Accept connections and forward nothing, either way."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again (listening again after a kill, on the same port)."""
        with self._lock:
            listening = self._listener is not None
        if not listening:
            self._listen()
        self._flowing.set()

    def close(self) -> None:
        """Stop for good and wait for every thread of the proxy."""
        self._closed = True
        self.kill()
        for thread in self._threads:
            thread.join(timeout=5)

    def url(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by the proxy's."""
        return (
            make_url(database_url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )

    # -- forwarding ------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        self._start(self._accept, listener)

    def _start(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            with self._lock:
                if self._listener is not listener:
                    return
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # closed by kill()
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client, reset=True)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    _close(client, reset=True)
                    _close(upstream, reset=True)
                    return
                self._sockets.update((client, upstream))
            self._start(self._pump, client, upstream)
            self._start(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(_CHUNK)
            except OSError:
                data = b""
            # While paused, what was read waits here: nothing gets through.
            self._flowing.wait()
            if not data:
                break
            try:
                sink.sendall(data)
            except OSError:
                break
        with self._lock:
            self._sockets.discard(source)
            self._sockets.discard(sink)
        _close(source)
        _close(sink)


def _close(sock: socket.socket, *, reset: bool = False) -> None:
    # OSError: already closed by the other pump.
    with contextlib.suppress(OSError):
        if reset:
            # An abortive close (RST), as a crashed server's host sends.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@contextmanager
def fault_proxy(database_url: str) -> Iterator[FaultProxy]:
    """A proxy in front of the server of ``database_url``, closed after."""
    url = make_url(database_url)
    proxy = FaultProxy(url.host or "127.0.0.1", url.port or _DEFAULT_PORTS[url.get_backend_name()])
    try:
        yield proxy
    finally:
        proxy.close()


_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
