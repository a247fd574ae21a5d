"""SnapshotMap: a mapping whose readers never take a lock.

Structure: an insertion-ordered compact log plus an open-addressing index, both persistent
-------------------------------------------------------------------------------------------
A version of the map (``fm_ver``) has the same two arrays as a CPython dict, made
persistent by cutting each into fixed-size pages held in a shallow 32-way tree:

* the **entry log**: ``{hash, key, value}`` records in insertion order, 32 per leaf page
  (768 bytes).  Deleting a key leaves a hole (``key == NULL``); holes at the end are
  trimmed at once (so the last position always holds the last live entry, which makes
  ``popitem()`` LIFO like dict's), holes elsewhere are compacted away by a migration.
  Every node of the log tree counts the live records below it, so the trim finds the
  last live record in one descent (O(log n), however many holes precede it).
* the **index**: ``int32`` slots, 256 per leaf page, probed exactly like dict's
  (``i = hash & mask``, then ``i = 5*i + 1 + (perturb >>= 5)``).  The slots are
  HashMap's, defined once in ``fm_common.h``: EMPTY (0: a zero-filled page is an empty
  index), DUMMY (-1), or a live record's **tag | (position + 1)** (``fm_slot``): the
  position + 1 in the low bits given by the index's position field ``idmask`` (sized
  when the index is made, ``fm_idmask_for``: twice the slots or twice the log,
  whichever is larger), the tag in the bits above, up to bit 30 (mixed high bits of the
  hash, ``fm_tag``; 9 bits at 10^6 entries, more below).  One XOR, one subtraction and
  one compare tell whether a slot is live with a matching tag, and the record is
  read only then: a miss usually reads no record and a hit reads only its own (dict
  reads the entry of every occupied slot it probes), with no second array to touch
  (tag bytes kept beside the slots cost a second cache line per probe; measured).  A
  lookup reads one index slot and one log record (plus, at 10^6 entries, three inner
  nodes on each side that stay in cache); iteration reads the log sequentially.

Pages and inner nodes are plain C structs with their own reference count; versions share
every page a write did not touch.  A write first finds its slot (this is where a key's
``__eq__`` may run), then, with no user code running, makes the pages it changes
writable: a page is changed in place only when the *holder* of the version is exclusive
(see below) and every node on the path to it has reference count 1; otherwise the page
and the path to it are copied (O(log32 n) small nodes; an entry page copy increfs its 32
keys and values, an index page copy is a 1 KB memcpy).  So one write touches O(1) pages,
including its share of the migration below: no write does O(n) work.

**Migration: index growth and log compaction, spread over writes.**  When an insert would
push the index's fill (live + dummy slots) above 2/3, or a write leaves more holes than
live entries (and more than 32), a *migration* starts, the same protocol as HashMap's
(``_hashmap.pyx``), made persistent.  The version keeps its index as the *old* index
(``old_idx``) and gets a new, empty one (``idx``: O(1), because it is a tree of shared,
never-freed all-EMPTY pages that the first write to each page copies), sized for >= 3x
the live count when growing and with room for every insert the migration can overlap.
Three cursors in the version split the log (``n``: its end, holes included)::

    [0, mig_w)         compacted; indexed in the new index
    [mig_w, mig_r)     the gap: holes only, indexed nowhere
    [mig_r, old_end)   not visited yet; live records indexed in the old index
    [old_end, n)       appended during the migration; indexed in the new index

Every write (insert, delete, update, each item of a bulk write) then advances ``mig_r``
by ``step`` (8) log positions: a hole is skipped; a live record is *moved* down to
``mig_w`` (its key and value references change place: no incref/decref, unless the page
is shared with another version and has to be copied first, 32 increfs) and its slot in
the new index is written (a free slot for a record from the old region, the re-pointed
slot for one appended during the migration).  A log page left wholly inside the gap is
replaced by a shared all-hole page (freed now, copied back if ``mig_w`` reaches it).
When the cursor has nothing left to move, the log ends at ``mig_w``, trailing holes are
trimmed and the old index is dropped; its pages (O(n/256) of them, no Python objects)
are queued and released one inner node (<= 32 pages) per later write, so no write frees
O(n) pages either.  Lookups probe the new index and, on a miss there, the old one, where
a slot pointing outside ``[mig_r, old_end)`` is stale and skipped without reading the
log; a delete marks the slot of whichever index holds the key.  Insertion order is kept (records only move down, in
order, into the gap) and so is LIFO ``popitem`` (the trim skips the gap in one step).
Sizing makes the new index unable to fill before the migration ends (it needs at most
n / (step - 1) writes); if it ever did, the insert would finish the migration at once
(counted by ``_forced_finishes()``, 0 in the tests).  Logs of at most ``sync_below``
(1024) positions migrate at once.  ``_set_tuning(step, sync_below)`` lets tests force the
incremental paths.  Bulk writes (``update``, ``Snapshot(...)``, a batch's ``update``)
rebuild at once only when they add at least half the live count, so that cost is
proportional to their own size; smaller ones migrate incrementally, item by item.
A bulk write first collects its items, before the lock, into a C array of ``{hash, key,
value}`` holding strong references (``_collect_buf``: no tuple or int object per item; a
dict's stored hashes are read where the C API gives them, as dict.update reads them); when
the private version has room for them all it stores them in one pass (``fm_bulk_store``:
log pages filled one after another, the array's references moved into the records, no
lookup for keys known distinct and absent -- an empty target and a version, or a dict read
while no user code ran).
Memory: at rest (no migration) n <= 2*live + 32 log records and index load between
1/6 and 2/3; during a migration the old index is kept as well, and holes deleted during
it are compacted by the next one.
Deleting the last record trims the run of holes before it (so that popitem stays LIFO)
through the live counts: O(log n) even after a long stretch at the end of the log was
emptied.

**Who may write in place.**  A private version (a batch's, one being built by
``update``/``Snapshot(...)``, or the copy a writer makes of the published version) is
exclusive by construction.  The *published* version is changed in place by a single-key
write only on GIL builds, when its Snapshot object is referenced by the map alone (no
reader, iterator, view or user-held snapshot), no reader is in the load window, and the
check and the whole change run with no Python code in between (so the GIL is not
released).  Nobody can observe the change: that is dict speed for the common case of an
unshared map.  Otherwise -- and always on free-threaded builds -- the writer makes a new
Snapshot sharing all pages and publishes it.  Bulk writes always build a private version,
so they stay all-or-nothing.

**No half-built version is reachable.**  A private version is a C struct (``fm_ver``) on
the writer's stack, or inside the batch object whose every operation is guarded; it is
installed into its Snapshot object whole (``_install``: one struct copy, no Python code)
once complete.  So a key's ``__eq__`` running during a build (``Snapshot(...)``,
``update()``, a write's copy), or code that finds the Snapshot through
``gc.get_objects()``, sees at most an empty Snapshot, never a version being filled.  This
is what keeps iterators memory-safe: an iterator caches a pointer to the log page it is
reading, and an insert into a private version may ``PyMem_Realloc`` (or free) that page.
A Snapshot's version therefore changes only (a) from empty to complete, when it is
installed, (b) in place, when nothing but the map references the Snapshot, or (c) to
empty, in the GC's ``tp_clear``; an iterator stops if its Snapshot's log root or length
is not the one it started on, which covers (a) and (c).

Why this structure and not a HAMT or a base plus an overlay, with the measurements
behind it: docs/design.md ("SnapshotMap").

Publication protocol (what is published, how readers load it, how versions are reclaimed)
------------------------------------------------------------------------------------------
* What is published: ``SnapshotMap._cur``, a raw ``PyObject*`` to a fully built
  ``Snapshot`` object (the version's page trees, counts and version number).  The map owns
  one strong reference to it.  No page reachable from a Snapshot that anybody but the map
  can reach is ever written again (see "who may write in place").
* Writers are serialized by one writer lock (``_acquire``/``_release``): a
  ``cython.pymutex`` (``PyMutex``) on free-threaded builds; on GIL builds the owner field
  itself, checked and set with the GIL held (no atomic instruction when uncontended),
  with a queue for the contended case, which exists only while the holder has released
  the GIL (user ``__eq__``, a ``batch()`` block): queued writers block on ``_lock``, the
  first of them on ``_wake``, which the holder's release unlocks once.  A writer builds
  the new version privately and publishes it with one atomic exchange of ``_cur``
  (sequentially consistent on free-threaded builds, so every store that built the
  version happens-before any reader that loads the new pointer).  Keys are hashed before the lock is taken; the new Snapshot
  object is allocated before the lock is taken when the current one looks shared (if a
  key's ``__eq__`` shares it later, it is allocated under the lock with the collector
  paused: up to 3.11 an allocation may run a collection, whose finalizers could write to
  the map and find its lock held; result tuples are made after the lock); every
  reference that might be the last one (replaced values, removed entries, the previous
  version, retired versions, dropped pages) is released after the lock is released, so no
  user ``__del__`` runs while the lock is held.  (A key's or value's ``__eq__`` does run
  under the lock, by design: the find and the change are one atomic step.)
* How readers load it: a reader takes no lock.  It announces itself in the map's
  ``_readers`` counter (atomic increment), loads ``_cur`` (sequentially consistent: with
  the writer's exchange-then-read of ``_readers`` this is the store-buffering pattern,
  where acquire alone would not forbid both sides missing each other), increments the
  Snapshot's reference count, and leaves the counter (atomic decrement).  From then on it
  owns a reference to an immutable version: every lookup, ``len``, iterator and view
  works on that one version for its whole life and may call ``__eq__``/``__hash__``
  freely (its reference makes the version non-exclusive, so no writer changes it in
  place).  On GIL builds the load-and-incref window contains no point where the GIL can
  be released, so the counter operations compile to nothing.
* How old versions are reclaimed: after the exchange the writer (still under the lock)
  reads ``_readers``.  If it is zero, no reader can be between loading the old pointer and
  taking its reference (seq_cst: any reader that has not yet announced itself will load
  the new pointer), so the old Snapshot, and every version retired earlier, is released
  after the lock is dropped.  Otherwise the old Snapshot goes on the map's retired list
  and is released by the next writer that observes zero readers.  Writers never wait for
  readers.  After that, ordinary reference counting frees a version (and the pages only it
  uses) as soon as the last reader, iterator, view or user-held Snapshot lets go; page
  reference counts are atomic on free-threaded builds.  On GIL builds the retired list is
  always empty (``_readers`` stays zero), so the previous version is released at once.
  ``_debug_hold_readers()`` lets tests exercise the retired path on GIL builds.

Writer re-entrancy: the writer lock records its owner thread; a write attempted by the
thread that already holds it (a key's ``__eq__``/``__hash__`` or a value's ``__eq__``
writing to the same map during a write, or a direct write to the map inside its own
``batch()`` block) raises ``RuntimeError`` instead of deadlocking.  Operations on a batch
object are guarded the same way against re-entry from user code.

Views, update and pickle rules: ``keys()``/``values()``/``items()`` of a SnapshotMap, a
Snapshot or a batch are the view types shared with HashMap (``fastmaps._mapping``: dict's
view semantics, implemented once), over one Snapshot read through the C hooks
``_view_len``/``_view_iter``/``_view_contains``/``_view_lookup``; dict's generic update
protocol and its pickle/copy rules for the maps come from that module as well.

Operation -> function
---------------------
C engine: ``fm_snapshot.h`` (declared in ``fm_snapshot.pxd``); shared C (slot encoding,
hash, GC slots, ``FM_ASSERT``): ``fm_common.h``; views, update and pickle rules:
``_mapping.pyx``.

======================================  =================================================
read: ``m[k]``, ``get``, ``in``         ``_load`` (the reader handshake), ``fm_find`` ->
                                        ``fm_probe`` (new index) -> ``fm_probe_old``
write: ``m[k] = v``, ``setdefault``     ``_write_set`` -> ``_acquire``, ``fm_probe``,
                                        ``_write_target``, ``fm_insert`` / ``fm_set_value``,
                                        ``_commit`` -> ``_publish_locked``, ``_release``
``del``, ``pop``                        ``_write_delete`` -> ``fm_delete``, ``fm_trim``
``popitem``                             ``_write_popitem``
atomics (``compare_and_swap`` ...)      ``_write_cas``, ``_write_set``, ``_write_delete``
copy-on-write of a page and its path   ``fm_own``, ``fm_entry_writable``,
                                        ``fm_islot_writable``
a write's share of the migration        ``fm_maintain`` -> ``fm_mig_start`` /
                                        ``fm_migrate``; old index pages: ``fm_sf_run``
bulk: ``update``, ``Snapshot(...)``,    ``_collect_buf`` (before the lock),
``SnapshotMap(x)``, ``|=``              ``_ver_update_buf`` -> ``fm_bulk_store`` or
                                        ``fm_rebuild``
``clear``, ``replace``                  ``SnapshotMap.clear`` / ``.replace`` (a new version
                                        published whole)
``batch()``                             ``Batch`` (a private version, published on exit)
``snapshot()``, ``copy``                ``_load``, ``_snap_share``, ``_fam_join``
iteration                               ``_SnapshotIterator`` (``fm_next_live``)
views                                   ``_view_len``, ``_view_iter``, ``_view_contains``,
                                        ``_view_lookup`` (hooks for ``_mapping``'s views)
``==``                                  ``_snap_eq``
GC                                      ``_snap_traverse``, ``_snap_clear``,
                                        ``_fam_traverse``, ``_map_traverse``, ``_map_clear``
invariants (debug builds: after calls)  ``_check_ver`` (``Snapshot._check``,
                                        ``SnapshotMap._check``), ``_dbg_check_map``
======================================  =================================================
"""

cimport cython
from cpython.object cimport PyObject, PyTypeObject
from cpython.dict cimport PyDict_Size
from cpython.pythread cimport PyThread_get_thread_ident
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t

import collections.abc as _abc
# dict's rules shared with HashMap (see fastmaps._mapping)
from fastmaps._mapping import (update_pairs as _update_pairs, as_pair as _as_pair,
                               reduce_map as _reduce_map, copy_via_reduce as _copy_via_reduce)
from types import GenericAlias as _GenericAlias

from fastmaps.fm_snapshot cimport *
from fastmaps._mapping cimport view_ops, make_view, VIEW_KEYS, VIEW_VALUES, VIEW_ITEMS


# ---------------------------------------------------------------------------------------
# Snapshot
# ---------------------------------------------------------------------------------------

@cython.final
@cython.freelist(32)
@cython.trashcan(True)
cdef class Snapshot:
    """An immutable, read-only mapping: one version of a SnapshotMap (or built directly
    from a mapping or an iterable of pairs).  It never changes and stays valid forever.

    Supports the Mapping API, ``==`` with any mapping, hashing (when all values are
    hashable) and pickling.  Iteration is in insertion order, like dict's.
    ``version`` is the map version it was published as (0 if it was built directly).

    Costs are those of SnapshotMap's reads (see its docstring): a lookup is O(1) average,
    O(n) worst case with colliding hashes; building one from k items is O(k).

    >>> s = Snapshot({"a": 1}, b=2)
    >>> s["b"], len(s), "a" in s, list(s)
    (2, 2, True, ['a', 'b'])
    >>> s == {"b": 2, "a": 1}, hash(s) == hash(Snapshot(b=2, a=1)), s.version
    (True, True, 0)
    >>> s["c"] = 3
    Traceback (most recent call last):
        ...
    TypeError: ... does not support item assignment
    """
    cdef fm_ver v
    cdef uint64_t _version
    cdef Py_hash_t _hash
    cdef bint _hashed          # _hash is valid (zero-initialised: also for __new__ alone)
    cdef bint _frozen
    cdef _Family _fam          # the versions this one may share pages with (see "Cyclic GC")
    cdef fm_member _member     # its link in the family's member list
    cdef object _gc   # present so that the type takes part in cyclic GC (see "Cyclic GC" at the end of the module)

    def __init__(self, mapping=(), /, **kwargs):
        cdef fm_pending pend
        cdef fm_ver tmp
        cdef fm_buf buf
        cdef Py_ssize_t distinct
        if self._frozen:
            raise TypeError("Snapshot is immutable")
        self._frozen = True
        fm_buf_init(&buf)
        fm_ver_init(&tmp)
        fm_pending_init(&pend)
        try:
            distinct = _collect_buf(mapping, kwargs, &buf)
            # built as a private C struct that no other code can reach (keys' __eq__ run
            # here), then installed whole: nobody ever sees a half-built version
            _ver_update_buf(&tmp, &buf, distinct, &pend)
            self.v = tmp
            fm_ver_init(&tmp)
            self._hashed = False
        finally:
            fm_pending_flush(&pend)
            fm_ver_clear(&tmp)              # only if the build failed
            fm_buf_clear(&buf)
        if FM_DEBUG:
            _dbg_check_ver(&self.v, len(self))

    def __dealloc__(self):
        _fam_leave(self)
        fm_ver_clear(&self.v)

    # -- reading -------------------------------------------------------------------------
    def __len__(self):
        return self.v.live

    def __getitem__(self, key):
        cdef fm_entry* e = NULL
        if not fm_find(&self.v, fm_hash_of(key), <PyObject*>key, &e):
            raise KeyError(key)
        return <object>e.value

    def __contains__(self, key):
        cdef fm_entry* e = NULL
        return fm_find(&self.v, fm_hash_of(key), <PyObject*>key, &e) != 0

    @cython.binding(False)
    def get(self, key, default=None, /):
        """Return the value for key if key is present, else default (never KeyError).

        Complexity: O(1) average (dict's probing over the paged index); O(n) worst case
        when many keys' hashes collide.

        >>> s = Snapshot(a=1)
        >>> s.get("a"), s.get("b"), s.get("b", 0)
        (1, None, 0)
        """
        cdef fm_entry* e = NULL
        if not fm_find(&self.v, fm_hash_of(key), <PyObject*>key, &e):
            return default
        return <object>e.value

    def __iter__(self):
        return _make_iter(self, 0)

    def __reversed__(self):
        return iter(list(_make_iter(self, 0))[::-1])

    def keys(self):
        """A set-like view of the keys (of this immutable snapshot), in insertion order.

        Complexity: O(1) to create (nothing is copied); iterating it is O(n), ``in`` is
        O(1) average.

        >>> Snapshot(a=1, b=2).keys() & {"b", "c"}
        {'b'}
        """
        return make_view(VIEW_KEYS, self, &_VIEW_OPS)

    def values(self):
        """A view of the values, in insertion order.

        Complexity: O(1) to create; iterating it, and ``in`` (a scan), are O(n).

        >>> list(Snapshot(a=1, b=2).values())
        [1, 2]
        """
        return make_view(VIEW_VALUES, self, &_VIEW_OPS)

    def items(self):
        """A set-like view of the (key, value) pairs, in insertion order.

        Complexity: O(1) to create; iterating it is O(n); ``in`` is O(1) average (a key
        lookup, then a comparison of the value).

        >>> s = Snapshot(a=1, b=2)
        >>> list(s.items()), ("a", 1) in s.items(), ("a", 2) in s.items()
        ([('a', 1), ('b', 2)], True, False)
        """
        return make_view(VIEW_ITEMS, self, &_VIEW_OPS)

    @property
    def version(self):
        """The version number this snapshot was published as (0 if built directly, or
        for a map's initial contents).

        Complexity: O(1).

        >>> m = SnapshotMap(a=1)
        >>> m["b"] = 2
        >>> m.snapshot().version, Snapshot(a=1).version
        (1, 0)
        """
        return self._version

    def to_dict(self):
        """A new dict with the same items, in the same (insertion) order.

        Complexity: O(n).

        >>> Snapshot([("b", 1), ("a", 2)]).to_dict()
        {'b': 1, 'a': 2}
        """
        cdef fm_entry* e = NULL
        cdef fm_entry* leaf = NULL
        cdef Py_ssize_t p = 0
        cdef dict d = {}
        while True:
            e = fm_next_live(&self.v, &p, self.v.n, &leaf)
            if e == NULL:
                break
            d[<object>e.key] = <object>e.value
        return d

    def copy(self):
        """Snapshots are immutable: returns self.

        Complexity: O(1).

        >>> s = Snapshot(a=1)
        >>> s.copy() is s
        True
        """
        return self

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        import copy
        return Snapshot(copy.deepcopy(self.to_dict(), memo))

    def __reduce__(self):
        return (Snapshot, (self.to_dict(),))

    def __eq__(self, other):
        r = _snap_eq(self, other)
        if r < 0:
            return NotImplemented
        return bool(r)

    def __ne__(self, other):
        r = _snap_eq(self, other)
        if r < 0:
            return NotImplemented
        return not r

    def __hash__(self):
        # (free-threaded builds: threads may compute and publish the same value at once;
        # the flag is stored with release after the hash and loaded with acquire, so a
        # thread that sees it set also sees the hash)
        cdef Py_hash_t h
        if fm_flag_load_acquire(&self._hashed):
            return fm_hash_cache_load(&self._hash)
        h = hash(frozenset(self.items()))
        if h == -1:
            h = -2
        fm_hash_cache_store(&self._hash, h)
        fm_flag_store_release(&self._hashed, True)
        return h

    def __repr__(self):
        return _repr("Snapshot", self)

    __class_getitem__ = classmethod(_GenericAlias)

    def _check(self, rehash=False):
        """Verify the log and index invariants (tests); raises AssertionError, returns True."""
        _check_ver(&self.v, rehash)
        return True


cdef Snapshot _snap_alloc():
    cdef Snapshot s = Snapshot.__new__(Snapshot)
    s._frozen = True
    return s


cdef Snapshot _snap_alloc_locked():
    """_snap_alloc under the writer lock: the allocation cannot start a collection (whose
    finalizers could write to the map and find its lock held)."""
    cdef int was = fm_gc_pause()
    try:
        return _snap_alloc()
    finally:
        fm_gc_resume(was)


cdef Snapshot _snap_share(Snapshot src):
    """A new Snapshot object sharing src's pages (in src's family)."""
    cdef Snapshot s = _snap_alloc()
    fm_ver_share(&s.v, &src.v)
    _fam_join(s, src)
    return s


cdef int _install(Snapshot s, fm_ver* tmp, Snapshot src) except -1:
    """Move the private version *tmp, made from src's pages, into s (a new Snapshot
    nobody else has seen filled), in src's family.  No user code runs."""
    _fam_join(s, src)
    s.v = tmp[0]
    fm_ver_init(tmp)                # (the references moved to s)
    s._hashed = False
    return 0


# -- families (see "Cyclic GC" at the end of the module) ------------------------------------

@cython.final
cdef class _Family:
    """The versions that may share pages with one another: every version made from
    another's pages (a write's new version, a copy, a snapshot of a batch, a replace's
    adopted version) joins that one's family.  Reports to the cyclic GC, once each, the
    records of the pages its members share."""
    cdef fm_family f           # the member list (members unlink themselves before dying)
    cdef object _gc            # present so that the type takes part in cyclic GC


cdef int _fam_join(Snapshot s, Snapshot src) except -1:
    """Make s (a new Snapshot, in no family yet) a member of src's family, creating that
    family if src has none.  No collection can start here (it may run under the lock)."""
    cdef _Family f = src._fam
    cdef int was
    if s._fam is not None or s is src or src.v.log == NULL:
        return 0                        # (a version without pages shares nothing)
    if f is None:
        was = fm_gc_pause()
        try:
            f = _Family.__new__(_Family)
        finally:
            fm_gc_resume(was)
        _fam_link(src, f)
    _fam_link(s, f)
    return 0


cdef void _fam_link(Snapshot s, _Family f) noexcept:
    fm_member_link(&f.f, &s._member, &s.v)
    s._fam = f


cdef void _fam_leave(Snapshot s) noexcept:
    """Unlink s from its family's list (its _fam reference is dropped by the caller)."""
    if s._fam is not None:
        fm_member_unlink(&s._fam.f, &s._member)


cdef int _snap_eq(Snapshot a, object other) except -2:
    """1 equal, 0 different, -1 not comparable."""
    cdef Snapshot b
    cdef fm_entry* e = NULL
    cdef fm_entry* f = NULL
    cdef fm_entry* leaf = NULL
    cdef Py_ssize_t p = 0
    if isinstance(other, SnapshotMap):
        other = _load(<SnapshotMap>other)
    if isinstance(other, Snapshot):
        b = <Snapshot>other
        if a.v.live != b.v.live:
            return 0
        if a.v.log == b.v.log and a.v.idx == b.v.idx:
            return 1
        while True:
            e = fm_next_live(&a.v, &p, a.v.n, &leaf)
            if e == NULL:
                return 1
            if not fm_find(&b.v, e.hash, e.key, &f):
                return 0
            if not (f.value == e.value or fm_eq(e.value, f.value, 2)):
                return 0
    if isinstance(other, dict):
        # like dict == dict: the dict's own storage (a subclass's overridden items(),
        # __len__ or __getitem__ are not consulted)
        if PyDict_Size(other) != a.v.live:
            return 0
        for k, v in dict.items(other):
            if not fm_find(&a.v, fm_hash_of(k), <PyObject*>k, &e):
                return 0
            if not (e.value == <PyObject*>v or fm_eq(e.value, <PyObject*>v, 2)):
                return 0
        return 1
    if isinstance(other, _abc.Mapping):
        if len(other) != a.v.live:
            return 0
        for k, v in other.items():
            if not fm_find(&a.v, fm_hash_of(k), <PyObject*>k, &e):
                return 0
            if not (e.value == <PyObject*>v or fm_eq(e.value, <PyObject*>v, 2)):
                return 0
        return 1
    return -1


cdef object _repr(str name, object obj):
    if Py_ReprEnter(obj):
        return f"{name}({{...}})"
    try:
        if isinstance(obj, SnapshotMap):
            s = _load(<SnapshotMap>obj)
        else:
            s = obj
        if (<Snapshot>s).v.live == 0:
            return f"{name}()"
        return f"{name}({{" + ", ".join([f"{k!r}: {v!r}" for k, v in _make_iter(s, 2)]) + "})"
    finally:
        Py_ReprLeave(obj)


# -- bulk building -------------------------------------------------------------------------



cdef Py_ssize_t _collect_buf(object mapping, dict kwargs, fm_buf* b) except -1:
    """The (hash, key, value) of a mapping / iterable of pairs plus keyword arguments, into
    a C array (see fm_buf), read by dict's update rules without holding any lock (keys' __hash__, a mapping's keys()/__getitem__ run here).  Returns how many
    leading items are known distinct: all of a version's, or of a dict's read directly
    when no user code ran that could have changed the dict while it was read (so it
    yielded each key once: see fm_buf_from_dict); else 0."""
    cdef Py_ssize_t distinct = 0, pos = 0, i = 0
    cdef fm_entry* e = NULL
    cdef fm_entry* leaf = NULL
    cdef Snapshot s
    if isinstance(mapping, SnapshotMap) and type(mapping).__iter__ is SnapshotMap.__iter__:
        mapping = _load(<SnapshotMap>mapping)
    if isinstance(mapping, Snapshot):
        s = <Snapshot>mapping
        fm_buf_reserve(b, s.v.live)
        while True:
            e = fm_next_live(&s.v, &pos, s.v.n, &leaf)
            if e == NULL:
                break
            fm_buf_push(b, e.hash, e.key, e.value)
        distinct = b.n
    elif isinstance(mapping, dict) and type(mapping).__iter__ is dict.__iter__:
        # the dict's own storage, as dict.update reads it
        if fm_buf_from_dict(b, mapping):
            distinct = b.n
    elif type(mapping) is list or type(mapping) is tuple:
        for item in mapping:
            if type(item) is tuple and fm_tuple_size(item) == 2:
                k = <object>fm_tuple_item(item, 0)
                v = <object>fm_tuple_item(item, 1)
            else:
                k, v = _as_pair(item, i, "SnapshotMap")
            fm_buf_push(b, fm_hash_of(k), <PyObject*>k, <PyObject*>v)
            i += 1
    else:
        for k, v in _update_pairs(mapping, "SnapshotMap"):
            fm_buf_push(b, fm_hash_of(k), <PyObject*>k, <PyObject*>v)
    if kwargs:
        for k, v in kwargs.items():
            fm_buf_push(b, fm_hash_of(k), <PyObject*>k, <PyObject*>v)
    return distinct


cdef bint _ver_update_buf(fm_ver* v, fm_buf* b, Py_ssize_t distinct,
                          fm_pending* pend) except -1:
    """Store collected items (_collect_buf) into the private version *v, in order: in one
    pass (fm_bulk_store) when the version has room for them all after fm_reserve, else
    item by item with the incremental migration.  The first `distinct` items must be
    absent from *v and distinct (pass 0 unless *v is empty).  Returns whether anything
    changed.  If a key's __eq__ raises, *v is still a valid version holding the earlier
    items (the caller discards it)."""
    cdef Py_ssize_t i, pos, slot, freeslot
    cdef int changed = 0
    cdef fm_entry* t
    cdef fm_entry* e = NULL
    if b.n == 0:
        return False
    fm_reserve(v, b.n, pend)
    if fm_bulk_fits(v, b.n):
        fm_bulk_store(v, b.items, b.n, distinct, pend, &changed)
        if distinct >= b.n:
            b.n = 0             # every item was appended: all references moved to *v
        return changed != 0
    for i in range(b.n):
        t = &b.items[i]
        if fm_probe(v, t.hash, t.key, &pos, &slot, &freeslot):
            e = fm_entry_at(v, pos)
            if e.value != t.value:
                fm_set_value(v, pos, t.value, pend)
                changed = 1
        else:
            fm_insert(v, t.hash, t.key, t.value, freeslot, pend)
            changed = 1
    return changed != 0



# ---------------------------------------------------------------------------------------
# iterators and views
# ---------------------------------------------------------------------------------------

@cython.final
cdef class _SnapshotIterator:
    """Iterator over one immutable version (keys, values or items), in insertion order.

    It caches a pointer to the current log page (_leaf) between steps.  That is safe
    because the version it holds a reference to never changes: a version is filled while
    private and installed whole, and the map changes its published version in place only
    when nothing else references its Snapshot.  As a further guard, the cache is used only
    while the Snapshot still has the log root and length it had when the iterator was made
    (a Snapshot emptied by the GC's tp_clear, or one made with __new__ and filled later by
    __init__, ends the iteration)."""
    cdef Snapshot _snap        # None once exhausted (or made with __new__ alone)
    cdef fm_entry* _leaf
    cdef fm_node* _root        # _snap.v.log when the iterator was made
    cdef Py_ssize_t _end       # _snap.v.n then
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _remaining
    cdef int _kind
    cdef PyObject* _result

    def __dealloc__(self):
        fm_xdecref(self._result)
        self._result = NULL

    def __iter__(self):
        return self

    def __next__(self):
        cdef fm_entry* e = NULL
        if self._snap is None:
            raise StopIteration
        if self._snap.v.log != self._root or self._snap.v.n != self._end:
            e = NULL                    # not the version it started on: stop (see above)
        else:
            e = fm_next_live(&self._snap.v, &self._pos, self._end, &self._leaf)
        if e == NULL:
            self._snap = None           # like dict's iterators: let go of the version
            self._leaf = NULL
            self._remaining = 0
            raise StopIteration
        self._remaining -= 1
        if self._kind == 0:
            return <object>e.key
        if self._kind == 1:
            return <object>e.value
        return fm_item_tuple(&self._result, e.key, e.value)

    def __length_hint__(self):
        return self._remaining if self._remaining > 0 else 0

    def __reduce__(self):
        # like dict's iterators: an iterator over a list of what remains, read by a twin
        # at the same position (this one does not move)
        cdef _SnapshotIterator twin
        if self._snap is None:
            return (iter, ((),))
        twin = _make_iter(self._snap, self._kind)
        twin._root, twin._end = self._root, self._end
        twin._pos, twin._remaining = self._pos, self._remaining
        return (iter, (list(twin),))


cdef _SnapshotIterator _make_iter(Snapshot s, int kind):
    cdef _SnapshotIterator it
    if s is None:               # a view made by hand over None (typed arguments admit None)
        raise TypeError("a SnapshotMap view reads a Snapshot, not None")
    it = _SnapshotIterator.__new__(_SnapshotIterator)
    it._snap = s
    it._kind = kind
    it._remaining = s.v.live
    it._root = s.v.log
    it._end = s.v.n
    it._pos = 0
    it._leaf = NULL
    return it


# keys(), values() and items() are fastmaps._mapping's views over one immutable version
# (a Snapshot: a SnapshotMap's or a batch's views read the one current when they were made);
# these hooks are how they read it, with no lock (the version never changes).

cdef Py_ssize_t _view_len(object s) except -1:
    return (<Snapshot>s).v.live


cdef object _view_iter(object s, int kind, bint rev):
    if rev:
        return iter(list(_make_iter(<Snapshot>s, kind))[::-1])
    return _make_iter(<Snapshot>s, kind)        # VIEW_* are the iterator kinds


cdef int _view_contains(object s, object key) except -1:
    cdef fm_entry* e = NULL
    return fm_find(&(<Snapshot>s).v, fm_hash_of(key), <PyObject*>key, &e) != 0


cdef object _view_lookup(object s, object key, object missing):
    cdef fm_entry* e = NULL
    if not fm_find(&(<Snapshot>s).v, fm_hash_of(key), <PyObject*>key, &e):
        return missing
    return <object>e.value


cdef view_ops _VIEW_OPS
_VIEW_OPS.length = _view_len
_VIEW_OPS.iterate = _view_iter
_VIEW_OPS.contains = _view_contains
_VIEW_OPS.lookup = _view_lookup


cdef object _MISSING = object()     # a C global: no module-dict lookup per use


# ---------------------------------------------------------------------------------------
# SnapshotMap
# ---------------------------------------------------------------------------------------

cdef class SnapshotMap:
    """A mapping whose readers never take a lock.

    Every read (``m[k]``, ``get``, ``in``, ``len``, ``==``) and every iterator or view, for
    its whole life, works on exactly one published immutable version.  Writes are
    serialized by a lock and each publishes a new version (a single-key write copies only
    the pages it touches; bulk writes publish once).  ``snapshot()`` is O(1).

    Key semantics and order are dict's: hash once per operation, ``1 == 1.0 == True`` is
    one key, the first-inserted key object is kept, NaN found by identity,
    ``KeyError(key)``, ``TypeError`` for unhashable keys; iteration is in insertion order
    (an updated key keeps its place) and ``popitem()`` removes the last inserted item.

    Costs (n = number of items).  A version is dict's two arrays (entry log and index)
    cut into pages held in 32-way trees, so every page access walks O(log32 n) tree
    levels: 3 at 10^6 items, at most 6; the complexities below count that as O(1).
    A lookup is O(1) average, O(n) worst case when many keys' hashes collide.  A
    single-key write is O(1): when the version is shared it copies at most one log page
    and one index page with their tree paths, plus a bounded step (8 log positions) of a
    running migration; index growth and log compaction are spread over writes, so no
    single write is O(n) unless many keys' hashes collide.

    >>> m = SnapshotMap(a=1)
    >>> m["b"] = 2
    >>> s = m.snapshot()            # O(1): an immutable version, no copy
    >>> del m["a"]
    >>> s, m
    (Snapshot({'a': 1, 'b': 2}), SnapshotMap({'b': 2}))
    >>> s.version, m.version        # one publish per write
    (1, 2)
    """
    cdef PyObject* _cur          # published Snapshot (owned reference); see module docstring
    cdef Py_ssize_t _readers     # readers inside the load window (free-threaded builds)
    cdef uintptr_t _owner        # thread id holding the writer lock, 0 if none
    cdef uint64_t _version       # last published version (writer lock)
    cdef Py_ssize_t _inplace     # writes applied in place to an unshared version (stats)
    cdef Py_ssize_t _copied      # writes that published a new Snapshot (stats)
    cdef fm_pending _retired     # Snapshots retired while readers were in the window
    cdef cython.pymutex _lock    # free-threaded: the writer lock; GIL builds: the queue of
                                 # writers waiting for the holder (see _acquire)
    cdef cython.pymutex _wake    # GIL builds: kept locked; the holder's release unlocks it
                                 # once to wake the first queued writer
    cdef bint _queued            # GIL builds: a writer holds _lock, waiting to take over
    cdef bint _waking            # GIL builds: that writer is blocked on _wake
    cdef object _gc              # present so that the type takes part in cyclic GC
    cdef object __weakref__

    def __cinit__(self, *args, **kwargs):
        fm_pending_init(&self._retired)
        fm_incref(<PyObject*>_EMPTY)
        self._cur = <PyObject*>_EMPTY
        if not FM_FREE_THREADED:
            self._wake.acquire()         # uncontended: a new lock

    def __init__(self, mapping=(), /, **kwargs):
        cdef Snapshot s
        cdef fm_pending pend
        cdef bint fresh = False
        if self._version == 0 and (<Snapshot>self._cur).v.live == 0:
            # fresh map: the initial contents are version 0, built before the lock (their
            # keys' __hash__/__eq__, a mapping's keys() run there) ...
            s = Snapshot(mapping, **kwargs)
            if not s.v.live:
                return
            fm_pending_init(&pend)
            _acquire(self)
            try:
                # ... and published only if the map is still fresh: a write made meanwhile
                # (by that user code, or by another thread) is kept, and the contents are
                # then applied over it as an update, as dict.__init__ does
                if self._version == 0 and (<Snapshot>self._cur).v.live == 0:
                    fresh = True
                    s._version = 0
                    _publish_locked(self, s, &pend)
            finally:
                _release(self)
                fm_pending_flush(&pend)
            if not fresh:
                SnapshotMap.update(self, s)
        else:
            # (SnapshotMap's own update: as dict.__init__, a subclass's update() is not
            # called)
            SnapshotMap.update(self, mapping, **kwargs)
        if FM_DEBUG:
            _dbg_check_map(self)

    def __dealloc__(self):
        cdef PyObject* cur = self._cur
        self._cur = NULL
        fm_xdecref(cur)
        fm_pending_flush(&self._retired)

    # -- reading (lock-free) --------------------------------------------------------------
    def __getitem__(self, key):
        cdef Py_hash_t h = fm_hash_of(key)
        cdef Snapshot s = _load(self)
        cdef fm_entry* e = NULL
        if not fm_find(&s.v, h, <PyObject*>key, &e):
            raise KeyError(key)
        return <object>e.value

    def __contains__(self, key):
        cdef Py_hash_t h = fm_hash_of(key)
        cdef Snapshot s = _load(self)
        cdef fm_entry* e = NULL
        return fm_find(&s.v, h, <PyObject*>key, &e) != 0

    @cython.binding(False)
    def get(self, key, default=None, /):
        """Return the value for key if key is present, else default (never KeyError).

        Complexity: O(1) average, lock-free (it reads the version published when it was
        called); O(n) worst case when many keys' hashes collide.

        >>> m = SnapshotMap(a=1)
        >>> m.get("a"), m.get("b"), m.get("b", 0)
        (1, None, 0)
        """
        cdef Py_hash_t h = fm_hash_of(key)
        cdef Snapshot s = _load(self)
        cdef fm_entry* e = NULL
        if not fm_find(&s.v, h, <PyObject*>key, &e):
            return default
        return <object>e.value

    def __len__(self):
        return _load(self).v.live

    def __iter__(self):
        """Iterate the keys of the version published when iter() was called."""
        return _make_iter(_load(self), 0)

    def __reversed__(self):
        return reversed(_load(self))

    def keys(self):
        """A set-like view of the keys of the version current now (it never changes:
        later writes to the map do not show in it).

        Complexity: O(1) to create, lock-free; iterating it is O(n), ``in`` is O(1)
        average.

        >>> m = SnapshotMap(a=1)
        >>> k = m.keys()
        >>> m["b"] = 2
        >>> k, list(m.keys())
        (snapshot_keys(['a']), ['a', 'b'])
        """
        return make_view(VIEW_KEYS, _load(self), &_VIEW_OPS)

    def values(self):
        """A view of the values of the version current now (it never changes).

        Complexity: O(1) to create, lock-free; iterating it, and ``in`` (a scan), are
        O(n).

        >>> m = SnapshotMap(a=1, b=2)
        >>> v = m.values()
        >>> m["a"] = 10
        >>> list(v), list(m.values())
        ([1, 2], [10, 2])
        """
        return make_view(VIEW_VALUES, _load(self), &_VIEW_OPS)

    def items(self):
        """A set-like view of the (key, value) pairs of the version current now (it never
        changes).

        Complexity: O(1) to create, lock-free; iterating it is O(n), ``in`` is O(1)
        average.

        >>> m = SnapshotMap(a=1)
        >>> items = m.items()
        >>> del m["a"]
        >>> list(items), ("a", 1) in items, list(m.items())
        ([('a', 1)], True, [])
        """
        return make_view(VIEW_ITEMS, _load(self), &_VIEW_OPS)

    def snapshot(self):
        """The current version as an immutable Snapshot.

        Complexity: O(1), lock-free: no copy is made (later writes to the map copy the
        pages they change instead).

        >>> m = SnapshotMap(a=1)
        >>> s = m.snapshot()
        >>> m["a"] = 2
        >>> s["a"], m["a"], s == {"a": 1}
        (1, 2, True)
        """
        return _load(self)

    @property
    def version(self):
        """A counter that increases by one with every publish (every write that changes
        the map; an ``update()`` or a batch publishes once).  The initial contents are
        version 0.

        Complexity: O(1), lock-free.

        >>> m = SnapshotMap(a=1)
        >>> m.version
        0
        >>> m["a"] = 2; m.update(b=3, c=4); m.version
        2
        """
        return _load(self)._version

    def __eq__(self, other):
        r = _snap_eq(_load(self), other)
        if r < 0:
            return NotImplemented
        return bool(r)

    def __ne__(self, other):
        r = _snap_eq(_load(self), other)
        if r < 0:
            return NotImplemented
        return not r

    __hash__ = None

    def __repr__(self):
        return _repr(type(self).__name__, self)

    def __reduce_ex__(self, protocol):
        # as for a dict subclass (fastmaps._mapping.reduce_map): pickle and copy record the
        # new map in their memo before its items are set, so a map that contains itself
        # round-trips
        return _reduce_map(self, iter(_load(self).items()))

    def __or__(self, other):
        """self | other: a new SnapshotMap with self's items updated by other's (as dict's
        ``|``, a plain SnapshotMap also for subclasses).  O(1) + O(len(other))."""
        if not isinstance(other, (dict, SnapshotMap, Snapshot)):
            return NotImplemented
        new = SnapshotMap.copy(self)
        new.update(other)
        return new

    def __ror__(self, other):
        if not isinstance(other, (dict, SnapshotMap, Snapshot)):
            return NotImplemented
        new = SnapshotMap(other)
        new.update(self)
        return new

    @classmethod
    def fromkeys(cls, iterable, value=None, /):
        """A new map with keys from iterable, all mapped to value (as dict.fromkeys; for a
        subclass, its ``__setitem__`` stores each key).  O(len(iterable)).

        >>> SnapshotMap.fromkeys("ab", 0)
        SnapshotMap({'a': 0, 'b': 0})
        """
        m = cls()
        if type(m) is SnapshotMap:
            m.update([(k, value) for k in iterable])        # one version
        else:
            for k in iterable:
                m[k] = value
        return m

    def copy(self):
        """A new SnapshotMap with the same contents (a plain SnapshotMap also for
        subclasses, as dict.copy returns a dict); its version starts at 0.

        Complexity: O(1): the pages are shared, and each map copies the pages it later
        writes.

        >>> m = SnapshotMap(a=1)
        >>> c = m.copy()
        >>> c["b"] = 2
        >>> m, c
        (SnapshotMap({'a': 1}), SnapshotMap({'a': 1, 'b': 2}))
        """
        cdef SnapshotMap m = SnapshotMap()
        cdef Snapshot s = _load(self)
        cdef fm_pending pend
        cdef Snapshot c
        if s.v.live:
            c = _snap_share(s)
            fm_pending_init(&pend)
            _acquire(m)
            try:
                _publish_locked(m, c, &pend)
            finally:
                _release(m)
                fm_pending_flush(&pend)
        if FM_DEBUG:
            _dbg_check_map(m)
        return m

    def __copy__(self):
        if type(self) is SnapshotMap:
            return self.copy()
        return _copy_via_reduce(self)   # a subclass: keeps its type and state

    __class_getitem__ = classmethod(_GenericAlias)

    # -- single-key writes ---------------------------------------------------------------
    def __setitem__(self, key, value):
        cdef Py_hash_t h = fm_hash_of(key)
        _write_set(self, h, key, value, False)
        if FM_DEBUG:
            _dbg_check_map(self)

    def __delitem__(self, key):
        cdef Py_hash_t h = fm_hash_of(key)
        cdef object value = _write_delete(self, h, key, None, False)
        if value is _MISSING:
            raise KeyError(key)
        if FM_DEBUG:
            _dbg_check_map(self)

    def pop(self, key, default=_MISSING, /):
        """Remove key and return its value.  If key is absent, return default, or raise
        KeyError when no default is given.  Publishes a new version if key was present.

        Complexity: O(1) average (a lookup, then a copy-on-write of at most one log page
        and one index page, plus a bounded step of a running migration: the log is
        compacted incrementally); worst case O(n) only when hashes collide.

        >>> m = SnapshotMap(a=1)
        >>> m.pop("a"), m.pop("a", None)
        (1, None)
        >>> m.pop("a")
        Traceback (most recent call last):
            ...
        KeyError: 'a'
        """
        cdef Py_hash_t h
        if _load(self).v.live == 0:        # like dict: an empty map does not hash the key
            if default is _MISSING:
                raise KeyError(key)
            return default
        h = fm_hash_of(key)
        value = _write_delete(self, h, key, None, False)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        if FM_DEBUG:
            _dbg_check_map(self)
        return value

    def popitem(self):
        """Remove and return the last inserted (key, value) pair (LIFO, like dict);
        KeyError if the map is empty.

        Complexity: O(1) (the last log position always holds the last live item, so no
        key is compared), plus a bounded step of a running migration; removing the last
        item skips the trailing holes before it (see the module docstring).

        >>> m = SnapshotMap(a=1, b=2)
        >>> m.popitem(), m
        (('b', 2), SnapshotMap({'a': 1}))
        """
        r = _write_popitem(self)
        if FM_DEBUG:
            _dbg_check_map(self)
        return r

    def setdefault(self, key, default=None, /):
        """Return the value for key; if key is absent, first insert it with the value
        default (publishing a new version).  The check and the insert are atomic.

        Complexity: O(1) average when key is present (nothing is published, but the
        writer lock is taken); otherwise an insert: O(1) average (the index grows
        incrementally, a bounded step per write, to keep its load at most 2/3).

        >>> m = SnapshotMap()
        >>> m.setdefault("a", 1), m.setdefault("a", 2), m
        (1, 1, SnapshotMap({'a': 1}))
        """
        # (not through self.load_or_store: as dict's, a subclass's methods are not called)
        r = _write_set(self, fm_hash_of(key), key, default, True)
        if FM_DEBUG:
            _dbg_check_map(self)
        return default if r is _MISSING else r

    def update(self, other=(), /, **kwargs):
        """Add or overwrite the items of a mapping or iterable of (key, value) pairs, then
        the keyword arguments, in order, published as one version (readers see all of
        them or none).  Nothing is published if nothing changes, or if a key's
        ``__eq__`` raises (the exception propagates).  Returns None.

        Complexity: O(k) average for k items (keys are hashed before the lock is taken;
        each page the update touches is copied once); when k is at least half the map's
        size the index is rebuilt at once to make room, O(n + k) = O(k).

        >>> m = SnapshotMap(a=1)
        >>> m.update({"b": 2}, c=3)
        >>> m.update([("a", 0)])
        >>> m, m.version
        (SnapshotMap({'a': 0, 'b': 2, 'c': 3}), 2)
        """
        cdef fm_buf buf
        cdef Py_ssize_t distinct
        cdef Snapshot s
        cdef Snapshot cur
        cdef fm_pending pend
        cdef fm_ver tmp
        cdef bint changed
        fm_buf_init(&buf)
        try:
            # hashed (and the keys' references taken) before the lock: see _collect_buf
            distinct = _collect_buf(other, kwargs, &buf)
            if buf.n == 0:
                return
            s = _snap_alloc()
            fm_ver_init(&tmp)
            fm_pending_init(&pend)
            _acquire(self)
            try:
                cur = <Snapshot>self._cur
                # the new version is built as a private C struct (keys' __eq__ run here
                # and cannot reach it), then installed into s whole and published; the
                # collected keys are known absent only when the map is empty
                fm_ver_share(&tmp, &cur.v)
                changed = _ver_update_buf(&tmp, &buf, distinct if tmp.live == 0 else 0,
                                          &pend)
                if changed:
                    _install(s, &tmp, cur)
                    self._version += 1
                    s._version = self._version
                    self._copied += 1
                    _publish_locked(self, s, &pend)
                else:
                    fm_ver_release(&tmp, &pend)
            finally:
                _release(self)
                fm_pending_flush(&pend)
                fm_ver_clear(&tmp)      # the partial version, if a key's __eq__ raised
        finally:
            fm_buf_clear(&buf)          # (after the lock: may run __del__)
        if FM_DEBUG:
            _dbg_check_map(self)

    def __ior__(self, other):
        SnapshotMap.update(self, other)     # as dict's |=: not a subclass's update()
        return self

    def clear(self):
        """Remove every item: one atomic publish of an empty version (none if the map is
        already empty).  Returns None.

        Complexity: O(1) under the writer lock.  Afterwards the calling thread frees the
        previous version in O(n) (as dict.clear frees its items), unless a Snapshot,
        iterator or view still holds it: then whoever lets go of it last frees it.

        >>> m = SnapshotMap(a=1, b=2)
        >>> s = m.snapshot()
        >>> m.clear()
        >>> m, len(s)
        (SnapshotMap(), 2)
        """
        cdef Snapshot s = _snap_alloc()
        cdef fm_pending pend
        fm_pending_init(&pend)
        _acquire(self)
        try:
            if (<Snapshot>self._cur).v.live:
                self._version += 1
                s._version = self._version
                _publish_locked(self, s, &pend)
        finally:
            _release(self)
            fm_pending_flush(&pend)
        if FM_DEBUG:
            _dbg_check_map(self)

    def replace(self, mapping=(), /, **kwargs):
        """Atomically replace the whole content with mapping's (a mapping or iterable of
        pairs, plus keyword arguments); returns the previous version as a Snapshot.
        Always publishes a new version.

        Complexity: O(1) for a Snapshot or SnapshotMap argument without keyword arguments
        (its pages are adopted, shared); otherwise O(k) for k items, spent building the
        new version before the lock is taken.  The lock is held for O(1).

        >>> m = SnapshotMap(a=1)
        >>> old = m.replace(b=2)
        >>> old, m
        (Snapshot({'a': 1}), SnapshotMap({'b': 2}))
        """
        cdef Snapshot src
        cdef Snapshot s
        cdef Snapshot prev
        cdef fm_pending pend
        if isinstance(mapping, SnapshotMap):
            mapping = _load(<SnapshotMap>mapping)
        if isinstance(mapping, Snapshot) and not kwargs:
            src = <Snapshot>mapping
        else:
            src = Snapshot(mapping, **kwargs)
        s = _snap_share(src)
        fm_pending_init(&pend)
        _acquire(self)
        try:
            prev = <Snapshot>self._cur
            self._version += 1
            s._version = self._version
            _publish_locked(self, s, &pend)
        finally:
            _release(self)
            fm_pending_flush(&pend)
        if FM_DEBUG:
            _dbg_check_map(self)
        return prev

    def batch(self):
        """A context manager (a new :class:`Batch`) for an atomic group of writes.

        The block holds the map's writer lock (other writers wait; readers do not).  The
        batch's reads (b[k], get, in, len, iteration) see its own writes; the map's reads
        keep showing the published version.  On a clean exit all writes are published as
        one version; if the block raises, they are discarded.  Writing to the map itself
        (not through b) from inside the block raises RuntimeError.

        Complexity: O(1) to create, to enter (once the writer lock is free) and to
        publish on exit.  Operations inside cost what they cost on the map, applied in
        place to the pages the batch already copied; a discarded batch frees the pages it
        wrote, O(pages written).

        >>> m = SnapshotMap(x=0, y=0)
        >>> with m.batch() as b:
        ...     b["x"] = 1
        ...     del b["y"]
        ...     b.update(z=3)
        >>> m, m.version
        (SnapshotMap({'x': 1, 'z': 3}), 1)
        """
        cdef Batch b = Batch.__new__(Batch)
        b._map = self
        return b

    # -- Go sync.Map style per-key atomics -----------------------------------------------
    def load_or_store(self, key, value):
        """Return (existing value, True) if key is present (nothing is stored); otherwise
        store value, publish, and return (value, False).  Atomic: the check and the store
        run under the writer lock.

        Complexity: O(1) average when key is present; otherwise an insert: O(1) average
        (the index grows incrementally, a bounded step per write).

        >>> m = SnapshotMap()
        >>> m.load_or_store("a", 1), m.load_or_store("a", 2)
        ((1, False), (1, True))
        """
        cdef Py_hash_t h = fm_hash_of(key)
        r = _write_set(self, h, key, value, True)
        if FM_DEBUG:
            _dbg_check_map(self)
        if r is _MISSING:
            return (value, False)
        return (r, True)

    def load_and_delete(self, key):
        """Delete key; return (its value, True), or (None, False) if it was absent.

        Complexity: as ``pop()``: O(1) average (the log is compacted incrementally).

        >>> m = SnapshotMap(a=1)
        >>> m.load_and_delete("a"), m.load_and_delete("a")
        ((1, True), (None, False))
        """
        cdef Py_hash_t h = fm_hash_of(key)
        value = _write_delete(self, h, key, None, False)
        if value is _MISSING:
            return (None, False)
        if FM_DEBUG:
            _dbg_check_map(self)
        return (value, True)

    def swap(self, key, value):
        """Store value for key (inserting key if absent); return (previous value, True),
        or (None, False) if key was absent.

        Complexity: O(1) average for a present key (at most one log page is copied); for
        a new key an insert: O(1) average (the index grows incrementally).

        >>> m = SnapshotMap(a=1)
        >>> m.swap("a", 2), m.swap("b", 3), m
        ((1, True), (None, False), SnapshotMap({'a': 2, 'b': 3}))
        """
        cdef Py_hash_t h = fm_hash_of(key)
        r = _write_set(self, h, key, value, False)
        if FM_DEBUG:
            _dbg_check_map(self)
        if r is _MISSING:
            return (None, False)
        return (r, True)

    def compare_and_swap(self, key, old, new):
        """If key is present and its value is old (identity, then ==), store new and
        return True; otherwise return False (an absent key is never swapped).

        Complexity: O(1) average (only an existing value changes: no rebuild, at most one
        log page copied); O(n) worst case when many keys' hashes collide.

        >>> m = SnapshotMap(a=1)
        >>> m.compare_and_swap("a", 1, 2), m.compare_and_swap("a", 1, 3)
        (True, False)
        >>> m.compare_and_swap("b", None, 1), m
        (False, SnapshotMap({'a': 2}))
        """
        cdef Py_hash_t h = fm_hash_of(key)
        ok = _write_cas(self, h, key, old, new)
        if FM_DEBUG:
            _dbg_check_map(self)
        return ok

    def compare_and_delete(self, key, old):
        """If key is present and its value is old (identity, then ==), delete it and
        return True; otherwise return False.

        Complexity: as ``pop()``: O(1) average (the log is compacted incrementally).

        >>> m = SnapshotMap(a=1, b=2)
        >>> m.compare_and_delete("a", 0), m.compare_and_delete("a", 1), m
        (False, True, SnapshotMap({'b': 2}))
        """
        cdef Py_hash_t h = fm_hash_of(key)
        ok = _write_delete(self, h, key, old, True) is not _MISSING
        if FM_DEBUG:
            _dbg_check_map(self)
        return ok

    # -- tests / debugging ---------------------------------------------------------------
    def _check(self, rehash=False):
        """Verify invariants of the published version (tests); raises AssertionError."""
        cdef Snapshot s = _load(self)
        assert s._version <= self._version or fm_owner_load(&self._owner) != 0, "version"
        _check_ver(&s.v, rehash)
        return True

    def _debug_hold_readers(self, Py_ssize_t delta):
        """Tests only: pretend `delta` readers are inside the load window (negative to
        leave), so that writers retire old versions instead of releasing them."""
        fm_readers_add(&self._readers, delta)

    def _debug_retired(self):
        """Tests only: number of versions waiting on the retired list."""
        return self._retired.n

    def _debug_stats(self):
        """Tests / benchmarks: {"in_place": writes applied to an unshared published
        version, "copied": writes that published a new Snapshot, "migrating": whether the
        published version is in the middle of an incremental migration}."""
        return {"in_place": self._inplace, "copied": self._copied,
                "migrating": _load(self).v.old_idx != NULL}


fm_empty_init()
cdef Snapshot _EMPTY = _snap_alloc()


def _set_tuning(step=None, sync_below=None):
    """Testing hook: set the number of log positions each write advances a running
    migration (>= 2) and the log length up to which a migration runs at once.  Returns the
    previous values as a dict.  Not part of the public API."""
    global fm_t_step, fm_t_sync_below
    prev = {"step": fm_t_step, "sync_below": fm_t_sync_below}
    if step is not None:
        if step < 2:
            raise ValueError("step must be >= 2")
        fm_t_step = step
    if sync_below is not None:
        fm_t_sync_below = sync_below
    return prev


def _pending_teardown():
    """Tests: index nodes of dropped old indexes still queued for incremental release."""
    return fm_sf_n


def _forced_finishes():
    """Tests: inserts that tripped the safety valve (the new index filled up, or the log
    outgrew the index's position field, before a migration ended; expected 0)."""
    return fm_forced


cdef inline Snapshot _load(SnapshotMap m):
    """Lock-free load of the published version, returned as an owned reference."""
    cdef Snapshot s
    fm_readers_enter(&m._readers)
    s = <Snapshot>fm_load_published(&m._cur)     # the cast-assignment takes the reference
    fm_readers_exit(&m._readers)
    return s


cdef int _acquire(SnapshotMap m) except -1:
    """Take the writer lock (see "Publication protocol" in the module docstring)."""
    cdef uintptr_t me = <uintptr_t>PyThread_get_thread_ident()
    if fm_owner_load(&m._owner) == me:
        raise RuntimeError(
            "SnapshotMap: re-entrant write (this thread already holds the map's writer "
            "lock: a key's __hash__/__eq__ or a value's __eq__ wrote to the map during a "
            "write, or the map was written directly inside its own batch() block)")
    if FM_FREE_THREADED:
        m._lock.acquire()
        fm_owner_store(&m._owner, me)
        return 0
    # GIL builds: _owner is read and set with the GIL held and nothing in between can
    # release it, so a free, unqueued lock is taken without any atomic operation
    if m._owner == 0 and not m._queued:
        m._owner = me
        return 0
    # held (its holder released the GIL: user code, a batch block) or writers queued:
    # queue on _lock (blocking releases the GIL); the first in the queue waits on _wake,
    # which each release of the holder unlocks once while _waking is set
    m._lock.acquire()
    m._queued = True
    while m._owner != 0:
        m._waking = True
        m._wake.acquire()
    m._owner = me
    m._queued = False
    m._lock.release()
    return 0


cdef inline void _release(SnapshotMap m) noexcept:
    if FM_FREE_THREADED:
        fm_owner_store(&m._owner, 0)
        m._lock.release()
        return
    m._owner = 0
    if m._waking:
        m._waking = False
        m._wake.release()


cdef int _publish_locked(SnapshotMap m, Snapshot s, fm_pending* pend) except -1:
    """Publish s (writer lock held).  The previous version, and earlier retired ones when
    no reader is inside the load window, go to pend (released after the lock)."""
    cdef PyObject* old
    # room first, so that nothing can fail once s is published
    fm_pending_reserve(pend, 1 + m._retired.n)
    fm_pending_reserve(&m._retired, 1)
    fm_incref(<PyObject*>s)
    old = fm_exchange_published(&m._cur, <PyObject*>s)
    if fm_readers_load(&m._readers) == 0:
        fm_pending_push_obj(pend, old)
        while m._retired.n:
            fm_pending_move_last(&m._retired, pend)
    else:
        fm_pending_push_obj(&m._retired, old)
    return 0


# -- single-key writes on the published version -------------------------------------------
#
# Each write runs in two phases under the writer lock: (1) find the key in the published
# version `cur` (a key's or value's __eq__ may run here, and may release the GIL); (2)
# with no user code running, change either `cur` itself -- when it is exclusive: GIL
# build, its Snapshot referenced only by the map and our local `cur`, no reader in the
# load window -- or a new Snapshot sharing all of cur's pages, which is then published.

cdef inline Snapshot _maybe_prealloc(SnapshotMap m):
    """Allocate the new Snapshot before the lock when the current one looks shared (a
    GC-tracked allocation may run arbitrary code, which must not happen under the lock)."""
    # (on the raw pointer: casting it to object would take a reference and make the
    # count always look shared)
    if FM_FREE_THREADED or fm_refcnt_ptr(m._cur) > 1:
        return _snap_alloc()
    return None


cdef inline bint _exclusive(SnapshotMap m, Snapshot cur) noexcept:
    # 2 = the map's reference + our local `cur`
    return (not FM_FREE_THREADED) and fm_refcnt(cur) == 2 and fm_readers_load(&m._readers) == 0


cdef inline Snapshot _write_target(SnapshotMap m, Snapshot cur, Snapshot s, fm_ver* tmp,
                                  fm_pending* pend):
    """Where a single-key write goes (writer lock held): None to change the published
    version cur in place (see _exclusive), else a Snapshot (s if preallocated, else one
    allocated now without starting a collection) into which _commit installs *tmp, a
    private C struct sharing cur's pages that the write changes.  Whatever _commit
    needs is reserved here, before the write changes anything."""
    if _exclusive(m, cur):
        if m._retired.n:
            fm_pending_reserve(pend, m._retired.n)
        return None
    if s is None:
        s = _snap_alloc_locked()
    fm_ver_share(tmp, &cur.v)
    return s


cdef inline int _commit(SnapshotMap m, Snapshot cur, Snapshot s, fm_ver* tmp,
                        fm_pending* pend) except -1:
    if s is None:
        m._version += 1
        cur._version = m._version
        cur._hashed = False
        m._inplace += 1
        while m._retired.n:              # no reader in the window (checked): reclaim
            fm_pending_move_last(&m._retired, pend)
    else:
        _install(s, tmp, cur)
        m._version += 1
        s._version = m._version
        m._copied += 1
        _publish_locked(m, s, pend)
    return 0


cdef object _write_set(SnapshotMap m, Py_hash_t h, object key, object value,
                         bint only_if_absent):
    """Single-key store.  Returns the previous value, or _MISSING if key was absent."""
    cdef Snapshot s = _maybe_prealloc(m)
    cdef Snapshot cur
    cdef fm_pending pend
    cdef fm_ver tmp
    cdef Py_ssize_t pos, slot, freeslot
    cdef fm_ver* v
    cdef fm_entry* e = NULL
    cdef int found
    cdef object result = _MISSING
    tmp.log = tmp.idx = tmp.old_idx = NULL     # (fm_ver_share fills the rest)
    fm_pending_init(&pend)
    _acquire(m)
    try:
        cur = <Snapshot>m._cur
        found = fm_probe(&cur.v, h, <PyObject*>key, &pos, &slot, &freeslot)
        if found:
            e = fm_entry_at(&cur.v, pos)
            result = <object>e.value
            if only_if_absent or e.value == <PyObject*>value:
                return result
        s = _write_target(m, cur, s, &tmp, &pend)
        v = &cur.v if s is None else &tmp
        if found:
            fm_set_value(v, pos, <PyObject*>value, &pend)
        else:
            fm_insert(v, h, <PyObject*>key, <PyObject*>value, freeslot, &pend)
        _commit(m, cur, s, &tmp, &pend)
    finally:
        _release(m)
        fm_pending_flush(&pend)
        if tmp.log != NULL or tmp.idx != NULL or tmp.old_idx != NULL:
            fm_ver_clear(&tmp)          # only if the write failed
    return result


cdef object _write_delete(SnapshotMap m, Py_hash_t h, object key, object old,
                           bint compare):
    """Single-key delete (if compare: only when the value is old, identity then ==).
    Returns the removed value, or _MISSING."""
    cdef Snapshot s = _maybe_prealloc(m)
    cdef Snapshot cur
    cdef fm_pending pend
    cdef fm_ver tmp
    cdef Py_ssize_t pos, slot
    cdef fm_ver* v
    cdef fm_entry* e = NULL
    cdef object result = _MISSING
    tmp.log = tmp.idx = tmp.old_idx = NULL     # (fm_ver_share fills the rest)
    fm_pending_init(&pend)
    _acquire(m)
    try:
        cur = <Snapshot>m._cur
        if not fm_probe(&cur.v, h, <PyObject*>key, &pos, &slot, NULL):
            return _MISSING
        e = fm_entry_at(&cur.v, pos)
        if compare and not (e.value == <PyObject*>old or fm_eq(e.value, <PyObject*>old, 2)):
            return _MISSING
        # the version cannot change while we hold the lock; cur keeps e alive
        result = <object>e.value
        s = _write_target(m, cur, s, &tmp, &pend)
        v = &cur.v if s is None else &tmp
        fm_delete(v, pos, slot, &pend)
        _commit(m, cur, s, &tmp, &pend)
    finally:
        _release(m)
        fm_pending_flush(&pend)
        if tmp.log != NULL or tmp.idx != NULL or tmp.old_idx != NULL:
            fm_ver_clear(&tmp)          # only if the write failed
    return result


cdef object _write_popitem(SnapshotMap m):
    cdef Snapshot s = _maybe_prealloc(m)
    cdef Snapshot cur
    cdef fm_pending pend
    cdef fm_ver tmp
    cdef Py_ssize_t pos, slot
    cdef fm_ver* v
    cdef fm_entry* e = NULL
    cdef object key = _MISSING
    cdef object value = None
    tmp.log = tmp.idx = tmp.old_idx = NULL     # (fm_ver_share fills the rest)
    fm_pending_init(&pend)
    _acquire(m)
    try:
        cur = <Snapshot>m._cur
        if cur.v.live:
            # the last log position always holds the last live entry; its index slot is
            # found by position, so no user code runs.  The result tuple is made after
            # the lock is released (an allocation can start a collection, whose
            # finalizers may write to this map).
            pos = cur.v.n - 1
            e = fm_entry_at(&cur.v, pos)
            key = <object>e.key
            value = <object>e.value
            slot = fm_slot_of(&cur.v, e.hash, pos)
            s = _write_target(m, cur, s, &tmp, &pend)
            v = &cur.v if s is None else &tmp
            fm_delete(v, pos, slot, &pend)
            _commit(m, cur, s, &tmp, &pend)
    finally:
        _release(m)
        fm_pending_flush(&pend)
        if tmp.log != NULL or tmp.idx != NULL or tmp.old_idx != NULL:
            fm_ver_clear(&tmp)          # only if the write failed
    if key is _MISSING:
        raise KeyError("popitem(): SnapshotMap is empty")
    return (key, value)


cdef bint _write_cas(SnapshotMap m, Py_hash_t h, object key, object old, object new) except -1:
    cdef Snapshot s = _maybe_prealloc(m)
    cdef Snapshot cur
    cdef fm_pending pend
    cdef fm_ver tmp
    cdef Py_ssize_t pos, slot
    cdef fm_ver* v
    cdef fm_entry* e = NULL
    cdef bint ok = False
    tmp.log = tmp.idx = tmp.old_idx = NULL     # (fm_ver_share fills the rest)
    fm_pending_init(&pend)
    _acquire(m)
    try:
        cur = <Snapshot>m._cur
        if fm_probe(&cur.v, h, <PyObject*>key, &pos, &slot, NULL):
            e = fm_entry_at(&cur.v, pos)
            # the version cannot change while we hold the lock; cur keeps e alive
            ok = e.value == <PyObject*>old or fm_eq(e.value, <PyObject*>old, 2)
        if ok and e.value != <PyObject*>new:
            s = _write_target(m, cur, s, &tmp, &pend)
            v = &cur.v if s is None else &tmp
            fm_set_value(v, pos, <PyObject*>new, &pend)
            _commit(m, cur, s, &tmp, &pend)
    finally:
        _release(m)
        fm_pending_flush(&pend)
        if tmp.log != NULL or tmp.idx != NULL or tmp.old_idx != NULL:
            fm_ver_clear(&tmp)          # only if the write failed
    return ok


# ---------------------------------------------------------------------------------------
# Batch
# ---------------------------------------------------------------------------------------

@cython.final
@cython.no_gc_clear
cdef class Batch:
    """The builder of ``SnapshotMap.batch()``; usable only inside its ``with`` block, from
    the thread that entered it.  Supports the mutable mapping API; reads see the batch's
    own writes.  A clean exit publishes every write as one version; an exception leaving
    the block discards them.

    The batch writes a private version in place; its first write to a page it shares
    with the published version copies that page (O(1), see SnapshotMap's costs).

    >>> m = SnapshotMap(a=1, b=2)
    >>> with m.batch() as b:
    ...     b["c"] = 3
    ...     del b["a"]
    ...     inside = len(b), len(m)     # the batch sees its writes; readers do not
    >>> inside, m
    ((2, 2), SnapshotMap({'b': 2, 'c': 3}))
    >>> try:
    ...     with m.batch() as b:
    ...         b.clear()
    ...         raise ValueError("abort")
    ... except ValueError:
    ...     pass
    >>> m
    SnapshotMap({'b': 2, 'c': 3})
    >>> b["x"] = 1
    Traceback (most recent call last):
        ...
    RuntimeError: batch used outside its with-block
    """
    cdef SnapshotMap _map      # None for a Batch made with __new__ alone (unusable)
    cdef Snapshot _base
    cdef Snapshot _kin         # the Snapshot whose family the batch's versions join
    cdef fm_ver _v             # the private version (shares pages with _base until written)
    cdef bint _dirty
    cdef fm_pending _pend
    cdef int _state            # 0 new, 1 active, 2 finished, 3 entering
    cdef int _reading          # nested read operations in progress
    cdef bint _writing         # a write operation is in progress
    cdef uintptr_t _thread

    def __cinit__(self):
        fm_pending_init(&self._pend)

    def __dealloc__(self):
        if self._state == 1:
            # abandoned inside its block (e.g. a generator that was never resumed):
            # discard the writes and free the writer lock
            self._state = 2
            fm_pending_push_node(&self._pend, self._v.log)
            fm_pending_push_node(&self._pend, self._v.idx)
            fm_pending_push_node(&self._pend, self._v.old_idx)
            fm_ver_init(&self._v)
            _release(self._map)
        else:
            fm_ver_clear(&self._v)
        fm_pending_flush(&self._pend)

    def __enter__(self):
        if self._map is None:
            raise TypeError("a SnapshotMap batch is made by SnapshotMap.batch(), not "
                            "Batch.__new__")
        if self._state != 0:
            raise RuntimeError("a SnapshotMap batch can be entered only once")
        self._state = 3                  # _acquire may wait (and let other code run)
        try:
            _acquire(self._map)
        except BaseException:
            self._state = 0
            raise
        self._base = <Snapshot>self._map._cur
        self._kin = self._base
        fm_ver_share(&self._v, &self._base.v)
        self._thread = <uintptr_t>PyThread_get_thread_ident()
        self._state = 1
        return self

    def __exit__(self, exc_type, exc, tb):
        cdef Snapshot s
        if self._state != 1:
            raise RuntimeError("batch is not active")
        if <uintptr_t>PyThread_get_thread_ident() != self._thread:
            raise RuntimeError("a batch must be exited by the thread that entered it")
        if self._writing or self._reading:
            raise RuntimeError("batch exited during one of its own operations")
        self._state = 2
        try:
            if exc_type is None and self._dirty:
                s = _snap_alloc_locked()
                _install(s, &self._v, self._kin)     # the batch's references move to s
                self._map._version += 1
                s._version = self._map._version
                self._map._copied += 1
                _publish_locked(self._map, s, &self._pend)
            else:
                fm_ver_release(&self._v, &self._pend)
        finally:
            self._base = self._kin = None
            _release(self._map)
            fm_pending_flush(&self._pend)
        if FM_DEBUG:
            _dbg_check_map(self._map)
        return False

    cdef int _enter_read(self) except -1:
        if self._state != 1:
            raise RuntimeError("batch used outside its with-block")
        if <uintptr_t>PyThread_get_thread_ident() != self._thread:
            raise RuntimeError("a batch can only be used by the thread that entered it")
        if self._writing:
            raise RuntimeError("batch accessed from inside one of its own write operations "
                               "(a key's __eq__/__hash__)")
        self._reading += 1
        return 0

    cdef int _enter_write(self) except -1:
        self._enter_read()
        if self._reading > 1:
            self._reading -= 1
            raise RuntimeError("batch modified from inside one of its own operations "
                               "(a key's __eq__/__hash__)")
        self._reading = 0
        self._writing = True
        return 0

    cdef inline void _leave(self) noexcept:
        if self._writing:
            self._writing = False
        else:
            self._reading -= 1

    cdef object _assoc(self, object key, object value, bint only_if_absent):
        cdef Py_hash_t h
        cdef Py_ssize_t pos, slot, freeslot
        cdef fm_entry* e = NULL
        cdef object result = _MISSING
        self._enter_write()
        try:
            h = fm_hash_of(key)
            if fm_probe(&self._v, h, <PyObject*>key, &pos, &slot, &freeslot):
                e = fm_entry_at(&self._v, pos)
                result = <object>e.value
                if not only_if_absent and e.value != <PyObject*>value:
                    fm_set_value(&self._v, pos, <PyObject*>value, &self._pend)
                    self._dirty = True
            else:
                fm_insert(&self._v, h, <PyObject*>key, <PyObject*>value, freeslot, &self._pend)
                self._dirty = True
        finally:
            self._leave()
        return result

    cdef object _delete(self, object key):
        cdef Py_hash_t h
        cdef Py_ssize_t pos, slot
        cdef fm_entry* e = NULL
        cdef object result = _MISSING
        self._enter_write()
        try:
            h = fm_hash_of(key)
            if fm_probe(&self._v, h, <PyObject*>key, &pos, &slot, NULL):
                e = fm_entry_at(&self._v, pos)
                result = <object>e.value       # kept alive by us past the pending release
                fm_delete(&self._v, pos, slot, &self._pend)
                self._dirty = True
        finally:
            self._leave()
        return result

    cdef Snapshot _freeze(self):
        """An immutable Snapshot of the batch's current state; later batch writes copy the
        pages they touch (the shared pages now have a second reference)."""
        cdef Snapshot s = _snap_alloc()
        fm_ver_share(&s.v, &self._v)
        _fam_join(s, self._kin)
        if self._kin.v.log == NULL:
            self._kin = s                # the batch's pages are all new: s starts a family
        s._version = self._base._version
        return s

    # -- mapping API -----------------------------------------------------------------
    def __setitem__(self, key, value):
        self._assoc(key, value, False)
        if FM_DEBUG:
            _dbg_check_ver(&self._v, len(self))

    def __delitem__(self, key):
        if self._delete(key) is _MISSING:
            raise KeyError(key)
        if FM_DEBUG:
            _dbg_check_ver(&self._v, len(self))

    def __getitem__(self, key):
        cdef fm_entry* e = NULL
        self._enter_read()
        try:
            if not fm_find(&self._v, fm_hash_of(key), <PyObject*>key, &e):
                raise KeyError(key)
            return <object>e.value
        finally:
            self._leave()

    @cython.binding(False)
    def get(self, key, default=None, /):
        """Return the value for key in the batch (its own writes included) if present,
        else default.

        Complexity: O(1) average; O(n) worst case when many keys' hashes collide.

        >>> m = SnapshotMap(a=1)
        >>> with m.batch() as b:
        ...     b["b"] = 2
        ...     found = b.get("b"), b.get("z"), b.get("z", 0)
        >>> found, m.get("b")
        ((2, None, 0), 2)
        """
        cdef fm_entry* e = NULL
        self._enter_read()
        try:
            if not fm_find(&self._v, fm_hash_of(key), <PyObject*>key, &e):
                return default
            return <object>e.value
        finally:
            self._leave()

    def __contains__(self, key):
        cdef fm_entry* e = NULL
        self._enter_read()
        try:
            return fm_find(&self._v, fm_hash_of(key), <PyObject*>key, &e) != 0
        finally:
            self._leave()

    def __len__(self):
        self._enter_read()
        self._leave()
        return self._v.live

    def snapshot(self):
        """The batch's current state as an immutable Snapshot (not published; later batch
        writes do not show in it).

        Complexity: O(1): the pages are shared, and the batch's next write to each of
        them copies it.

        >>> m = SnapshotMap(a=1)
        >>> with m.batch() as b:
        ...     b["b"] = 2
        ...     s = b.snapshot()
        ...     del b["a"]
        >>> s, m
        (Snapshot({'a': 1, 'b': 2}), SnapshotMap({'b': 2}))
        """
        self._enter_read()
        self._leave()
        return self._freeze()

    def __iter__(self):
        return iter(self.snapshot())

    def __reversed__(self):
        """The batch's keys as they are now, last inserted first (a ``snapshot()`` view)."""
        return reversed(self.snapshot())

    def keys(self):
        """A set-like view of the batch's keys as they are now (a ``snapshot()`` view:
        later batch writes do not show in it).

        Complexity: O(1) to create (see ``snapshot()``); iterating it is O(n).

        >>> m = SnapshotMap(a=1)
        >>> with m.batch() as b:
        ...     b["b"] = 2
        ...     keys = b.keys()
        ...     b["c"] = 3
        >>> keys
        snapshot_keys(['a', 'b'])
        """
        return self.snapshot().keys()

    def values(self):
        """A view of the batch's values as they are now (a ``snapshot()`` view).

        Complexity: O(1) to create (see ``snapshot()``); iterating it is O(n).

        >>> m = SnapshotMap(a=1)
        >>> with m.batch() as b:
        ...     b["a"] = 2
        ...     values = list(b.values())
        >>> values
        [2]
        """
        return self.snapshot().values()

    def items(self):
        """A set-like view of the batch's (key, value) pairs as they are now (a
        ``snapshot()`` view).

        Complexity: O(1) to create (see ``snapshot()``); iterating it is O(n).

        >>> m = SnapshotMap(a=1)
        >>> with m.batch() as b:
        ...     b["b"] = 2
        ...     items = list(b.items())
        >>> items
        [('a', 1), ('b', 2)]
        """
        return self.snapshot().items()

    def pop(self, key, default=_MISSING, /):
        """Remove key from the batch and return its value.  If key is absent, return
        default, or raise KeyError when no default is given.

        Complexity: O(1) average (the log is compacted incrementally).

        >>> m = SnapshotMap(a=1)
        >>> with m.batch() as b:
        ...     r = b.pop("a"), b.pop("a", None)
        >>> r, m
        ((1, None), SnapshotMap())
        """
        if self.__len__() == 0:
            # like dict.pop: an empty batch answers without hashing the key
            if default is _MISSING:
                raise KeyError(key)
            return default
        value = self._delete(key)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        if FM_DEBUG:
            _dbg_check_ver(&self._v, len(self))
        return value

    def popitem(self):
        """Remove and return the last inserted (key, value) pair of the batch; KeyError
        if the batch is empty.

        Complexity: O(1) (no key is compared), plus a bounded migration step.

        >>> m = SnapshotMap(a=1, b=2)
        >>> with m.batch() as b:
        ...     r = b.popitem()
        >>> r, m
        (('b', 2), SnapshotMap({'a': 1}))
        """
        cdef fm_entry* e = NULL
        cdef Py_ssize_t pos, slot
        self._enter_write()
        try:
            if self._v.live == 0:
                raise KeyError("popitem(): batch is empty")
            pos = self._v.n - 1
            e = fm_entry_at(&self._v, pos)
            result = (<object>e.key, <object>e.value)
            slot = fm_slot_of(&self._v, e.hash, pos)
            fm_delete(&self._v, pos, slot, &self._pend)
            self._dirty = True
        finally:
            self._leave()
        if FM_DEBUG:
            _dbg_check_ver(&self._v, len(self))
        return result

    def setdefault(self, key, default=None, /):
        """Return the batch's value for key; if key is absent, first insert it with the
        value default.

        Complexity: O(1) average when key is present; otherwise an insert: O(1) average
        (the index grows incrementally, a bounded step per write).

        >>> m = SnapshotMap(a=1)
        >>> with m.batch() as b:
        ...     r = b.setdefault("a", 0), b.setdefault("b", 2)
        >>> r, m
        ((1, 2), SnapshotMap({'a': 1, 'b': 2}))
        """
        r = self._assoc(key, default, True)
        if FM_DEBUG:
            _dbg_check_ver(&self._v, len(self))
        return default if r is _MISSING else r

    def update(self, other=(), /, **kwargs):
        """Add or overwrite the items of a mapping or iterable of (key, value) pairs, then
        the keyword arguments, in the batch.  Returns None.  If a key's ``__eq__`` raises,
        the items before it stay applied to the batch (let the exception leave the block
        to discard the whole batch).

        Complexity: O(k) average for k items; when k is at least half the batch's size the
        index is rebuilt at once, O(n + k) = O(k).

        >>> m = SnapshotMap(a=1)
        >>> with m.batch() as b:
        ...     b.update({"a": 0}, b=2)
        >>> m
        SnapshotMap({'a': 0, 'b': 2})
        """
        cdef fm_buf buf
        cdef Py_ssize_t distinct
        self._enter_read()
        self._leave()
        fm_buf_init(&buf)
        try:
            distinct = _collect_buf(other, kwargs, &buf)
            self._enter_write()
            try:
                if _ver_update_buf(&self._v, &buf, distinct if self._v.live == 0 else 0,
                                   &self._pend):
                    self._dirty = True
            except BaseException:
                self._dirty = True   # earlier items of this update may have been applied
                raise
            finally:
                self._leave()
        finally:
            fm_buf_clear(&buf)
        if FM_DEBUG:
            _dbg_check_ver(&self._v, len(self))

    def clear(self):
        """Remove every item from the batch (the map is emptied if the block exits
        cleanly).  Returns None.

        Complexity: O(1): the batch drops its version's two page-tree roots; pages nobody
        else holds are freed when the block exits, O(pages).

        >>> m = SnapshotMap(a=1, b=2)
        >>> with m.batch() as b:
        ...     b.clear()
        ...     b["z"] = 0
        >>> m
        SnapshotMap({'z': 0})
        """
        self._enter_write()
        try:
            if self._v.live:
                fm_ver_release(&self._v, &self._pend)
                self._dirty = True
        finally:
            self._leave()
        if FM_DEBUG:
            _dbg_check_ver(&self._v, len(self))

    def __repr__(self):
        state = ("active" if self._state == 1 else "finished" if self._state == 2 else "new")
        return f"<SnapshotMap batch ({state}, {self._v.live} items)>"


# ---------------------------------------------------------------------------------------
# invariant checker
# ---------------------------------------------------------------------------------------

# True in a FASTMAPS_DEBUG=1 build (see _hashmap.DEBUG_BUILD)
DEBUG_BUILD = bool(FM_DEBUG)


def _debug_checks():
    """How many invariant checks this thread has run after mutating calls of SnapshotMap,
    its batches and Snapshot construction (debug builds; always 0 otherwise). Tests."""
    return fm_dbg_checks()


cdef int _dbg_check_ver(fm_ver* v, Py_ssize_t n) except -1:
    """Debug builds, at the end of a mutating call: _check_ver(v) when fm_dbg_due says so
    for a version of n live entries (its log holds <= 2n + 32 records and its indexes
    about 6n slots, so the check reads about 8n + 64). No user code runs in it."""
    if fm_dbg_due(8 * n + 64):
        _check_ver(v, False)
    return 0


cdef int _dbg_check_map(SnapshotMap m) except -1:
    """_dbg_check_ver of m's published version, after the write released the writer lock
    and its pending references (the published version is complete at every point where
    Python code runs, so it may also run while user code of another write is on the
    stack)."""
    cdef Snapshot s = _load(m)
    if fm_dbg_due(8 * len(s) + 64):
        assert s._version <= m._version or fm_owner_load(&m._owner) != 0, "version"
        _check_ver(&s.v, False)
    return 0


cdef Py_ssize_t _check_tree(fm_node* n, int depth, int leafbits, int kind, size_t base,
                            size_t limit, Py_ssize_t log_end) except -1:
    """Structure of one page tree; returns the number of leaf pages covering positions
    below `limit`.  For the log, records at positions >= log_end must be holes."""
    cdef Py_ssize_t total = 0
    cdef size_t span
    cdef uint32_t i
    cdef fm_entry* e = NULL
    assert fm_node_refcnt(n) >= 1, "node refcount < 1"
    if depth == 0:
        assert n.kind == kind, "leaf page of the wrong kind"
        if kind == FM_ELEAF:
            e = fm_ents(n)
            for i in range(n.cap):
                if <Py_ssize_t>(base + i) >= log_end:
                    assert e[i].key == NULL and e[i].value == NULL, "live record beyond n"
                else:
                    assert (e[i].key == NULL) == (e[i].value == NULL), "half a record"
        return 1 if base < limit else 0
    assert n.kind == FM_INNER and n.cap == FM_FAN, "bad inner node"
    span = (<size_t>1) << (leafbits + FM_FBITS * (depth - 1))
    for i in range(<uint32_t>FM_FAN):
        if fm_kids(n)[i] != NULL:
            total += _check_tree(fm_kids(n)[i], depth - 1, leafbits, kind, base + i * span,
                                 limit, log_end)
        elif kind == FM_ILEAF:
            assert base + i * span >= limit, "index page missing"
    return total


cdef Py_ssize_t _check_live(fm_node* n, int depth) except -1:
    """The live counts of a log tree: each node's is its live records; returns it."""
    cdef Py_ssize_t total = 0
    cdef uint32_t i
    if depth == 0:
        for i in range(n.cap):
            if fm_ents(n)[i].key != NULL:
                total += 1
    else:
        for i in range(<uint32_t>FM_FAN):
            if fm_kids(n)[i] != NULL:
                total += _check_live(fm_kids(n)[i], depth - 1)
    assert n.live == total, f"live count {n.live} != {total} live records below"
    return total


cdef int _check_index(fm_node* root, int depth, size_t mask) except -1:
    cdef size_t nslots = mask + 1
    assert nslots >= 8 and (nslots & mask) == 0, "index size not a power of two"
    if nslots <= <size_t>FM_ICAP:
        assert depth == 0 and root.kind == FM_ILEAF and root.cap == nslots, "bad small index"
    else:
        assert (<size_t>FM_ICAP << (FM_FBITS * depth)) >= nslots, "index tree too shallow"
        assert (<size_t>FM_ICAP << (FM_FBITS * (depth - 1))) < nslots, "index tree too deep"
        assert _check_tree(root, depth, FM_IBITS, FM_ILEAF, 0, nslots, 0) == \
            <Py_ssize_t>(nslots // FM_ICAP), "index pages missing"
    return 0


cdef int _check_idmask(uint32_t idmask, size_t nslots) except -1:
    assert idmask >= 255 and idmask <= 0x7fffffff and (idmask & (idmask + 1)) == 0, \
        "position field (idmask) is not 2^k - 1"
    assert idmask + 1 >= min(2 * nslots, 0x80000000), "position field narrower than 2 * slots"
    return 0


cdef Py_ssize_t _slot_pos(int32_t ix, uint32_t idmask) noexcept:
    """The log position a live slot (tag | (pos + 1)) holds; -1 for EMPTY, DUMMY or a
    slot whose position field is 0."""
    if ix <= 0:
        return -1
    return <Py_ssize_t>(<uint32_t>ix & idmask) - 1


cdef bint _reachable(fm_node* root, int depth, size_t mask, uint32_t idmask, Py_hash_t h,
                    Py_ssize_t p):
    """Is log position p on h's probe sequence before any EMPTY slot?"""
    cdef size_t perturb = <size_t>h
    cdef size_t i = <size_t>h & mask
    cdef int32_t ix
    while True:
        ix = fm_islot_at(root, depth, i)[0]
        if ix == FM_SLOT_EMPTY:
            return False
        if _slot_pos(ix, idmask) == p:
            return True
        perturb >>= 5
        i = (i * 5 + perturb + 1) & mask


cdef int _check_ver(fm_ver* v, bint rehash) except -1:
    cdef Py_ssize_t p, live = 0, used = 0, filled = 0, pos
    cdef size_t i, nslots
    cdef int32_t ix
    cdef fm_entry* e = NULL
    cdef bytearray seen
    cdef bint mig = v.old_idx != NULL
    assert v.live >= 0 and v.n >= v.live, "counts"
    if v.live == 0:
        assert v.log == NULL and v.idx == NULL and v.old_idx == NULL and v.n == 0 \
            and v.fill == 0, "empty version still holds pages"
        return 0
    assert v.log != NULL and v.idx != NULL, "missing pages"
    # log
    if v.log_depth == 0:
        assert v.log.kind == FM_ELEAF and v.log.cap <= FM_ECAP, "bad root leaf"
        assert v.n <= v.log.cap, "n beyond the root leaf"
    else:
        assert v.n <= (<Py_ssize_t>FM_ECAP << (FM_FBITS * v.log_depth)), "n beyond the tree"
    _check_tree(v.log, v.log_depth, FM_EBITS, FM_ELEAF, 0, 0, v.n)
    assert _check_live(v.log, v.log_depth) == v.live, "live count of the log root != live"
    for p in range(v.n):
        e = fm_entry_at(v, p)
        if e.key != NULL:
            live += 1
            assert not (mig and v.mig_w <= p < v.mig_r), "live record inside the migration gap"
            if rehash:
                assert hash(<object>e.key) == e.hash, "stored hash differs from hash(key)"
    assert live == v.live, f"live {v.live} != {live} live records"
    assert fm_entry_at(v, v.n - 1).key != NULL, "trailing hole (popitem must be LIFO)"
    if mig:
        assert 0 <= v.mig_w <= v.mig_r <= v.n and v.old_end <= v.n, "migration cursors"
        assert v.mig_r < v.n and not (v.mig_r >= v.old_end and v.mig_w == v.mig_r), \
            "finished migration still holds the old index"
        _check_index(v.old_idx, v.old_depth, v.old_mask)
    else:
        assert v.mig_w == 0 and v.mig_r == 0 and v.old_end == 0, "cursors set without a migration"
        assert v.n - v.live <= max(v.live, 32), "too many holes (compaction missed)"
    # index (the new one during a migration)
    _check_index(v.idx, v.idx_depth, v.mask)
    nslots = v.mask + 1
    _check_idmask(v.idmask, nslots)
    # (every position below n fits the field: pos + 1 <= n <= idmask)
    assert <size_t>v.n <= v.idmask, "log beyond the index's position field"
    seen = bytearray(v.n)
    for i in range(nslots):
        ix = fm_slot_at(v, i)[0]
        if ix != FM_SLOT_EMPTY:
            filled += 1
        if ix > 0:
            used += 1
            pos = _slot_pos(ix, v.idmask)
            assert 0 <= pos < v.n, "index slot outside the log"
            assert not fm_in_old(v, pos), "index slot pointing to a record of the old index"
            assert not seen[pos], "two index slots for one record"
            seen[pos] = 1
            assert fm_entry_at(v, pos).key != NULL, "index slot pointing to a hole"
            assert ix == fm_slot(fm_entry_at(v, pos).hash, v.idmask, pos), \
                "index slot's tag differs from its record's"
        else:
            assert ix == FM_SLOT_EMPTY or ix == FM_SLOT_DUMMY, "bad index slot value"
    assert filled == v.fill, f"fill {v.fill} != {filled}"
    assert filled * 3 <= <Py_ssize_t>nslots * 2, "index too full"
    if mig:
        _check_idmask(v.old_idmask, v.old_mask + 1)
        assert <size_t>v.old_end <= v.old_idmask, "old log beyond the old index's position field"
        # old index: slots pointing into [mig_r, old_end) are live and unique; others are stale
        for i in range(v.old_mask + 1):
            ix = fm_islot_at(v.old_idx, v.old_depth, i)[0]
            if ix > 0:
                pos = _slot_pos(ix, v.old_idmask)
                assert pos >= 0, "old index slot with an empty position field"
                if fm_in_old(v, pos):
                    used += 1
                    assert not seen[pos], "two index slots for one record"
                    seen[pos] = 1
                    assert fm_entry_at(v, pos).key != NULL, "old index slot pointing to a hole"
                    assert ix == fm_slot(fm_entry_at(v, pos).hash, v.old_idmask, pos), \
                        "old index slot's tag differs from its record's"
            else:
                assert ix == FM_SLOT_EMPTY or ix == FM_SLOT_DUMMY, "bad old index slot value"
    assert used == v.live, "the indexes do not cover every live record"
    # every record is reachable in the index that owns it by probing its hash without
    # crossing an EMPTY slot
    for p in range(v.n):
        e = fm_entry_at(v, p)
        if e.key == NULL:
            continue
        if fm_in_old(v, p):
            assert _reachable(v.old_idx, v.old_depth, v.old_mask, v.old_idmask, e.hash, p), \
                "record not reachable from its hash (old index)"
        else:
            assert _reachable(v.idx, v.idx_depth, v.mask, v.idmask, e.hash, p), \
                "record not reachable from its hash"
        if rehash:
            # no equal key earlier on the probe sequences (keys are unique)
            assert fm_probe(v, e.hash, e.key, &pos, NULL, NULL) == 1 and pos == p, \
                "an equal key is stored twice"
    return 0


# ---------------------------------------------------------------------------------------
# Cyclic GC
#
# Pages are not Python objects, and a page can be shared by several versions (a write's
# new version shares every page it did not touch with the previous one; copy(), replace()
# of a Snapshot and a batch's snapshot() share whole trees).  The collector finds garbage
# by subtracting, for every object, the references the traverses report from its
# reference count: each reference must be reported exactly once, by an object whose own
# reachability implies the reference's.  A key in a page holds one reference from that
# page, however many versions share it, so:
#
# * a Snapshot reports the records of the log pages only it can reach: those reached
#   from its root through nodes of reference count 1 (fm_visit_own);
# * every record of a shared page (a page at or below a node of reference count > 1) is
#   reported by the versions' *family* (_Family), a GC object every member references
#   (and reports): its traverse walks its members' trees and reports each shared page
#   once, marking the nodes it has been through (fm_visit_shared, fm_unmark_shared).
#   A version made from another's pages joins that one's family, so every page shared by
#   two Snapshots is reached from members of one family only, and is reported once.  If
#   any member is reachable, the family is, and so is every shared record (a
#   conservative superset: a cycle through pages shared only by dead versions is
#   collected when the family is garbage, i.e. when all its versions are).
# Pages also held by something that is not a Snapshot (a batch's or a writer's private
# version, a list of references waiting to be released) are either reported by the
# family or not at all: an unreported reference only makes its target look externally
# referenced (never collected too early).  A holder that shares pages with members holds
# a member as well (the batch its base, the writer the published version), so the family
# stays reachable while it does.  Snapshots on a map's retired list are not reported by
# the map (conservative in the same way).
# tp_clear of a Snapshot unlinks it from its family and drops its pages (other sharers
# keep their references).
# ---------------------------------------------------------------------------------------

cdef fm_traverseproc _orig_snap_traverse
cdef fm_inquiry _orig_snap_clear
cdef fm_traverseproc _orig_map_traverse
cdef fm_inquiry _orig_map_clear


cdef int _snap_traverse(PyObject* o, fm_visitproc visit, void* arg) noexcept:
    cdef int r = _orig_snap_traverse(o, visit, arg)      # _fam (and _gc)
    if r:
        return r
    return fm_visit_own((<Snapshot>o).v.log, visit, arg)


cdef int _snap_clear(PyObject* o) noexcept:
    cdef Snapshot s = <Snapshot>o
    _fam_leave(s)
    fm_ver_clear(&s.v)          # (empties s.v before it drops any reference)
    return _orig_snap_clear(o)


cdef int _fam_traverse(PyObject* o, fm_visitproc visit, void* arg) noexcept:
    return fm_family_visit(&(<_Family>o).f, visit, arg)


cdef int _map_traverse(PyObject* o, fm_visitproc visit, void* arg) noexcept:
    cdef SnapshotMap m = <SnapshotMap>o
    cdef int r = _orig_map_traverse(o, visit, arg)
    if r:
        return r
    if m._cur != NULL:
        r = visit(m._cur, arg)
    return r


cdef int _map_clear(PyObject* o) noexcept:
    cdef SnapshotMap m = <SnapshotMap>o
    cdef PyObject* cur = m._cur
    fm_incref(<PyObject*>_EMPTY)
    m._cur = <PyObject*>_EMPTY
    fm_xdecref(cur)
    return _orig_map_clear(o)


fm_set_gc_slots(<PyTypeObject*>Snapshot, _snap_traverse, _snap_clear,
                &_orig_snap_traverse, &_orig_snap_clear)
fm_set_gc_slots(<PyTypeObject*>SnapshotMap, _map_traverse, _map_clear,
                &_orig_map_traverse, &_orig_map_clear)
fm_set_gc_slots(<PyTypeObject*>_Family, _fam_traverse, NULL, NULL, NULL)
fm_set_mapping_flag(<PyTypeObject*>Snapshot)
fm_set_mapping_flag(<PyTypeObject*>SnapshotMap)

_abc.Mapping.register(Snapshot)
_abc.MutableMapping.register(SnapshotMap)
_abc.MutableMapping.register(Batch)

FREE_THREADED_BUILD = bool(FM_FREE_THREADED)
