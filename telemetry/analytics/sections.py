"""Page sections: which part of the product an event came from, derived from its route by prefix rules.

The documented sections are ``marketing`` (public pages), ``dashboard`` (the signed-in application and its
authentication pages) and ``api-docs``. Rules are ``/prefix=section`` pairs (``TUIST_POSTHOG_SECTIONS``); a prefix
matches whole path segments (``/dashboard`` matches ``/dashboard`` and ``/dashboard/x``, not ``/dashboards``) and
the longest matching prefix wins. A route no rule matches is ``marketing``.
"""

from __future__ import annotations

from collections.abc import Iterable

MARKETING = "marketing"
DASHBOARD = "dashboard"
API_DOCS = "api-docs"
SECTIONS = (MARKETING, DASHBOARD, API_DOCS)


class Sections:
    """Route -> section. ``Sections.parse("/api/docs=api-docs,/dashboard=dashboard")("/dashboard/x")``."""

    def __init__(self, rules: Iterable[tuple[str, str]] = (), default: str = MARKETING) -> None:
        cleaned: list[tuple[str, str]] = []
        for prefix, section in rules:
            if not prefix.startswith("/") or not section:
                raise ValueError(f"section rule {prefix!r}={section!r}: expected /prefix=section")
            cleaned.append((prefix.rstrip("/") or "/", section))
        # Longest prefix first, so the first match is the most specific one.
        self.rules: tuple[tuple[str, str], ...] = tuple(sorted(cleaned, key=lambda r: -len(r[0])))
        self.default = default

    @classmethod
    def parse(cls, text: str, default: str = MARKETING) -> Sections:
        """Parse ``/prefix=section,...`` (the format of TUIST_POSTHOG_SECTIONS)."""
        rules = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            prefix, sep, section = item.partition("=")
            if not sep:
                raise ValueError(f"section rule {item!r}: expected /prefix=section")
            rules.append((prefix.strip(), section.strip()))
        return cls(rules, default)

    def __call__(self, route: str | None) -> str:
        if not route:
            return self.default
        for prefix, section in self.rules:
            if prefix == "/" or route == prefix or route.startswith(prefix + "/"):
                return section
        return self.default
