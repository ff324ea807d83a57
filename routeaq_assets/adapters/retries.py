"""The one way RouteAQ retries a call to an outside system, on tenacity.

Every caller that asks a source, a webhook or a service again after a passing failure goes
through ``RetryPolicy.call``: the HTTP sources' session (``sources.http``), the SOS client, the
alert webhook and the lake's commits that lose to another writer (``storage``). The caller says what a passing failure is (exception types, and answers such as an
HTTP 503) and how many times to try again; the waits double from ``backoff_s`` (``backoff_s``,
``2 * backoff_s``, ``4 * backoff_s``, ...). An exception of another kind is not retried: it
propagates at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import tenacity

T = TypeVar("T")


def _never(_: Any) -> bool:
    return False


@dataclass(frozen=True)
class RetryPolicy:
    retries: int  # tries after the first: at most retries + 1 calls
    backoff_s: float  # the first wait; each next wait doubles
    errors: tuple[type[BaseException], ...] = ()  # exceptions that are worth asking again
    retry_answer: Callable[[Any], bool] = _never  # answers that are worth asking again (a 503)
    max_wait_s: float = float("inf")  # no single wait longer than this
    jitter: bool = False  # each wait drawn at random up to its doubling bound (writers that collide spread out)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0:
            raise ValueError(f"retries and backoff_s must be at least 0, got {self.retries} and {self.backoff_s}")

    def call(self, ask: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> tuple[T, int]:
        """``ask()`` until it answers with something ``retry_answer`` accepts or raises none of
        ``errors``, at most ``retries + 1`` times: the last answer and how many calls it took.
        When the retries run out on an answer, that answer is returned (the caller judges it);
        on one of ``errors``, the last one is raised."""
        calls = 0

        def counted() -> T:
            nonlocal calls
            calls += 1
            return ask()

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=(tenacity.wait_random_exponential(multiplier=self.backoff_s, max=self.max_wait_s) if self.jitter
                  else tenacity.wait_exponential(multiplier=self.backoff_s, min=0, max=self.max_wait_s)),
            retry=tenacity.retry_if_exception_type(self.errors) | tenacity.retry_if_result(self.retry_answer),
            retry_error_callback=lambda state: state.outcome.result(),  # the last answer, or its exception raised
            sleep=sleep,
        )
        return retrying(counted), calls
