"""Errors the forecast service answers with; ``status`` is the HTTP status code."""

from __future__ import annotations


class ForecastError(Exception):
    status = 400

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


class UnknownSite(ForecastError):
    status = 404


class UnknownPlace(ForecastError):
    status = 404


class UnknownReport(ForecastError):
    status = 404


class OutOfRange(ForecastError):
    status = 422


class NotReady(ForecastError):
    status = 503


class StoreUnavailable(ForecastError):
    """A store the answer needs cannot be read (a corrupt history file): the server's fault."""

    status = 503


class TooManyRequests(ForecastError):
    """A client asked more often than the route allows (the message says when to retry)."""

    status = 429


class ChannelUnavailable(ForecastError):
    """A message could not be sent through the deployment's own channel (its SMTP server)."""

    status = 503
