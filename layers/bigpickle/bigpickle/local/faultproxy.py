"""A fault-injecting TCP proxy on 127.0.0.1, between an S3 client and the real local S3 server.

Bytes pass through untouched until a fault is armed; the next connection to carry server bytes claims
it, counts `after` further bytes from the server, and then:

- `drop`:  closes both sides (a connection dropped mid-body);
- `stall`: stops forwarding for `seconds` (the client's read timeout fires), then closes;
- `flip`:  inverts that one byte and carries on (corruption only a checksum can catch);
- `status`: (counted on requests, not bytes) answers the next request on a NEW connection with an HTTP
  error (503 SlowDown by default) instead of forwarding it.

SigV4 signs the Host header the client sent (the proxy's address), and the proxy forwards it as is, so
signatures still verify upstream.

    with FaultProxy(s3_server.endpoint_url) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url, ...)
        proxy.arm(Fault("drop", after=256 * KiB))
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

LOCALHOST = "127.0.0.1"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fault:
    kind: str  # "drop", "stall", "flip" or "status"
    after: int = 0  # server bytes forwarded on the claiming connection before the fault fires
    seconds: float = 0.0  # how long a stall lasts
    status: int = 503

    def __post_init__(self) -> None:
        if self.kind not in ("drop", "stall", "flip", "status"):
            raise ValueError(f"unknown fault kind {self.kind!r}")


class _Armed:
    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.after


class FaultProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        if parts.hostname != LOCALHOST:
            raise ValueError("the fault proxy only forwards to 127.0.0.1")
        self.upstream = (LOCALHOST, parts.port or 80)
        self._listener = socket.create_server((LOCALHOST, 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pending: list[Fault] = []
        self._statuses: list[Fault] = []
        self.fired: list[str] = []  # kinds of the faults that fired, in order
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def arm(self, *faults: Fault) -> None:
        with self._lock:
            for fault in faults:
                (self._statuses if fault.kind == "status" else self._pending).append(fault)

    # -- lifecycle --

    def start(self) -> FaultProxy:
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopped.set()
        _close(self._listener)  # shutdown() wakes the accept() that close() alone would leave blocked
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    # -- forwarding --

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                status = self._statuses.pop(0) if self._statuses else None
                self._sockets.add(client)
            if status is not None:
                self._spawn(self._answer_status, client, status)
                continue
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.add(upstream)
            self._spawn(self._pump, client, upstream, False)
            self._spawn(self._pump, upstream, client, True)

    def _answer_status(self, client: socket.socket, fault: Fault) -> None:
        request = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in request:
                chunk = client.recv(_CHUNK)
                if not chunk:
                    break
                request += chunk
            body = b"<Error><Code>SlowDown</Code><Message>injected by FaultProxy</Message></Error>"
            client.sendall(
                f"HTTP/1.1 {fault.status} Injected\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        self._record("status")
        _close(client)

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        armed: _Armed | None = None
        try:
            while not self._stopped.is_set():
                data = source.recv(_CHUNK)
                if not data:
                    break
                if from_server:
                    if armed is None:
                        armed = self._claim()
                    if armed is not None:
                        data, armed, close = self._apply(armed, data, sink)
                        if close:
                            break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)

    def _claim(self) -> _Armed | None:
        with self._lock:
            return _Armed(self._pending.pop(0)) if self._pending else None

    def _apply(self, armed: _Armed, data: bytes, sink: socket.socket) -> tuple[bytes, _Armed | None, bool]:
        """Forward what comes before the fault point; fire the fault. Returns (rest, still armed, close)."""
        if armed.remaining >= len(data):
            armed.remaining -= len(data)
            return data, armed, False
        before, at = data[: armed.remaining], data[armed.remaining :]
        kind = armed.fault.kind
        self._record(kind)
        if kind == "flip":
            return before + bytes([at[0] ^ 0xFF]) + at[1:], None, False
        sink.sendall(before)
        if kind == "stall":
            self._stopped.wait(armed.fault.seconds)
        return b"", None, True

    def _record(self, kind: str) -> None:
        with self._lock:
            self.fired.append(kind)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
