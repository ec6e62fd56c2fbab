"""Who an event is about: a signed-in ``User`` and the groups (organization, project) it is working in.

A signed-in user's PostHog distinct id is their user id; their email is a person property; they are aliased
to their account name. Group analytics use the group types ``organization`` (key: the organization's account
name) and ``project`` (key: the project's full handle, ``account/project``); both keys are also the groups'
``name`` property. Anonymous visitors have no ``User`` and get no person profile.
"""

from __future__ import annotations

from dataclasses import dataclass

ORGANIZATION = "organization"
PROJECT = "project"
GROUP_TYPES = (ORGANIZATION, PROJECT)


@dataclass(frozen=True)
class User:
    """A signed-in user, as analytics sees them.

    ``organization``: the organization account name the user is working in (empty: none).
    ``project``: the selected project's full handle, ``account/project`` (empty: none).
    """

    id: str | int
    email: str = ""
    account_name: str = ""
    organization: str = ""
    project: str = ""

    @property
    def distinct_id(self) -> str:
        return str(self.id)

    def groups(self) -> dict[str, str]:
        """``$groups`` for this user's events: group type -> group key, for the groups that are set."""
        groups: dict[str, str] = {}
        if self.organization:
            groups[ORGANIZATION] = self.organization
        if self.project:
            groups[PROJECT] = self.project
        return groups
