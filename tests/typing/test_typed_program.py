"""A small typed user program: the public API with generics, as an application would write it.

Two checks use this file:

* ``mypy --strict tests/typing/`` (CI: .ci/release-check) type-checks it against the
  installed package's stubs. ``assert_type`` pins what the stubs infer, and every
  ``# type: ignore[code]`` line is a misuse the stubs must reject: with
  ``warn_unused_ignores`` (pyproject.toml), a stub that stops rejecting it fails the check.
* pytest runs it (the ``test_*`` functions), so every line also executes against the
  compiled modules and the annotated results are the real ones.
"""
from __future__ import annotations

import sys
from collections.abc import Hashable, ItemsView, Iterator, KeysView, Mapping, MutableMapping, ValuesView
from typing import TYPE_CHECKING, Any

import pytest

from fastmaps import HashMap, ObjectPool, PoolClosedError, Snapshot, SnapshotMap

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # 3.10: a runtime no-op; mypy checks the 3.11+ branch
    def assert_type(value: object, typ: object, /) -> object:
        return value

from fastmaps._pool import Lease
from fastmaps._snapshot import Batch

if TYPE_CHECKING:  # a TypedDict that exists only in the stub (stats() returns a plain dict)
    from fastmaps._pool import PoolStats


# --- a user's own functions, typed against the abstract mapping types -----------------------

def total(counts: Mapping[str, int]) -> int:
    return sum(counts.values())


def bump(counts: MutableMapping[str, int], word: str) -> None:
    counts[word] = counts.get(word, 0) + 1


# --- HashMap ---------------------------------------------------------------------------------

def test_hashmap_generics() -> None:
    m: HashMap[str, int] = HashMap()
    for w in "the cat and the hat".split():
        bump(m, w)
    assert_type(m["the"], int)
    assert_type(m.get("dog"), int | None)
    assert_type(m.get("dog", 0), int)
    assert_type(m.pop("and"), int)
    assert_type(m.pop("and", None), int | None)
    assert_type(m.setdefault("dog", 5), int)
    assert total(m) == 2 + 1 + 1 + 5
    assert m == {"the": 2, "cat": 1, "hat": 1, "dog": 5}

    keys = m.keys()
    assert_type(keys, KeysView[str])
    values = m.values()
    assert_type(values, ValuesView[int])
    items = m.items()
    assert_type(items, ItemsView[str, int])
    assert keys & {"cat", "cow"} == {"cat"}
    assert sorted(values) == [1, 1, 2, 5]
    assert ("dog", 5) in items
    it: Iterator[str] = reversed(m)
    assert next(it) == "dog"

    built = HashMap([(1, "one"), (2, "two")])
    assert_type(built, HashMap[int, str])
    kw = HashMap(a=1.5)
    assert_type(kw, HashMap[str, float])
    merged = m | {"x": 1.5}
    assert_type(merged, HashMap[str, int | float])
    m |= [("cow", 3)]
    m.update({"eel": 4}, fox=6)
    assert_type(m.popitem(), tuple[str, int])
    keys_only = HashMap.fromkeys(["p", "q"], 0)
    assert_type(keys_only, HashMap[str, int])

    big: HashMap[int, bytes] = HashMap.with_capacity(1000)
    big.reserve(2000)
    big[1] = b"x"
    big.clear(keep_capacity=True)
    big.shrink_to_fit()
    assert big.capacity >= 0 and len(big) == 0
    assert_type(big.stats(), dict[str, Any])

    assert_type(m.copy(), HashMap[str, int])
    if TYPE_CHECKING:  # misuses the stubs must reject (never executed)
        m["k"] = "not an int"  # type: ignore[assignment]
        m[1] = 1  # type: ignore[index]
        unhashable: Hashable = m  # type: ignore[assignment]
        m | [("k", 1)]  # type: ignore[operator]


# --- SnapshotMap, Snapshot, Batch ------------------------------------------------------------

def test_snapshotmap_generics() -> None:
    config: SnapshotMap[str, int] = SnapshotMap(timeout=30, retries=3)
    before = config.snapshot()
    assert_type(before, Snapshot[str, int])
    config["timeout"] = 60
    assert_type(config["timeout"], int)
    assert_type(config.get("missing"), int | None)
    assert before["timeout"] == 30 and config["timeout"] == 60
    assert before.version < config.version
    assert_type(before.to_dict(), dict[str, int])
    assert total(before) == 33 and total(config) == 63
    bump(config, "restarts")

    assert_type(config.keys(), KeysView[str])
    assert_type(before.items(), ItemsView[str, int])
    assert sorted(config.values()) == [1, 3, 60]

    stored, loaded = config.load_or_store("retries", 9)
    assert_type(stored, int)
    assert (stored, loaded) == (3, True)
    old, existed = config.swap("retries", 4)
    assert_type(old, int | None)
    assert config.compare_and_swap("retries", 4, 5)
    assert not config.compare_and_delete("retries", 4)

    batch = config.batch()
    assert_type(batch, "Batch[str, int]")  # a string: Batch has no __class_getitem__
    with batch as b:
        b["a"] = 1
        b["b"] = 2
        del b["restarts"]
        assert_type(b.snapshot(), Snapshot[str, int])
    assert dict(config) == {"timeout": 60, "retries": 5, "a": 1, "b": 2}

    published = config.replace({"only": 1})
    assert_type(published, Snapshot[str, int])
    assert config == {"only": 1}

    merged = config | {"pi": 3.14}
    assert_type(merged, SnapshotMap[str, int | float])
    config |= {"two": 2}
    frozen: Snapshot[str, int] = Snapshot(one=1)
    assert hash(frozen) == hash(Snapshot({"one": 1}))
    assert frozen == {"one": 1}

    if TYPE_CHECKING:  # misuses the stubs must reject (never executed)
        before["timeout"] = 1  # type: ignore[index]
        config["timeout"] = "slow"  # type: ignore[assignment]
        unhashable: Hashable = config  # type: ignore[assignment]


# --- ObjectPool and Lease --------------------------------------------------------------------

def test_objectpool_generics() -> None:
    def reset(buf: bytearray) -> None:
        buf[:] = bytes(len(buf))

    pool: ObjectPool[bytearray] = ObjectPool(lambda: bytearray(16), reset=reset, max_size=2)
    buf = pool.get()
    assert_type(buf, bytearray)
    buf[0] = 7
    pool.put(buf)

    lease = pool.borrow()
    assert_type(lease, Lease[bytearray])
    with lease as b:
        assert_type(b, bytearray)
        assert b[0] == 0        # reset ran on put()
        b[:4] = b"abcd"
    assert_type(lease.obj, bytearray | None)
    with pool.borrow(timeout=1.0, discard_on_error=True) as b2:
        assert bytes(b2[:4]) == bytes(4)

    stats = pool.stats()
    assert_type(stats, "PoolStats")
    assert stats["created"] == 1 and stats["in_use"] == 0
    assert_type(stats["max_size"], int | None)

    lists: ObjectPool[list[int]] = ObjectPool(list)
    with lists:
        got = lists.get()
        got.append(1)
        lists.put(got)
    assert lists.closed
    with pytest.raises(PoolClosedError):
        lists.get()

    if TYPE_CHECKING:  # misuses the stubs must reject (never executed)
        pool.put("not a bytearray")  # type: ignore[arg-type]
        stats["no_such_key"]  # type: ignore[typeddict-item]
