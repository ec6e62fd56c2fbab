"""How the merged view combines a gauge's series across processes: one mode per catalogue gauge.

- ``LIVE_SUM``, the sum over live processes: each process reports its own share of a quantity and the total
  is what the service has — the pool gauges (repo checkout queue, ready and active database connections,
  available and in-use HTTP connections: every process has its own pools).
- ``LIVE_LATEST``, the most recent write over live processes: every process measures the same quantity (the
  counts of projects, organizations and users come from the one database), so the merged view shows one
  value, not N copies or their sum. Each gauge slot keeps the time of its last write for this.

Dead processes' gauges are dropped in both modes (and by compaction): a dead pool holds no connections, and
a dead process's count is older than a live one's. A gauge not in ``GAUGE_MODES`` (a catalogue entry added
later) is merged ``LIVE_LATEST``: it is a value some process measured, where ``LIVE_SUM`` could show N times
a quantity every process measures alike. Keys are the catalogue's spec names (a View that renames a stream
keeps its spec's mode).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from telemetry.catalogue import (
    DB_CONNECTIONS_ACTIVE,
    HTTP_AVAILABLE,
    HTTP_IN_USE,
    ORGANIZATIONS,
    PROJECTS,
    REPO_CHECKOUT_QUEUE,
    REPO_READY,
    USERS,
)


class GaugeMode(enum.Enum):
    LIVE_SUM = "sum over live processes"
    LIVE_LATEST = "latest write over live processes"


GAUGE_MODES: Mapping[str, GaugeMode] = MappingProxyType({
    REPO_CHECKOUT_QUEUE: GaugeMode.LIVE_SUM,
    REPO_READY: GaugeMode.LIVE_SUM,
    DB_CONNECTIONS_ACTIVE: GaugeMode.LIVE_SUM,
    HTTP_AVAILABLE: GaugeMode.LIVE_SUM,
    HTTP_IN_USE: GaugeMode.LIVE_SUM,
    PROJECTS: GaugeMode.LIVE_LATEST,
    ORGANIZATIONS: GaugeMode.LIVE_LATEST,
    USERS: GaugeMode.LIVE_LATEST,
})
DEFAULT_GAUGE_MODE = GaugeMode.LIVE_LATEST


def gauge_mode(spec_name: str) -> GaugeMode:
    return GAUGE_MODES.get(spec_name, DEFAULT_GAUGE_MODE)
