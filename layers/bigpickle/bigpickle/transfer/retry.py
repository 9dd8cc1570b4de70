"""Per-part retries for what botocore cannot retry: failures after the response started (a connection
dropped mid-body, a stalled stream hitting the read timeout, a body shorter than promised).

botocore retries everything that fails before a response (throttling, 5xx, RequestTimeout, connection
errors) with its own attempts (`TransferConfig.client_config`). A GET that fails after those is not tried
again here: it fails the copy, which keeps its parts for the next run. So a part costs at most
`RetryPolicy.attempts` GETs, each one a botocore call with its own bounded attempts.
"""

from __future__ import annotations

import builtins
import http.client
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import urllib3.exceptions
from botocore.exceptions import ConnectionError, HTTPClientError, IncompleteReadError, ReadTimeoutError


class ShortPartError(Exception):
    """The server closed a part's body before sending all of it."""


# What reading a response body raises when the network fails part-way.
_MID_BODY_FAULTS: tuple[type[BaseException], ...] = (
    ShortPartError,
    ReadTimeoutError,
    ConnectionError,  # botocore's: connection closed
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
    """A network fault while reading a body: worth reopening the rest of the part."""
    return isinstance(error, _MID_BODY_FAULTS)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits up to base * 2**n, capped."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def backoff(self, attempt: int) -> None:
        self.sleep(random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt)))
