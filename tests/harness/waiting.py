"""Polling helper that the harness and the tests use instead of fixed sleeps."""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar, Union

T = TypeVar("T")

# A message may be a callable so that it can describe the state at the moment of
# the timeout, for example the tail of a server log.
Message = Union[str, Callable[[], str]]


class WaitTimeout(AssertionError):
    """Raised by `wait_for` when the predicate stays false until the timeout.

    It derives from AssertionError so that pytest reports it as a test failure,
    not as an error in the harness.
    """


def wait_for(
    predicate: Callable[[], Optional[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: Message = "condition not met",
) -> T:
    """Call `predicate` every `interval` seconds until it returns a truthy value.

    Returns that value. Raises WaitTimeout with `message` and the elapsed time
    when `timeout` seconds pass first. The predicate is called at least once,
    and once more when the deadline is reached. Exceptions from the predicate
    propagate unchanged.
    """
    if timeout < 0:
        raise ValueError(f"timeout must be zero or more seconds, got {timeout}")
    if interval <= 0:
        raise ValueError(f"interval must be more than zero seconds, got {interval}")

    start = time.monotonic()
    deadline = start + timeout
    while True:
        result = predicate()
        if result:
            return result
        now = time.monotonic()
        if now >= deadline:
            break
        time.sleep(min(interval, deadline - now))

    elapsed = time.monotonic() - start
    text = message() if callable(message) else message
    raise WaitTimeout(f"timed out after {elapsed:.1f} s: {text}")
