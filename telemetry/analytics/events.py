"""The documented product-analytics events: the custom events the service sends, and PostHog's own.

Custom event names are snake_case nouns-then-verbs, as in the Tuist server. Sending a name that is not listed
here still works (the list documents, it does not gate), but it is logged once so the list stays complete.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class Event(enum.StrEnum):
    """Application events for feature usage. ``analytics.capture(Event.RUN_REPORT, ...)``."""

    USER_CREATE = "user_create"
    USER_AUTHENTICATE = "user_authenticate"
    ORGANIZATION_CREATE = "organization_create"
    PROJECT_CREATE = "project_create"
    RUN_REPORT = "run_report"
    PREVIEW_UPLOAD = "preview_upload"
    PREVIEW_DOWNLOAD = "preview_download"
    AUTHENTICATION_TOKEN_REFRESH_ERROR = "authentication_token_refresh_error"


# What each event means; docs/analytics.md lists the same table (a test keeps them equal).
EVENTS: Mapping[str, str] = MappingProxyType({
    Event.USER_CREATE.value: "A user account was created (sign-up).",
    Event.USER_AUTHENTICATE.value: "A user signed in.",
    Event.ORGANIZATION_CREATE.value: "An organization was created.",
    Event.PROJECT_CREATE.value: "A project was created.",
    Event.RUN_REPORT.value: "The CLI reported a run (command name, CI or not, status).",
    Event.PREVIEW_UPLOAD.value: "A preview build was uploaded.",
    Event.PREVIEW_DOWNLOAD.value: "A preview build was downloaded.",
    Event.AUTHENTICATION_TOKEN_REFRESH_ERROR.value: "Refreshing an authentication token failed.",
})

# PostHog's own events this package sends.
PAGEVIEW = "$pageview"
IDENTIFY = "$identify"
CREATE_ALIAS = "$create_alias"
GROUP_IDENTIFY = "$groupidentify"

# Properties this package sets.
PAGE_SECTION = "page_section"
CURRENT_URL = "$current_url"
PROCESS_PERSON_PROFILE = "$process_person_profile"
