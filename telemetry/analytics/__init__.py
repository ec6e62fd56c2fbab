"""Product analytics to PostHog (the Tuist doc's PostHog section), on only when TUIST_POSTHOG_API_KEY and
TUIST_POSTHOG_URL are both set. See docs/analytics.md.

How a service wires it::

    from telemetry.analytics import Analytics, Event, PageViewMiddleware, User, snippet

    analytics = Analytics.from_settings(settings, registry=registry)   # disabled no-op unless both vars set
    app.add_middleware(PageViewMiddleware, analytics=analytics)          # $pageview for HTML page loads

    # on sign-in (identify + alias + group names) and on every request of a signed-in user:
    user = User(id=42, email="a@b.c", account_name="alice", organization="tuist", project="tuist/app")
    analytics.sign_in(user)
    request.state.analytics_user = user        # PageViewMiddleware reads it for the page view

    # in each HTML page's <head> (a string of <script> elements, values escaped; "" when disabled):
    snippet(analytics, route=request.url.path, user=user_or_None)

    analytics.capture(Event.RUN_REPORT, distinct_id=user, properties={"name": "build"})
    analytics.shutdown(timeout=5.0)            # at exit; bounded even with PostHog down
"""

from telemetry.analytics.client import Analytics
from telemetry.analytics.events import EVENTS, Event
from telemetry.analytics.identity import User
from telemetry.analytics.middleware import PageViewMiddleware
from telemetry.analytics.sections import Sections
from telemetry.analytics.snippet import snippet

__all__ = ["EVENTS", "Analytics", "Event", "PageViewMiddleware", "Sections", "User", "snippet"]
