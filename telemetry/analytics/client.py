"""``Analytics``: the server-side PostHog client wrapper — gating, identity, groups, sections, custom events,
the property deny-list, drop accounting and a bounded shutdown.

Enabled only when both TUIST_POSTHOG_API_KEY and TUIST_POSTHOG_URL are set. Disabled, it creates no client,
opens no connection and every method returns at its first line; one INFO line at startup says what is missing.

Enabled, it wraps one ``posthog.Client`` (7.x) whose background thread uploads batches to ``{url}/batch/``.
Nothing on the calling thread blocks or does posthog's work: ``capture`` resolves the section and identity
(a few microseconds) and puts the event on a bounded in-memory queue (``queue_size``); a hand-off thread passes
it to posthog, whose event building costs ≈90 µs (mostly reading the OS release per event). When a queue is
full the event is dropped. Every dropped event is counted in ``tuist_analytics_events_dropped_total``
with the reason ``queue_full``, ``send_failed`` (the upload failed after retries), ``error`` (an exception here)
or ``shutdown`` (still queued when the shutdown budget ran out, or captured after shutdown). No method raises.

posthog 7.x has no ``identify()``: ``identify`` sends the ``$identify`` event with the email in ``$set``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from telemetry.analytics.context import current_request
from telemetry.analytics.events import (
    CREATE_ALIAS,
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
from telemetry.config import ENV, Settings
from telemetry.registry import CounterChild, Registry, default_registry

_log = logging.getLogger(__name__)

DROPPED_METRIC = "tuist_analytics_events_dropped_total"
DistinctId = str | int | User

# Properties that may carry nested person/group properties the deny-list also applies to.
_NESTED = ("$set", "$set_once", "$group_set")
# An event on its way to posthog: name, distinct id (None: anonymous, posthog picks a random one),
# properties, groups.
_Item = tuple[str, str | None, dict[str, Any], dict[str, str]]
_STOP: Any = object()
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
        self._client: Any = None
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_size)
        self._worker: threading.Thread | None = None
        self._deadline: float | None = None  # set by shutdown: the hand-off stops sending after it
        registry = registry or default_registry()
        family = registry.counter(DROPPED_METRIC)
        allowed = family.spec.allowed.get(family.spec.labels[0], frozenset())
        self._drops: dict[str, CounterChild] = {reason: family.labels(reason) for reason in sorted(allowed)}

        missing = [ENV[attr] for attr, value in (("posthog_api_key", api_key), ("posthog_url", url))
                   if not value]
        if missing:
            _log.info("PostHog analytics disabled: %s not set (both %s and %s are needed)",
                      " and ".join(missing), ENV["posthog_api_key"], ENV["posthog_url"])
            return
        # Imported here: posthog is an optional extra, and a disabled service never needs it.
        from posthog.client import Client

        self._client = Client(
            api_key, host=self.url, max_queue_size=queue_size, timeout=request_timeout, gzip=gzip,
            flush_interval=flush_interval, max_retries=max_retries, on_error=self._on_error,
            # v0 (/batch/) pinned, so POSTHOG_CAPTURE_MODE in the environment cannot switch the wire protocol.
            before_send=self._before_send, capture_mode="v0",
            # Server-side events carry no IP; no feature-flag polling, no exception autocapture.
            disable_geoip=True, enable_local_evaluation=False)
        self._worker = threading.Thread(target=self._hand_off, name="analytics-hand-off", daemon=True)
        self._worker.start()
        _log.info("PostHog analytics enabled: events go to %s", self.url)

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
        return self._client is not None and not self._closed

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
        client = self._client
        if client is None:
            return False
        if self._closed:
            self._drop("shutdown")
            return False
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
            self._queue.put_nowait((name, user_id, props, dict(groups or {})))
            return True
        except queue.Full:
            self._drop("queue_full")
            return False
        except Exception:
            _log.exception("analytics: capturing %r failed", event)
            self._drop("error")
            return False

    def page_view(self, url: str, *, route: str, user: User | None = None) -> bool:
        """``$pageview`` for a page the server rendered (what ``PageViewMiddleware`` sends)."""
        return self.capture(PAGEVIEW, distinct_id=user, properties={"$current_url": url}, route=route)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> None:
        """Ask the uploader to send what is queued now and wait up to ``timeout`` seconds (tests, jobs)."""
        if self._client is None:
            return
        deadline = time.monotonic() + timeout
        self._wait_handed_off(deadline)
        self._client.flush(timeout_seconds=max(0.0, deadline - time.monotonic()))

    def _wait_handed_off(self, deadline: float) -> None:
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._queue.all_tasks_done.wait(min(remaining, 0.05))

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush what is queued, waiting at most ``timeout`` seconds (default: the configured shutdown
        timeout, 5 s), even when the PostHog host is down or never answers. Events still queued then are
        counted as dropped (``shutdown``). Idempotent."""
        client = self._client
        if client is None or self._closed:
            return
        self._closed = True
        budget = self.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        try:
            # The hand-off thread passes what is queued to posthog until the deadline, then discards the rest.
            self._deadline = deadline - 0.1
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
            if self._worker is not None:
                self._worker.join(max(0.0, self._deadline - time.monotonic()))
            client.flush(timeout_seconds=max(0.0, self._deadline - time.monotonic()))
            pending = self._pending(client) + self._queue.qsize()
            # posthog's own shutdown() drains without a time limit (≈7 s per batch with the host down), so it
            # runs on a daemon thread that the process does not wait for beyond our budget.
            closer = threading.Thread(target=client.shutdown, name="posthog-shutdown", daemon=True)
            closer.start()
            closer.join(max(0.0, deadline - time.monotonic()))
            if pending:
                _log.warning("analytics: %d events still queued after %.1f s; dropped at shutdown",
                             pending, budget)
                self._drop("shutdown", pending)
        except Exception:
            _log.exception("analytics: shutdown failed")

    # -- internals ------------------------------------------------------------------------------------------
    def _hand_off(self) -> None:
        """The hand-off thread: pass queued events to posthog (which builds and queues them for upload)."""
        client = self._client
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                deadline = self._deadline
                if deadline is not None and time.monotonic() > deadline:
                    self._drop("shutdown")
                    continue
                name, distinct_id, properties, groups = item
                if client.capture(name, distinct_id=distinct_id, properties=properties, groups=groups) is None:
                    self._drop("shutdown" if self._closed else "queue_full")
            except Exception:
                _log.exception("analytics: handing an event to posthog failed")
                self._drop("error")
            finally:
                self._queue.task_done()

    @staticmethod
    def _pending(client: Any) -> int:
        try:
            return int(client._analytics_lane.queue.unfinished_tasks)  # private in posthog 7.x; best effort
        except Exception:
            return 0

    def _before_send(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Runs on the calling thread inside posthog's capture: applies the property deny-list."""
        if self.deny_properties:
            props = msg.get("properties")
            if isinstance(props, dict):
                for key in self.deny_properties.intersection(props):
                    del props[key]
                for nested in _NESTED:
                    inner = props.get(nested)
                    if isinstance(inner, dict):
                        for key in self.deny_properties.intersection(inner):
                            del inner[key]
        return msg

    def _on_error(self, error: Exception, batch: list[Any]) -> None:
        """Called by posthog's uploader thread when a batch failed after its retries."""
        self._drop("send_failed", len(batch))
        _log.warning("analytics: %d events not delivered to PostHog: %s", len(batch), error)

    def _drop(self, reason: str, count: int = 1) -> None:
        child = self._drops.get(reason) or self._drops.get("error")
        if child is not None and count > 0:
            child.inc(count)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            _log.warning(message)
