"""Type stubs for fastmaps._pool (ObjectPool, Lease, PoolClosedError)."""
from types import GenericAlias, TracebackType
from typing import Any, Callable, Generic, Literal, TypedDict, TypeVar, final, type_check_only

__all__ = ["ObjectPool", "Lease", "PoolClosedError"]

_T = TypeVar("_T")

DEBUG_BUILD: bool        # a FASTMAPS_DEBUG=1 build (docs/design.md, "Debug builds")

class PoolClosedError(RuntimeError): ...

# Only for type checkers: stats() returns a plain dict with these keys.
@type_check_only
class PoolStats(TypedDict):
    gets: int
    puts: int
    hits: int
    misses: int
    created: int
    discarded: int
    invalid: int
    gc_released: int
    callback_errors: int
    waits: int
    timeouts: int
    idle: int
    in_use: int
    high_water: int
    waiting: int
    max_idle: int | None
    max_size: int | None

@final
class ObjectPool(Generic[_T]):
    def __init__(
        self,
        factory: Callable[[], _T],
        *,
        reset: Callable[[_T], object] | None = ...,
        validate: Callable[[_T], object] | None = ...,
        max_idle: int | None = ...,
        max_size: int | None = ...,
        local_cache: int = ...,
        gc_release: bool = ...,
        gc_generation: Literal[0, 1, 2] = ...,
    ) -> None: ...
    def __class_getitem__(cls, item: Any) -> GenericAlias: ...
    def get(self, timeout: float | None = None) -> _T: ...
    def put(self, obj: _T, /) -> None: ...
    def discard(self, obj: _T) -> None: ...
    def borrow(self, timeout: float | None = None, *, discard_on_error: bool = False) -> Lease[_T]: ...
    def prefill(self, n: int) -> int: ...
    def clear(self) -> int: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def max_size(self) -> int | None: ...
    @property
    def max_idle(self) -> int | None: ...
    def stats(self) -> PoolStats: ...
    def _check(self) -> Literal[True]: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> ObjectPool[_T]: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...

@final
class Lease(Generic[_T]):
    # Lease() raises TypeError: leases are made only by ObjectPool.borrow().
    def __init__(self, *args: object, **kwargs: object) -> None: ...
    def __class_getitem__(cls, item: Any) -> GenericAlias: ...
    def __enter__(self) -> _T: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...
    def discard(self) -> None: ...
    @property
    def obj(self) -> _T | None: ...
    @property
    def pool(self) -> ObjectPool[_T]: ...

@final
class _NullContext:
    """Benchmarks only: a no-op context manager (the ``with`` statement's cost floor)."""
    def __enter__(self) -> _NullContext: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
