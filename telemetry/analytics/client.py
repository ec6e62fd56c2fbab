"""``Analytics``: the server-side PostHog client wrapper — gating, identity, groups, sections, custom events,
the property deny-list, drop accounting and a bounded shutdown.

Enabled only when both TUIST_POSTHOG_API_KEY and TUIST_POSTHOG_URL are set. Disabled, it creates no client,
opens no connection and every method returns at its first line; one INFO line at startup says what is missing.

Enabled, nothing on the calling thread blocks: ``capture`` resolves the section and identity (a few
microseconds) and puts the event on a bounded in-memory queue (``queue_size``); one background thread
(``sender.Sender``) builds the messages — the same shape posthog-python's ``Client`` sends, with ``$lib``
``posthog-python`` — and uploads them in batches with posthog's transport to ``{url}/batch/``. When the queue is
full the event is dropped. Every dropped event is counted in ``tuist_analytics_events_dropped_total``
with the reason ``queue_full``, ``send_failed`` (the upload failed after retries), ``error`` (an exception here)
or ``shutdown`` (the shutdown deadline came first, or captured after shutdown). No method raises.

posthog 7.x has no ``identify()``: ``identify`` sends the ``$identify`` event with the email in ``$set``;
``alias`` and ``group_identify`` send ``$create_alias`` and ``$groupidentify`` exactly as posthog's methods of
those names do, plus ``page_section``.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from telemetry.analytics.events import (
    CREATE_ALIAS,
    CURRENT_URL,
    EVENTS,
    GROUP_IDENTIFY,
    IDENTIFY,
    PAGE_SECTION,
    PAGEVIEW,
    PROCESS_PERSON_PROFILE,
    Event,
)
from telemetry.analytics.identity import GROUP_TYPES, User
from telemetry.analytics.sections import Sections
from telemetry.analytics.sender import Sender
from telemetry.catalogue import ANALYTICS_DROPPED
from telemetry.config import ENV, Settings, redact
from telemetry.context import current_request
from telemetry.registry import CounterChild, Registry, default_registry

_log = logging.getLogger(__name__)

DROPPED_METRIC = ANALYTICS_DROPPED
DistinctId = str | int | User

# Properties that may carry nested person/group properties the deny-list also applies to.
_NESTED = ("$set", "$set_once", "$group_set")
# An event on its way: name, distinct id (None: anonymous, a random one is made), properties, groups, and the
# time it happened (seconds since the epoch, taken on the calling thread).
_Item = tuple[str, str | None, dict[str, Any], dict[str, str], float]
F = TypeVar("F", bound=Callable[..., Any])


def _never_raises(method: F) -> F:
    """Analytics must never break a request: a failing call is logged and counted (``error``), not raised."""
    @functools.wraps(method)
    def wrapper(self: Analytics, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception:
            _log.exception("analytics: %s failed", method.__name__)
            self._drop("error")
            return None
    return wrapper  # type: ignore[return-value]


class Analytics:
    """Product analytics for one service. Build with ``Analytics.from_settings(settings, registry=...)``.

    Every method is safe to call on the request path: it never blocks on the network and never raises.
    Methods take ``route`` (the request path) to derive ``page_section``; inside a request handled under
    ``PageViewMiddleware`` the current request's route is used when ``route`` is omitted, and outside any
    request the section is ``marketing``.
    """

    def __init__(self, api_key: str = "", url: str = "", *, registry: Registry | None = None,
                 sections: Sections | str | None = None, deny_properties: Iterable[str] | str = (),
                 queue_size: int = 10_000, request_timeout: float = 3.0, shutdown_timeout: float = 5.0,
                 script_url: str = "", gzip: bool = True, flush_interval: float = 5.0,
                 max_retries: int = 3) -> None:
        self.api_key = api_key
        self.url = url.rstrip("/")
        self.sections = sections if isinstance(sections, Sections) else Sections.parse(
            sections if sections is not None else Settings().posthog_sections)
        if isinstance(deny_properties, str):
            deny_properties = deny_properties.split(",")
        self.deny_properties = frozenset(p.strip() for p in deny_properties if p.strip())
        self.shutdown_timeout = shutdown_timeout
        self.script_url = script_url or (f"{self.url}/static/array.js" if self.url else "")
        self._warned: set[str] = set()
        self._closed = False
        self._sender: Sender | None = None
        registry = registry or default_registry()
        family = registry.counter(DROPPED_METRIC)
        allowed = family.spec.allowed.get(family.spec.labels[0], frozenset())
        self._drops: dict[str, CounterChild] = {reason: family.labels(reason) for reason in sorted(allowed)}
        # The process's tally for the shutdown line: events handed to capture (itertools.count's next() is
        # atomic, no lock on the request path) and drops by reason (counted off the request path, locked).
        self._recorded = itertools.count(1)
        self._dropped: dict[str, int] = {}
        self._dropped_lock = threading.Lock()

        missing = [ENV[attr] for attr, value in (("posthog_api_key", api_key), ("posthog_url", url))
                   if not value]
        if missing:
            _log.info("PostHog analytics disabled: %s not set (both %s and %s are needed)",
                      " and ".join(missing), ENV["posthog_api_key"], ENV["posthog_url"])
            return
        # Imported here: posthog is an optional extra, and a disabled service never needs it.
        from posthog.utils import clean
        from posthog.version import VERSION

        from telemetry.analytics.transport import Transport

        self._transport = Transport(self.api_key, self.url, gzip=gzip)
        self._clean: Callable[[Any], Any] = clean
        # What posthog-python's Client adds to every event: the library, and no GeoIP from the server's address.
        self._lib = {"$lib": "posthog-python", "$lib_version": VERSION, "$geoip_disable": True, "$is_server": True}
        self._sender = Sender(self._post, self._message, self._drop, queue_size=queue_size,
                              flush_interval=flush_interval, request_timeout=request_timeout,
                              max_retries=max_retries)
        # A service that exits without shutdown() still gets a short, bounded last delivery (as posthog's
        # Client does at exit), not the full shutdown budget.
        atexit.register(self._at_exit)
        _log.info("PostHog analytics enabled: events go to %s", redact(self.url))

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, registry: Registry | None = None,
                      **kwargs: Any) -> Analytics:
        """Analytics configured from ``Settings`` (the TUIST_POSTHOG_* variables); disabled unless both
        TUIST_POSTHOG_API_KEY and TUIST_POSTHOG_URL are set. ``kwargs`` go to the constructor."""
        s = settings or Settings.from_env()
        options: dict[str, Any] = dict(
            sections=s.posthog_sections, deny_properties=s.posthog_deny_properties,
            queue_size=s.posthog_queue_size, request_timeout=s.posthog_request_timeout,
            shutdown_timeout=s.posthog_shutdown_timeout, script_url=s.posthog_script_url)
        options.update(kwargs)
        return cls(s.posthog_api_key, s.posthog_url, registry=registry, **options)

    @property
    def enabled(self) -> bool:
        return self._sender is not None and not self._closed

    def section(self, route: str | None = None) -> str:
        """The ``page_section`` for ``route`` (default: the current request's route)."""
        if route is None:
            request = current_request()
            route = request.route if request is not None else None
        return self.sections(route)

    # -- identity -------------------------------------------------------------------------------------------
    @_never_raises
    def identify(self, user: User, *, route: str | None = None) -> None:
        """Identify a signed-in user: distinct id = user id, email as a person property (``$identify`` with
        ``$set``, since posthog 7.x has no identify())."""
        person = {"email": user.email} if user.email else {}
        self.capture(IDENTIFY, distinct_id=user, properties={"$set": person}, route=route)

    @_never_raises
    def alias(self, user: User, *, route: str | None = None) -> None:
        """Alias the user's id to their account name (``$create_alias``)."""
        if not user.account_name:
            return
        self.capture(CREATE_ALIAS, distinct_id=user, groups={},
                     properties={"distinct_id": user.distinct_id, "alias": user.account_name}, route=route)

    @_never_raises
    def group_identify(self, group_type: str, key: str, *, name: str | None = None,
                       properties: Mapping[str, Any] | None = None, distinct_id: DistinctId | None = None,
                       route: str | None = None) -> None:
        """Name a group (``$groupidentify``): group types are ``organization`` and ``project``."""
        if group_type not in GROUP_TYPES:
            self._warn_once(f"group type {group_type!r} is not one of {list(GROUP_TYPES)}")
        if not key:
            return
        group_set = {"name": name or key, **(properties or {})}
        self.capture(GROUP_IDENTIFY, distinct_id=distinct_id or f"${group_type}_{key}", groups={},
                     properties={"$group_type": group_type, "$group_key": key, "$group_set": group_set},
                     route=route)

    @_never_raises
    def sign_in(self, user: User, *, route: str | None = None) -> None:
        """Everything to send when a user signs in: identify, alias, and their groups' names."""
        self.identify(user, route=route)
        self.alias(user, route=route)
        for group_type, key in user.groups().items():
            self.group_identify(group_type, key, distinct_id=user, route=route)

    # -- events ---------------------------------------------------------------------------------------------
    def capture(self, event: str | Event, *, distinct_id: DistinctId | None = None,
                properties: Mapping[str, Any] | None = None, groups: Mapping[str, str] | None = None,
                route: str | None = None) -> bool:
        """Queue one event; True when it was queued.

        ``distinct_id``: a ``User`` (their groups become ``$groups`` unless ``groups`` is given), a user id,
        or None for an anonymous visitor (no person profile: ``$process_person_profile`` false, a random id
        that is not stored). Every event gets ``page_section`` from ``route``.
        """
        sender = self._sender
        if sender is None:
            return False
        if self._closed:
            self._drop("shutdown")
            return False
        next(self._recorded)
        try:
            name = event.value if isinstance(event, Event) else event
            if not name.startswith("$") and name not in EVENTS:
                self._warn_once(f"analytics event {name!r} is not in the documented list "
                                "(telemetry.analytics.events.EVENTS)")
            props = dict(properties) if properties else {}
            props.setdefault(PAGE_SECTION, self.section(route))
            user_id: str | None
            if isinstance(distinct_id, User):
                user_id = distinct_id.distinct_id
                if groups is None:
                    groups = distinct_id.groups()
            elif distinct_id is None or distinct_id == "":
                user_id = None
            else:
                user_id = str(distinct_id)
            if user_id is None:
                props[PROCESS_PERSON_PROFILE] = False
                request = current_request()
                user_id = request.anonymous_id if request is not None else None
            return sender.put((name, user_id, props, dict(groups or {}), time.time()))
        except Exception:
            _log.exception("analytics: capturing %r failed", event)
            self._drop("error")
            return False

    def page_view(self, url: str, *, route: str, user: User | None = None) -> bool:
        """``$pageview`` for a page the server rendered (what ``PageViewMiddleware`` sends)."""
        return self.capture(PAGEVIEW, distinct_id=user, properties={CURRENT_URL: url}, route=route)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> bool:
        """Send what is queued now and wait up to ``timeout`` seconds until it was delivered or dropped (tests,
        jobs); True when nothing is left."""
        return self._sender.flush(timeout) if self._sender is not None else True

    def shutdown(self, timeout: float | None = None) -> None:
        """Deliver what is queued, taking at most ``timeout`` seconds (default: the configured shutdown timeout,
        5 s), even when the PostHog host is down or never answers: each remaining upload's timeout and retries
        are cut to the deadline, and events still queued then are counted as dropped (``shutdown``).
        Idempotent; later calls to the other methods do nothing (counted as ``shutdown``)."""
        sender = self._sender
        if sender is None or self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        try:
            sender.close(self.shutdown_timeout if timeout is None else timeout)
        except Exception:
            _log.exception("analytics: shutdown failed")
        self._log_shutdown(sender.sent)

    def _log_shutdown(self, sent: int) -> None:
        """The one line at shutdown: how many events this process handed to analytics, how many reached
        PostHog and how many were dropped, by reason (the dropped counter has them all by now)."""
        recorded = next(self._recorded) - 1
        with self._dropped_lock:
            reasons = dict(sorted(self._dropped.items()))
        lost = sum(reasons.values())
        why = ", ".join(f"{reason}: {n}" for reason, n in reasons.items()) or "none"
        _log.log(logging.WARNING if lost else logging.INFO,
                 "analytics: shutdown: %d of %d events dropped (%s), %d delivered to PostHog",
                 lost, recorded, why, sent,
                 extra={"analytics_dropped": lost, "analytics_dropped_reasons": reasons,
                        "analytics_sent": sent, "analytics_recorded": recorded})

    def _at_exit(self) -> None:
        self.shutdown(timeout=min(1.0, self.shutdown_timeout))

    # -- internals (sender thread) --------------------------------------------------------------------------
    def _message(self, item: _Item) -> dict[str, Any]:
        """The wire message for one event, as posthog-python's Client builds it, minus the deny-listed keys."""
        name, distinct_id, properties, groups, at = item
        if groups:
            properties["$groups"] = groups
        properties.update(self._lib)
        if self.deny_properties:
            self._deny(properties)
        return {"event": name, "distinct_id": distinct_id or str(uuid.uuid4()), "properties": properties,
                "timestamp": datetime.fromtimestamp(at, UTC).isoformat(), "uuid": str(uuid.uuid4())}

    def _deny(self, properties: dict[str, Any]) -> None:
        for key in self.deny_properties.intersection(properties):
            del properties[key]
        for nested in _NESTED:
            inner = properties.get(nested)
            if isinstance(inner, dict):
                for key in self.deny_properties.intersection(inner):
                    del inner[key]

    def _post(self, messages: list[dict[str, Any]], timeout: float) -> None:
        try:
            self._transport.post(messages, timeout)
        except TypeError:
            # A property value JSON cannot encode: send the batch as posthog's Client would, cleaned.
            self._transport.post([self._clean(m) for m in messages], timeout)

    def _drop(self, reason: str, count: int = 1) -> None:
        if reason not in self._drops:
            reason = "error"
        child = self._drops.get(reason)
        if child is not None and count > 0:
            child.inc(count)
            with self._dropped_lock:
                self._dropped[reason] = self._dropped.get(reason, 0) + count

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            _log.warning(message)
