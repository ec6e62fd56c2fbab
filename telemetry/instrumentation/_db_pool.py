"""Reading a SQLAlchemy pool's state at collection time, and classifying statements.

No pool event fires while a checkout waits, so the number of waiting callers is read from the pool's queue:
the threads blocked on ``QueuePool``'s condition variable, or the tasks awaiting ``AsyncAdaptedQueuePool``'s
``asyncio.Queue``. Both are private attributes of stable, long-lived classes; when they are missing (another
pool class, a future SQLAlchemy), the queue length reads 0, which is also the truth for pools that never
queue (``NullPool``, ``StaticPool``, ``SingletonThreadPool``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from telemetry.catalogue import STATEMENT_KINDS

OTHER = "OTHER"
# Leading whitespace, SQL comments and opening parentheses before a statement's first keyword.
_PREFIX = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.DOTALL)
_WORD = re.compile(r"[A-Za-z]+")
_CACHE_LIMIT = 4096
KIND_CACHE: dict[str, str] = {}  # statement text -> kind; read directly on the hot path


def statement_kind(statement: object) -> str:
    """SELECT, INSERT, UPDATE, DELETE or OTHER, from the statement's first keyword.

    ``WITH ...`` (a CTE), DDL, transactions and anything unreadable are OTHER. Results are cached by statement
    text: SQLAlchemy's compiled cache hands the same strings over and over.
    """
    kind = KIND_CACHE.get(statement) if isinstance(statement, str) else None
    if kind is not None:
        return kind
    if not isinstance(statement, str):
        return OTHER
    match = _WORD.match(statement, _PREFIX.match(statement).end())  # type: ignore[union-attr]
    word = match.group().upper() if match else OTHER
    kind = word if word in STATEMENT_KINDS else OTHER
    if len(KIND_CACHE) >= _CACHE_LIMIT:
        KIND_CACHE.clear()  # a workload with endless distinct statements must not grow memory
    KIND_CACHE[statement] = kind
    return kind


@dataclass(frozen=True)
class PoolState:
    """Connections idle in the pool, checked out of it, and callers waiting for one."""

    ready: int
    active: int
    waiting: int


def pool_state(pool: Any) -> PoolState | None:
    """The state of ``pool``, or None for a pool that keeps no counts (``NullPool``, ``StaticPool``, ...)."""
    checkedin = getattr(pool, "checkedin", None)
    checkedout = getattr(pool, "checkedout", None)
    if checkedin is None or checkedout is None:
        return None
    ready = live_idle_connections(pool)
    return PoolState(int(checkedin()) if ready is None else ready, max(int(checkedout()), 0),
                     waiting_callers(pool))


def live_idle_connections(pool: Any) -> int | None:
    """Idle entries in the pool that hold an open DBAPI connection.

    ``checkedin()`` counts entries, and an invalidated or detached entry stays in the queue without a
    connection until the next checkout reconnects it: it is not a connection ready to use. None when the
    queue's items cannot be read.
    """
    queue = getattr(pool, "_pool", None)
    items = getattr(queue, "queue", None)  # sqlalchemy.util.queue.Queue keeps a deque
    if items is None and queue is not None and hasattr(queue, "__dict__"):
        items = getattr(vars(queue).get("_queue"), "_queue", None)  # asyncio.Queue's deque, if created
        if items is None and "_queue" not in vars(queue):
            return 0  # an async pool whose queue was never created holds nothing yet
    if items is None:
        return None
    return sum(1 for record in list(items) if getattr(record, "dbapi_connection", None) is not None)


def waiting_callers(pool: Any) -> int:
    """Callers blocked in the pool's checkout right now."""
    queue = getattr(pool, "_pool", None)
    if queue is None:
        return 0
    condition = getattr(queue, "not_empty", None)  # sqlalchemy.util.queue.Queue (threads)
    if condition is not None:
        waiters = getattr(condition, "_waiters", None)
        return len(waiters) if waiters is not None else 0
    # AsyncAdaptedQueue creates its asyncio.Queue lazily (a memoized property): never create it from here.
    aqueue = vars(queue).get("_queue") if hasattr(queue, "__dict__") else None
    getters = getattr(aqueue, "_getters", None)
    if getters is None:
        return 0
    return sum(1 for future in list(getters) if not future.done())
