"""Who is calling: bearer tokens (the CLI) and the session cookie (the dashboard) mapped to user rows, token
refresh, and project access checks."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import (
    ACCESS,
    ACCESS_TOKEN_SECONDS,
    REFRESH,
    Account,
    Membership,
    Organization,
    Project,
    Token,
    User,
    digest,
)

SESSION_COOKIE = "tuist_session"
CLI_VERSION_HEADER = "x-tuist-cli-version"
UNKNOWN_CLI_VERSION = "unknown"
# A label value comes from a client header: only version-shaped values are kept, the rest share one value.
_CLI_VERSION = re.compile(r"\d{1,4}\.\d{1,4}(\.\d{1,4})?([-+][0-9A-Za-z.]{1,16})?")


def cli_version(raw: str | None) -> str:
    return raw if raw and _CLI_VERSION.fullmatch(raw) else UNKNOWN_CLI_VERSION


@dataclass(frozen=True)
class Caller:
    """A signed-in user."""

    user_id: int
    email: str
    handle: str


class RefreshError(Exception):
    """``reason`` is one of the catalogue's token refresh reasons."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def caller_for(s: Session, token: str) -> Caller | None:
    """The user an access token belongs to, if it is valid."""
    row = s.execute(select(User.id, User.email, Account.handle, Token.kind, Token.expires_at, Token.revoked)
                    .join(Token, Token.user_id == User.id).join(Account, Account.id == User.account_id)
                    .where(Token.digest == digest(token))).first()
    if row is None or row.kind != ACCESS or row.revoked or row.expires_at < time.time():
        return None
    return Caller(row.id, row.email, row.handle)


def refresh(s: Session, refresh_token: str) -> tuple[Caller, str, str]:
    """Exchange a refresh token for a new access token and a new refresh token (the old one is revoked)."""
    token = s.get(Token, digest(refresh_token))
    if token is None or token.revoked or token.expires_at < time.time():
        raise RefreshError("invalid_token", "the refresh token is unknown, revoked or expired")
    if token.kind != REFRESH:
        raise RefreshError("invalid_token_type", f"expected a refresh token, got an {token.kind} token")
    token.revoked = True
    now = time.time()
    access, new_refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    s.add(Token(digest=digest(access), kind=ACCESS, user_id=token.user_id, expires_at=now + ACCESS_TOKEN_SECONDS))
    s.add(Token(digest=digest(new_refresh), kind=REFRESH, user_id=token.user_id, expires_at=now + 30 * 86400))
    row = s.execute(select(User.id, User.email, Account.handle).join(Account, Account.id == User.account_id)
                    .where(User.id == token.user_id)).one()
    return Caller(row.id, row.email, row.handle), access, new_refresh


def account_ids(s: Session, user_id: int) -> set[int]:
    """The accounts a user may act for: their own and their organizations'."""
    own = s.scalars(select(User.account_id).where(User.id == user_id)).all()
    orgs = s.scalars(select(Organization.account_id).join(Membership, Membership.organization_id ==
                                                          Organization.id).where(Membership.user_id == user_id))
    return {*own, *orgs}


def project_for(s: Session, user_id: int, account: str, name: str) -> Project | None:
    """The project ``account/name`` if it exists and the user may reach it (None otherwise, so a stranger
    cannot tell a private project from a missing one)."""
    row = s.execute(select(Project).join(Account, Account.id == Project.account_id)
                    .where(Account.handle == account, Project.name == name)).scalar_one_or_none()
    if row is None or row.account_id not in account_ids(s, user_id):
        return None
    return row
