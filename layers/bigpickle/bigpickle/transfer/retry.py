"""Per-part retries for what botocore cannot retry: failures after the response started (a connection
dropped mid-body, a stalled stream hitting the read timeout, a body shorter than promised).

botocore already retries throttling, 5xx and connection errors before a response (the client config in
`TransferConfig.client_config`); those surface here only once its own attempts are spent, and then the
part is tried again too, so a long brownout costs a few slow parts, not the whole copy.
"""

from __future__ import annotations

import builtins
import http.client
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import urllib3.exceptions
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, IncompleteReadError, ReadTimeoutError

_THROTTLING = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed"}


class ShortPartError(Exception):
    """The server closed a part's body before sending all of it."""


_TRANSIENT: tuple[type[BaseException], ...] = (
    ShortPartError,
    ReadTimeoutError,
    ConnectionError,  # botocore's: endpoint, connect timeout, connection closed
    HTTPClientError,  # botocore's wrapper of urllib3/http.client failures, incl. ResponseStreamingError
    IncompleteReadError,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    # the socket's own errors (ConnectionResetError, BrokenPipeError, socket timeouts); not OSError as a
    # whole: a write to the file fails with one too, and that is no network fault to retry
    builtins.ConnectionError,
    TimeoutError,
)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, ClientError):
        meta = error.response.get("ResponseMetadata", {})
        code = error.response.get("Error", {}).get("Code", "")
        return meta.get("HTTPStatusCode", 0) >= 500 or code in _THROTTLING
    return isinstance(error, _TRANSIENT)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits up to base * 2**n, capped."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def backoff(self, attempt: int) -> None:
        self.sleep(random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt)))
