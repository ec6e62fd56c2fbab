"""Authentication: token refresh errors."""

from __future__ import annotations

from telemetry.catalogue import TOKEN_REFRESH_ERRORS
from telemetry.registry import Registry


class Auth:
    """Record authentication failures."""

    def __init__(self, registry: Registry) -> None:
        self._refresh_errors = registry.counter(TOKEN_REFRESH_ERRORS)

    def token_refresh_error(self, *, cli_version: str, reason: str) -> None:
        """``reason``: invalid_token_type or invalid_token."""
        self._refresh_errors.labels(cli_version, reason).inc()
