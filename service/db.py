"""The service's database: tables for accounts, users, organizations, projects, tokens, runs and previews, the
engine (SQLite by default, PostgreSQL via DATABASE_URL) and the seed data a fresh machine starts with.

Synchronous SQLAlchemy: Starlette runs the service's sync endpoints on worker threads, which is what a
``QueuePool`` (and its checkout queue, a documented metric) is built for.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from telemetry.recorders import AccountCounts

ACCESS = "access"
REFRESH = "refresh"
ACCESS_TOKEN_SECONDS = 3600


class Base(DeclarativeBase):
    pass


class Account(Base):
    """A handle (``acme``) owned by a user (personal account) or an organization."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    handle: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "user" or "organization"


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    email: Mapped[str] = mapped_column(String(255), unique=True)


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))


class Membership(Base):
    __tablename__ = "memberships"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(64))


class Token(Base):
    """Access and refresh tokens; only a hash of each is stored."""

    __tablename__ = "tokens"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[float] = mapped_column(Float)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(64))
    is_ci: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Float)
    cli_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)


class Preview(Base):
    __tablename__ = "previews"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    display_name: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def make_engine(url: str, *, pool_size: int, max_overflow: int, **kwargs: Any) -> Engine:
    """An engine with a bounded ``QueuePool``; SQLite gets WAL and a busy timeout so worker threads can write
    concurrently without "database is locked" errors."""
    if url.startswith("sqlite"):
        engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=10,
                               connect_args={"timeout": 15, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=10,
                         pool_pre_ping=True, connect_args={"connect_timeout": 2}, **kwargs)


def ping(engine: Engine) -> None:
    """``SELECT 1`` (the readiness check)."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


@dataclass(frozen=True)
class Credentials:
    """A seeded user's handle and tokens (the replayer signs in with these)."""

    user_id: int
    handle: str
    access_token: str
    refresh_token: str
    projects: tuple[str, ...]  # "account/project" slugs the user can reach


SEED_USERS = ("ana", "bo", "chen", "dara")
SEED_ORGANIZATIONS = {"acme": ("ana", "bo", "chen"), "globex": ("chen", "dara")}
SEED_PROJECTS = {"acme": ("ios-app", "android-shell", "design-system"), "globex": ("checkout",),
                 "ana": ("playground",)}


class Database:
    """The engine, a session factory and the service's queries."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session, session.begin():
            yield session

    def create_all(self) -> None:
        Base.metadata.create_all(self.engine)

    def seed(self) -> list[Credentials]:
        """Create the seed accounts once; issue fresh tokens for each seeded user on every start."""
        now = time.time()
        with self.session() as s:
            accounts = {a.handle: a for a in s.scalars(select(Account))}
            for handle in SEED_USERS:
                if handle not in accounts:
                    account = Account(handle=handle, kind="user")
                    s.add(account)
                    s.flush()
                    s.add(User(account_id=account.id, email=f"{handle}@example.com"))
                    accounts[handle] = account
            users = {u.email.split("@")[0]: u for u in s.scalars(select(User))}
            for handle, members in SEED_ORGANIZATIONS.items():
                if handle not in accounts:
                    account = Account(handle=handle, kind="organization")
                    s.add(account)
                    s.flush()
                    organization = Organization(account_id=account.id)
                    s.add(organization)
                    s.flush()
                    for member in members:
                        s.add(Membership(user_id=users[member].id, organization_id=organization.id))
                    accounts[handle] = account
            existing = {(p.account_id, p.name) for p in s.scalars(select(Project))}
            for handle, names in SEED_PROJECTS.items():
                for name in names:
                    if (accounts[handle].id, name) not in existing:
                        s.add(Project(account_id=accounts[handle].id, name=name))
            s.flush()
            credentials = []
            for handle in SEED_USERS:
                user = users[handle]
                access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
                s.add(Token(digest=digest(access), kind=ACCESS, user_id=user.id,
                            expires_at=now + ACCESS_TOKEN_SECONDS))
                s.add(Token(digest=digest(refresh), kind=REFRESH, user_id=user.id, expires_at=now + 30 * 86400))
                credentials.append(Credentials(user.id, handle, access, refresh, self._slugs(s, user.id)))
        return credentials

    def _slugs(self, s: Session, user_id: int) -> tuple[str, ...]:
        own = select(Account.id).join(User, User.account_id == Account.id).where(User.id == user_id)
        orgs = (select(Organization.account_id).join(Membership, Membership.organization_id == Organization.id)
                .where(Membership.user_id == user_id))
        rows = s.execute(select(Account.handle, Project.name).join(Project, Project.account_id == Account.id)
                         .where(Account.id.in_(own.union(orgs))).order_by(Account.handle, Project.name))
        return tuple(f"{handle}/{name}" for handle, name in rows)

    def counts(self) -> AccountCounts:
        """The projects/organizations/users gauges' values."""
        with self.session() as s:
            return AccountCounts(projects=s.scalar(select(func.count()).select_from(Project)) or 0,
                                 organizations=s.scalar(select(func.count()).select_from(Organization)) or 0,
                                 users=s.scalar(select(func.count()).select_from(User)) or 0)
