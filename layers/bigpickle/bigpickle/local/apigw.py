"""A Docker-free stand-in for `sam local start-api`: HTTP request -> API Gateway HTTP API (payload 2.0)
event -> handler -> HTTP response. Requests are handled one at a time, as one Lambda container does.
Every method goes to the handler, as the `$default` route sends it; the API answers what it does not serve.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bigpickle.local.context import LocalLambdaContext
from bigpickle.local.runtime import Handler

# API Gateway refuses larger payloads itself; the handler enforces its own, smaller limit.
MAX_GATEWAY_PAYLOAD = 10 * 1024 * 1024
_TEXT_TYPES = ("application/json", "text/", "application/xml")


def http_api_event(method: str, target: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The event API Gateway HTTP API sends for this request (payload format version 2.0)."""
    url = urlsplit(target)
    lowered = {k.lower(): v for k, v in headers.items()}
    is_text = lowered.get("content-type", "").startswith(_TEXT_TYPES)
    try:
        text = body.decode() if is_text else None
    except UnicodeDecodeError:
        text = None
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": url.path,
        "rawQueryString": url.query,
        "headers": lowered,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": lowered.get("host", "127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": url.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": bool(body) and text is None,
    }
    if url.query:
        event["queryStringParameters"] = dict(parse_qsl(url.query, keep_blank_values=True))
    if body:
        event["body"] = text if text is not None else base64.b64encode(body).decode()
    return event


class ApiGatewayBridge(ThreadingHTTPServer):
    """Serve `handler` on http://127.0.0.1:<port>; port 0 picks a free one."""

    daemon_threads = True

    def __init__(
        self, handler: Handler, host: str = "127.0.0.1", port: int = 0, function_name: str = "bigpickle-predict"
    ) -> None:
        super().__init__((host, port), _RequestHandler)
        self.handler = handler
        self.function_name = function_name
        self.invoke_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        with self.invoke_lock:
            return self.handler(event, LocalLambdaContext(function_name=self.function_name, timeout_seconds=30))

    def start_background(self) -> ApiGatewayBridge:
        self._thread = threading.Thread(target=self.serve_forever, name="apigw-bridge", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _RequestHandler(BaseHTTPRequestHandler):
    server: ApiGatewayBridge
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_GATEWAY_PAYLOAD:
            self._reply(413, {"content-type": "application/json"}, b'{"message":"Request Entity Too Large"}')
            return
        body = self.rfile.read(length) if length else b""
        event = http_api_event(self.command, self.path, dict(self.headers.items()), body)
        try:
            result = self.server.invoke(event)
        except Exception:  # what API Gateway does when the function itself fails
            self.log_error("handler raised; answering 502 as API Gateway would")
            self._reply(502, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}')
            return
        payload = result.get("body") or ""
        data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
        headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
        self._reply(int(result.get("statusCode", 200)), headers, data, result.get("cookies") or [])

    def _reply(self, status: int, headers: dict[str, str], data: bytes, cookies: list[str] = ()) -> None:  # type: ignore[assignment]
        self.send_response(status)
        for name, value in headers.items():
            if name not in ("content-length", "connection"):
                self.send_header(name, value)
        for cookie in cookies:
            self.send_header("set-cookie", cookie)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":  # an answer to HEAD has the headers of the body, never the body
            self.wfile.write(data)

    def __getattr__(self, name: str) -> Any:
        """`do_<METHOD>` for every method (http.server answers 501 to one it finds no `do_` for)."""
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default; the handler logs
        pass
