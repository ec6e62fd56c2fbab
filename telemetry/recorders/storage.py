"""Remote storage: time and count the eight documented operations.

``operation()`` is a context manager; ``timed()`` a decorator that reads the labels from the wrapped
function's parameters of the same names. Both record a duration and a count whether the operation succeeds
or raises; ``get_object_size`` also records the object's size.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from telemetry.catalogue import STORAGE_OPERATIONS, storage_names
from telemetry.cells import MAX_NUMBER, number, shown
from telemetry.registry import CounterFamily, HistogramFamily, LabelValue, Registry

P = ParamSpec("P")
R = TypeVar("R")


class _Families:
    __slots__ = ("count", "duration", "labels", "size")

    def __init__(self, registry: Registry, op: str) -> None:
        names = storage_names(op)
        self.count: CounterFamily = registry.counter(names.count)
        self.duration: HistogramFamily = registry.histogram(names.duration)
        self.size: HistogramFamily | None = registry.histogram(names.size) if names.size else None
        self.labels = self.count.spec.labels


class Operation:
    """A running storage operation; set ``size_bytes`` inside a ``get_object_size`` block."""

    __slots__ = ("_count", "_duration", "_labels", "_size", "_start", "size_bytes")

    def __init__(self, families: _Families, labels: tuple[LabelValue, ...]) -> None:
        self._count = families.count.labels(*labels)  # validates the labels before the operation runs
        self._duration = families.duration.labels(*labels)
        self._size = families.size  # its series is made only when a size is recorded: no empty histograms
        self._labels = labels
        self.size_bytes: int | None = None
        self._start = 0

    def __enter__(self) -> Operation:
        self._start = time.perf_counter_ns()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        size: int | float | None = self.size_bytes if self._size is not None else None
        # Converted and checked before anything is recorded, so a bad size leaves every series as it was.
        if size is not None and self._size is not None:
            metric = self._size.name
            try:
                size = number(metric, size)
            except TypeError:
                size = None
            if size is None or not 0 <= size <= MAX_NUMBER:
                raise ValueError(f"{metric}: size_bytes must be a number of bytes >= 0, got "
                                 f"{shown(self.size_bytes)}")
        self._duration.observe((time.perf_counter_ns() - self._start) / 1e6)
        self._count.inc()
        if self._size is not None and size is not None:
            self._size.labels(*self._labels).observe(size)


class Storage:
    """Record remote storage operations."""

    def __init__(self, registry: Registry) -> None:
        self._families = {op: _Families(registry, op) for op in STORAGE_OPERATIONS}

    def labels_of(self, operation: str) -> tuple[str, ...]:
        return self._for(operation).labels

    def operation(self, operation: str, **labels: LabelValue) -> Operation:
        """``with storage.operation("check_object_existence", object_key=key): ...``"""
        families = self._for(operation)
        if set(labels) != set(families.labels):
            raise ValueError(f"{families.count.name}: labels are {list(families.labels)}, got {sorted(labels)}")
        return Operation(families, tuple(labels[n] for n in families.labels))

    def timed(self, operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function whose parameters include the operation's labels (``object_key``, …).

        For ``get_object_size`` the function's return value, an int, is recorded as the object's size.
        Works for plain and ``async`` functions.
        """
        families = self._for(operation)

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            signature = inspect.signature(func)
            missing = [n for n in families.labels if n not in signature.parameters]
            if missing:
                raise TypeError(f"{func.__qualname__} has no parameters {missing} for the labels of "
                                f"{families.count.name}")

            def op_for(args: Any, kwargs: Any) -> Operation:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                return Operation(families, tuple(bound.arguments[n] for n in families.labels))

            if inspect.iscoroutinefunction(func):
                @functools.wraps(func)
                async def run_async(*args: Any, **kwargs: Any) -> Any:
                    with op_for(args, kwargs) as op:
                        result = await func(*args, **kwargs)
                        op.size_bytes = _size(result, families)
                        return result
                return run_async  # type: ignore[return-value]

            @functools.wraps(func)
            def run(*args: P.args, **kwargs: P.kwargs) -> R:
                with op_for(args, kwargs) as op:
                    result = func(*args, **kwargs)
                    op.size_bytes = _size(result, families)
                    return result
            return run
        return decorate

    def _for(self, operation: str) -> _Families:
        try:
            return self._families[operation]
        except KeyError:
            raise ValueError(f"unknown storage operation {operation!r}; the documented ones are "
                             f"{list(STORAGE_OPERATIONS)}") from None


def _size(result: object, families: _Families) -> int | None:
    if families.size is None:
        return None
    if isinstance(result, bool) or not isinstance(result, int):
        raise TypeError(f"{families.size.name}: a timed get_object_size must return the size as an int, "
                        f"got {type(result).__name__}")
    return result
