"""HashMap: an insertion-ordered, open-addressing hash map with dict's semantics that
resizes by incremental migration, so that no single operation pays an O(n) pause.

Design
======

Layout
------
Like CPython's compact dict, the map is two structures:

* the **entry log**: entries ``{key, value}`` (16 bytes) stored in insertion order and
  addressed by a dense integer *id*. The log is split into fixed-size **segments** of
  ``2**seg_shift`` entries (2048 by default, 32 KiB) reached through a small directory, so
  appending never copies existing entries: growing the log allocates one segment (and, once
  in a while, doubles the directory: n/2048 records of 24 bytes, 48 KiB at 4M entries).
  Only the first segment of a small map grows by doubling (8, 16, ..., 2048 entries),
  which keeps small maps small and bounds that copy by one segment.
  A deleted entry becomes a *hole* (key == NULL).
* **hashes**: a segment gets an array of the entries' hashes (8 bytes each) the first time
  it must store a key that is not an exact ``str`` (``_store_hash``; filling it from the
  str keys already there is O(segment), never a whole-map conversion). Until then every
  key in it is an exact str, whose hash the str object caches (``_ehash`` reads it there),
  the same fact dict's 16-byte all-str tables rely on. str-keyed maps therefore cost 16
  bytes per entry plus the index, others 24.
* the **index**: a power-of-two array of int32 slots. 0 = EMPTY (so an index comes zeroed
  from ``calloc``, or, from 2 MiB up, from its own mapping that the OS zeroes lazily:
  no memset pause), -1 = DUMMY
  (a deleted slot that probe chains must step over), else ``tag | (id + 1)``.
  ``idmask`` (2**b - 1, fixed when the index is allocated) is the id field: wide enough
  for every id this index can hold (``_start_migration`` sizes it). The bits from b to 30
  are the **tag**, the top bits of ``hash * 0x9E3779B97F4A7C15`` (``_tag``), so every bit
  of the hash feeds it even when the low bits picked the slot. A probe computes
  ``x = slot ^ tag``: ``x <= idmask`` means "tag matches, not DUMMY" and x - 1 is the id.
  Only then is the entry read: a miss rarely reads any entry, a hit only its own (dict
  reads the entry of every occupied slot it passes). The id field is at least as wide as
  log2(slots) bits, so the tag shrinks as the map grows: 10 bits at 1e6 entries, 1 bit
  from about 1.8e8, none from an index of 2**31 slots (about 3.6e8 live entries) on,
  where every slot matches: correct, just unfiltered.
  Probing is CPython's perturbed sequence ``i = (5*i + 1 + perturb) & mask;
  perturb >>= 5`` over the raw Python hash, which suits Python's non-random int hashes.
  The load limit is 2/3 of the slots, counting DUMMY slots (``fill <= usable``), and the
  log too stops at ``usable`` outside migrations (``room_at``): an insert that reuses a
  DUMMY slot does not raise ``fill`` but does append, so without that limit deleting and
  re-inserting one key forever would grow the log forever.

Migration (growth, tombstone compaction and shrinking are one mechanism)
-----------------------------------------------------------------------
When an insert finds the index full (``fill == usable``) or the log at ``room_at``, or a
delete leaves the map
under 1/8 of ``usable``, a **migration** starts: a new index of ``S_new`` slots is
allocated (``S_new`` = the smallest power of two >= 3 * len, as CPython's GROWTH_RATE, and
large enough for the inserts that can happen while the migration runs), and the old index
is kept. The entry log is then compacted *in place* by a cursor, a few entries per write:

    ids [0, w)          moved (or already in place) entries, indexed in the NEW index
    ids [w, r)          the gap: holes and vacated positions, referenced by no index
    ids [r, old_end)    not yet visited; live ones are indexed in the OLD index
    ids [old_end, n)    appended during the migration; indexed in the NEW index

A migration step looks at the entry at ``r``: a hole is skipped; a live entry is copied
down to ``w`` (if w < r) and its slot in the new index is written (inserted if it came
from the old region, re-pointed if it was appended during the migration). Every write
(insert, delete, value update) does ``step`` (4) such steps; lookups do none. When ``r``
reaches ``n`` the old index is freed, the log ends at ``w`` and trailing segments are
released. The entire protocol lives in ``_start_migration``/``_migrate``/``_finish``.

Sizing guarantees the migration finishes before the new index fills up: it needs at most
``n_start / (step - 1)`` writes, and ``S_new`` reserves room for that many inserts; the
new index's id field covers ids below ``n_start`` plus that many appends. If it
ever did not (it cannot, short of a bug), the insert finishes the running migration at
once before starting the next (a counted "forced finish", asserted to stay 0 in tests).
Maps whose migration would visit at most ``sync_below`` (4096) positions migrate at once.

Page faults: an index from 2 MiB up is mapped lazily, and the steps scatter entries over
random pages of it, so a migration into a fresh mapping would fault in nearly all of it
within its first few writes (each page twice: read, then written), a burst of
milliseconds. So the new index is made resident before the first step: outside
migrations, once the index is within ``pre_lead`` inserts of full, ``_prepare`` allocates
the index the next migration will most likely want (its size predicted from how inserts
changed the live count since the index was settled) and ``_prepare_step`` populates one page
of it every ``T_PRE_EVERY`` (32) writes (``madvise(MADV_POPULATE_WRITE)``, or touching);
``_start_migration`` adopts it if the size is right (else frees it). Whatever is not
resident when the migration starts (a wrong guess, or a migration that was not foreseen)
is populated ``T_PF_CHUNK`` (64 KiB) per write before the first step (``_populate_step``),
and sizing reserves room for those writes' inserts too.

Memory during a migration: old index + new index + the log, which is compacted in place
and never needs a second copy of the entries (CPython's resize holds two entry arrays).
Bound: entries <= max(log length at migration start + inserts during it); index bytes
<= 4 * (S_old + S_new) (a prepared index is held, instead of the new one, only in the
last ``pre_lead`` inserts before a migration).

Lookups during a migration probe the new index, then the old one; in the old index an id
outside ``[r, old_end)`` is stale and skipped without touching its entry.

Reentrancy and user code
------------------------
``__hash__`` is called once per key per operation; migration never calls ``__hash__`` or
``__eq__`` (hashes are stored, or cached by exact str keys). Moving an entry into a
segment may need that segment's hash array; if memory is short the migration pauses and
resumes on a later write (a whole-map call that must finish it raises MemoryError). ``__eq__`` can do anything, so a lookup INCREFs the stored
key, compares, and restarts from scratch if the map's ``stamp`` (bumped when the index
is replaced, a migration step runs, entries move, or the map is cleared) changed
meanwhile, or the compared entry or its slot did; plain inserts and deletes, popitem
included, let the probe go on, as CPython's does (restarting after each would let an
``__eq__`` that writes keep a lookup going for ever). Writes
allocate before they mutate (MemoryError leaves the map unchanged) and DECREF removed
objects last, after the map is consistent again, because a ``__del__`` can re-enter.
On GIL builds a thread switch can only happen inside such user code, so concurrent use
reduces to the same reentrancy rules: no crash, no corruption.
A subclass's methods run only where dict would run them: construction, ``update``, ``==``,
``|`` and ``|=`` read a HashMap's or dict's true size and storage (never a subclass's
``__len__``, ``copy``, ``update`` or ``keys`` when ``__iter__`` is not overridden), and the
GC's ``tp_clear`` clears at C level (a subclass's ``clear`` or an instance attribute named
``clear`` would leave the cycle alive).

Free-threaded builds (3.13t): every method that reads or writes the map's storage runs in
the map's per-object critical section (``@cython.critical_section`` or ``with
cython.critical_section(m)``, as dict uses; a no-op on GIL builds), and so does each step
of an iterator and the creation of an iterator or view lookup. CPython suspends a critical
section while its thread blocks (a user ``__eq__``/``__hash__``/``__del__`` taking a lock,
a nested critical section on another object), so other threads can change the map at
exactly the points where user code runs, which are the points the rules above already
revalidate after: the free-threaded guarantee is the GIL build's reentrancy guarantee.
Methods that run user code between writes (``update`` reading another mapping) take the
section per write, never across user iteration. ``__len__`` reads one word without it.

Iteration
---------
An iterator holds a position (an id), the address and hash of the last key it produced
and the map's ``layout`` counter (bumped whenever a migration moves entries to new ids;
not by popitem's trim or clear, after which an iterator goes on by position, as dict's).
If ``layout`` changed, it finds that key's entry again by probing the index with the
stored hash and comparing addresses only, and continues after it (it relocates only if no
deletion happened since its last step, so the key is still in the map: an exact str's
cached hash is read from it then; a freed key is never touched): O(1), exact, and needs no registry of live
iterators. If the key is gone, the map's keys changed during iteration and, as in dict,
RuntimeError is raised (a change of size raises it earlier, as in dict).

Views, update and pickle rules
------------------------------
``keys()``, ``values()`` and ``items()`` return the view types HashMap shares with
SnapshotMap (``fastmaps._mapping``, which implements dict's view semantics once); they
read the map through four C hooks here (``_view_len``, ``_view_iter``, ``_view_contains``,
``_view_lookup``, each in the map's critical section), so a view costs no Python call per
item. dict's generic update protocol (``update_pairs``) and its pickle/copy rules
(``reduce_map``, ``copy_via_reduce``) come from ``fastmaps._mapping`` too.

Invariants (checked by ``_check()``)
------------------------------------
* every live entry is referenced by exactly one slot, in the index that owns its id, with
  its hash's tag;
  no slot references a hole or the gap; every referenced entry is on its hash's probe path;
* ``live`` = number of live entries; ``fill`` = non-EMPTY slots of the new/current index;
* no migration: ``w = r = 0`` and ``old_idx`` is NULL.

Debug builds (``FASTMAPS_DEBUG=1``, ``DEBUG_BUILD``): ``FM_ASSERT`` (a C assert; nothing
at all in release builds) guards the hot paths: ids read from a slot lie in the log and
name a live entry whose key is alive, ``_ent`` stays inside the segments, the cursors keep
``w <= r <= n`` and ``old_end <= n``, ``fill <= usable`` and ``n < idmask`` after an
insert, counts stay >= 0, a migration starts only when none runs. And every public
mutating method ends with ``_dbg_check``: ``_check()``'s body, in the critical section,
after the removed objects were released, on the schedule of ``fm_dbg_due``
(fm_common.h): after every call while ``n + index slots`` (its cost) is at most 2048,
otherwise after a sample of calls that keeps the checking to 32-64 positions per call on
average, and always after a call in which a migration started or finished. The checker
reads storage only (no ``__hash__``/``__eq__``/attribute lookup), so it is also right
when another call on the map is suspended in user code further up the stack.

Operation -> function
---------------------
Shared C (slot encoding ``fm_slot``/``fm_tag``, ``fm_hash_of``, GC-slot patching, the
mapping flag, ``FM_ASSERT``) is in ``fm_common.h``; mapped indexes in ``fm_memory.h``.

=====================================  ==================================================
``m[k]``, ``get``, ``in``              ``_lookup`` -> ``_probe`` (new index, then old)
``m[k] = v``                           ``_set`` -> ``_lookup_for_insert``, ``_insert_new``
                                       (``_make_room`` may call ``_start_migration``)
``del m[k]``, ``pop``                  ``_lookup``, ``_unlink``, ``_maybe_shrink``
``popitem``                            ``_last_live``, ``_unlink_last``
every write's share of the migration   ``_write_step`` -> ``_migrate`` -> ``_finish``
next index prepared / populated        ``_prepare``, ``_prepare_step``, ``_populate_step``
old index given back                   ``_retire_index``, ``_release_chunk``
log growth / segments                  ``_ensure_log``, ``_store_hash``, ``_add_hashes``,
                                       ``_trim_segments``
``clear`` (and GC ``tp_clear``)        ``_clear``
``update``, ``|=``, ``HashMap(x)``     ``_update_from`` -> ``_merge`` ->
                                       ``_update_from_dict`` (``_append_batch``),
                                       ``_update_from_seq``, ``_presize_for``; then
                                       ``_settle``
``copy``, ``HashMap(a_hashmap)``       ``_fill_from`` -> ``_copy_layout`` / ``_append_all``
``reserve``, ``with_capacity``,        ``_reserve``, ``_rebuild``, ``_complete_migration``,
``shrink_to_fit``                      ``_shrink_first_segment``
``==``                                 ``_mapping_equal``
iteration, ``reversed``                ``_HashMapIterator`` (relocation: ``_find_key_id``)
views (``_mapping``'s, over hooks)      ``_view_len``, ``_view_iter``, ``_view_contains``,
                                       ``_view_lookup``
pickle, ``copy.copy``                  ``__reduce_ex__``, ``__copy__``
GC                                     ``_hashmap_traverse``, ``_hashmap_clear``
invariants (debug builds: after calls)  ``_check``, ``_dbg_check``
=====================================  =================================================="""

cimport cython
from cpython.object cimport PyObject, PyTypeObject, Py_EQ, traverseproc, inquiry
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_XDECREF
from cpython.mem cimport PyMem_RawMalloc, PyMem_RawCalloc, PyMem_RawRealloc, PyMem_RawFree
from cpython.dict cimport PyDict_CheckExact
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memset, memcpy
from fastmaps.fm_common cimport *

from fastmaps._mapping cimport view_ops, make_view, VIEW_KEYS, VIEW_VALUES, VIEW_ITEMS

import collections.abc as _abc
import sys as _sys
from types import GenericAlias as _GenericAlias
# dict's rules shared with SnapshotMap (see fastmaps._mapping)
from fastmaps._mapping import (update_pairs as _update_pairs, as_pair as _as_pair,
                               reduce_map as _reduce_map, copy_via_reduce as _copy_via_reduce,
                               lookup_special as _lookup_special, NO_SPECIAL as _NO_SPECIAL)

cdef extern from "Python.h":
    ctypedef Py_ssize_t Py_hash_t
    Py_hash_t PyObject_Hash(object o) except? -1
    bint PyObject_RichCompareBool(object a, object b, int op) except -1
    int Py_ReprEnter(object o) except -1
    void Py_ReprLeave(object o)
    const Py_ssize_t PY_SSIZE_T_MAX
    void PyType_Modified(PyTypeObject* t)
    Py_ssize_t Py_REFCNT(object o)
    Py_ssize_t _refcnt "Py_REFCNT"(PyObject* o) noexcept nogil
    PyObject* PyTuple_GET_ITEM(object t, Py_ssize_t i)
    Py_ssize_t PyTuple_GET_SIZE(object t)
    void PyTuple_SET_ITEM(object t, Py_ssize_t i, object o)   # steals (we INCREF first)
    int PyObject_GC_IsTracked(object o)
    void PyObject_GC_Track(object o)
    int PyDict_Next(object d, Py_ssize_t* pos, PyObject** k, PyObject** v)
    Py_ssize_t PyDict_GET_SIZE(object d)

cdef extern from "Python.h":
    ctypedef struct PyASCIIObject:
        Py_hash_t hash
    bint PyUnicode_CheckExact(object o)



cdef extern from "fm_memory.h":
    const int FM_HAVE_MMAP
    void* fm_map_zeroed(size_t n, int huge) nogil
    void fm_unmap(void* p, size_t n) nogil
    void fm_populate(void* p, size_t n, int mapped) nogil
    int PyTraceMalloc_Track(unsigned int domain, uintptr_t ptr, size_t size)
    int PyTraceMalloc_Untrack(unsigned int domain, uintptr_t ptr)

# Large indices (>= 2 MiB) are mapped directly, zeroed lazily by the OS, and given back
# to it a chunk (128 KiB) every 8 writes after a migration (see _release_chunk): unmapping tens
# of MB of touched pages at once costs about 1 ms per 32 MB, an O(n) pause of its own
# (redis#8611).
# They are reported to tracemalloc, so memory measurements still see them. Smaller ones
# come from calloc: zeroing up to 1 MiB at once costs tens of microseconds, less than the
# 256 page faults a lazily zeroed 1 MiB mapping takes (measured: building a 1e5-key map
# from empty spent ~9% of its time in those faults; mapping from 256 KiB up, populated
# ahead, still cost 12% there in issue 15, against a 70 us calloc of 1 MiB at 87,381 keys).
cdef size_t BIG_INDEX = 1 << 21
cdef size_t RELEASE_CHUNK = 1 << 17
cdef unsigned int RELEASE_EVERY = 8
cdef unsigned int TRACE_DOMAIN = 0


cdef int32_t* _index_alloc(Py_ssize_t slots, bint huge) noexcept:
    """A zeroed index of `slots` int32 slots, or NULL. `huge`: see fm_map_zeroed."""
    cdef size_t nbytes = <size_t>slots * sizeof(int32_t)
    cdef void* p
    if FM_HAVE_MMAP and nbytes >= BIG_INDEX:
        p = fm_map_zeroed(nbytes, huge)
        if p != NULL:
            PyTraceMalloc_Track(TRACE_DOMAIN, <uintptr_t>p, nbytes)
        return <int32_t*>p
    return <int32_t*>PyMem_RawCalloc(slots, sizeof(int32_t))


cdef void _index_free(int32_t* p, Py_ssize_t slots) noexcept:
    """Free an index at once (whole-map operations, dealloc)."""
    cdef size_t nbytes = <size_t>slots * sizeof(int32_t)
    if p == NULL:
        return
    if FM_HAVE_MMAP and nbytes >= BIG_INDEX:
        PyTraceMalloc_Untrack(TRACE_DOMAIN, <uintptr_t>p)
        fm_unmap(p, nbytes)
    else:
        PyMem_RawFree(p)


ctypedef struct Entry:
    PyObject* key          # NULL: a hole (deleted entry) or a vacated position
    PyObject* value


ctypedef struct Seg:
    Entry* p               # 2**seg_shift entries (the first segment of a small map: fewer)
    Py_hash_t* h           # the entries' hashes, or NULL while every key stored in this
                           # segment is an exact str (whose hash the str caches, as dict's
                           # all-str tables rely on): 16 instead of 24 bytes per entry
    Py_ssize_t live        # live entries in this segment: lets scans skip empty segments



cdef Py_ssize_t MIN_SLOTS = 8
cdef Py_ssize_t MAX_SLOTS = (<Py_ssize_t>1) << 31   # ids must fit in an int32 slot
cdef Py_ssize_t MAX_ENTRIES = ((<Py_ssize_t>1) << 31) * 2 // 3 - 1
cdef Py_ssize_t NOT_FOUND = -1
cdef Py_ssize_t RESTART = -3

# Tuning (module-wide; tests shrink these to keep migrations running constantly).
# Log positions visited per write during a migration. A step costs ~36 ns at 1e6 entries
# (a cache and TLB miss in the new index), so 64 made every write of a migration ~2.5 µs:
# 21x the mean insert over any 10,000 consecutive inserts after a growth to 2M. With 4 it
# is 2.2-2.6x (8: 3.3x; bench_latency), for migrations 16x as long (lookups of not yet
# moved keys probe both indexes meanwhile, and the old index is held longer).
cdef Py_ssize_t T_STEP = 4
cdef Py_ssize_t T_SYNC_BELOW = 4096    # migrations visiting <= this many positions run at once
cdef int T_SEG_SHIFT = 11              # log segment = 2**11 entries (new maps only)
cdef size_t T_PF_MIN = 1 << 21         # a migration into an index this large populates it first
cdef size_t T_PF_CHUNK = 1 << 16       # index bytes populated per write (see _populate_step)
cdef Py_ssize_t T_PRE_EVERY = 32       # writes per page populated ahead of a migration (_prepare)


# True in a FASTMAPS_DEBUG=1 build: C asserts on the hot paths, bounds checks, and the
# invariant checker after mutating calls (see fm_dbg_due in fm_common.h)
DEBUG_BUILD = bool(FM_DEBUG)


def _debug_checks():
    """How many invariant checks this thread has run after mutating calls of HashMap
    (debug builds; always 0 otherwise). For tests."""
    return fm_dbg_checks()


def _set_tuning(step=None, sync_below=None, seg_shift=None, prefault_min=None,
                prefault_chunk=None, pre_every=None):
    """Testing hook: set the migration step budget, the synchronous-migration threshold,
    the log segment size (log2, applies to maps created afterwards), the index size from
    which a migration populates its new index first, the bytes populated per write then,
    and the writes per page populated ahead of a migration.
    Returns the previous values as a dict. Not part of the public API."""
    global T_STEP, T_SYNC_BELOW, T_SEG_SHIFT, T_PF_MIN, T_PF_CHUNK, T_PRE_EVERY
    prev = {"step": T_STEP, "sync_below": T_SYNC_BELOW, "seg_shift": T_SEG_SHIFT,
            "prefault_min": T_PF_MIN, "prefault_chunk": T_PF_CHUNK, "pre_every": T_PRE_EVERY}
    if pre_every is not None:
        if pre_every < 1:
            raise ValueError("pre_every must be >= 1")
        T_PRE_EVERY = pre_every
    if prefault_min is not None:
        T_PF_MIN = prefault_min
    if prefault_chunk is not None:
        if prefault_chunk < 4:
            raise ValueError("prefault_chunk must be >= 4")
        T_PF_CHUNK = prefault_chunk
    if step is not None:
        if step < 2:
            raise ValueError("step must be >= 2")
        T_STEP = step
    if sync_below is not None:
        T_SYNC_BELOW = sync_below
    if seg_shift is not None:
        if not 1 <= seg_shift <= 20:
            raise ValueError("seg_shift must be in [1, 20]")
        T_SEG_SHIFT = seg_shift
    return prev


cdef inline Py_ssize_t _pf_writes(size_t nbytes) noexcept nogil:
    """Writes spent populating an index of `nbytes` before its migration steps begin."""
    if nbytes < T_PF_MIN:
        return 0
    return <Py_ssize_t>((nbytes + T_PF_CHUNK - 1) // T_PF_CHUNK)


cdef inline Py_ssize_t _usable(Py_ssize_t slots) noexcept nogil:
    return (slots << 1) // 3


cdef inline Py_ssize_t _slots_for(Py_ssize_t entries) noexcept nogil:
    """Smallest power-of-two slot count whose usable fraction holds `entries`."""
    cdef Py_ssize_t s = MIN_SLOTS
    while _usable(s) < entries and s < MAX_SLOTS:
        s <<= 1
    return s





cdef enum:
    _BATCH = 16    # items a bulk append reads and prefetches ahead (_append_batch)


cdef inline int32_t* _find_free(int32_t* idx, size_t mask, Py_hash_t h) noexcept nogil:
    """First EMPTY or DUMMY slot on h's probe path (reusing DUMMY keeps churn bounded)."""
    cdef size_t perturb = <size_t>h
    cdef size_t i = <size_t>h & mask
    while idx[i] > 0:
        perturb >>= 5
        i = (i * 5 + perturb + 1) & mask
    return &idx[i]


cdef inline int32_t* _find_id(int32_t* idx, size_t mask, uint32_t idmask, Py_hash_t h,
                              Py_ssize_t ident) noexcept nogil:
    """The slot holding entry id `ident` on h's probe path (NULL if absent: a bug)."""
    cdef size_t perturb = <size_t>h
    cdef size_t i = <size_t>h & mask
    cdef int32_t target = fm_slot(h, idmask, ident)
    cdef int32_t ix
    while True:
        ix = idx[i]
        if ix == target:
            return &idx[i]
        if ix == 0:
            return NULL
        perturb >>= 5
        i = (i * 5 + perturb + 1) & mask


@cython.trashcan(True)
cdef class HashMap:
    """HashMap(), HashMap(mapping), HashMap(iterable), HashMap(**kwargs)

    A dict with the same behaviour and insertion order whose growth, compaction and
    shrinking are spread over later writes, so no single insert pays an O(n) pause.

    >>> m = HashMap(a=1)
    >>> m["b"] = 2
    >>> m
    HashMap({'a': 1, 'b': 2})
    >>> list(m.items())
    [('a', 1), ('b', 2)]
    """
    # entry log
    cdef Seg* segs             # directory of segments (each 2**seg_shift entries; seg 0 may be smaller)
    cdef Py_ssize_t dir_cap    # allocated directory slots
    cdef Py_ssize_t nsegs      # allocated segments
    cdef Py_ssize_t log_cap    # entries addressable without allocating (sum of segment sizes)
    cdef int seg_shift
    cdef Py_ssize_t seg_mask
    cdef Py_ssize_t n          # log end: ids [0, n) are in use (live, holes, or the gap)
    cdef Py_ssize_t live       # len(self)
    # current (during a migration: new) index
    cdef int32_t* idx
    cdef size_t mask
    cdef Py_ssize_t usable
    cdef Py_ssize_t fill       # non-EMPTY slots in idx
    cdef uint32_t idmask       # slot = tag bits | (id + 1) with id + 1 <= idmask
    cdef Py_ssize_t room_at    # an insert at log length n >= room_at starts a migration
    # migration state (active iff old_idx != NULL)
    cdef int32_t* old_idx
    cdef size_t old_mask
    cdef uint32_t old_idmask
    cdef Py_ssize_t mig_w, mig_r, old_end
    cdef size_t pf_done, pf_bytes  # populating the new index: bytes done, bytes to do
    # the next migration's index, allocated and populated ahead of it (see _prepare)
    cdef int32_t* pre_idx
    cdef Py_ssize_t pre_slots
    cdef size_t pre_done           # bytes of pre_idx populated so far
    cdef Py_ssize_t pre_tick       # writes since the last page was populated
    cdef Py_ssize_t pre_lead       # start preparing this many inserts before the index is
                                   # full (-1: not for this index)
    cdef Py_ssize_t live_base, fill_base   # live and fill when this index was last settled
    # change counters
    cdef uint64_t stamp        # index replaced, migration progress, entries moved: a lookup
                               # whose __eq__ saw it change restarts (plain inserts and
                               # deletes, popitem too, do not change it: a probe can
                               # continue past them, if the slot it compared is unchanged)
    cdef uint64_t layout       # entry ids changed: iterators relocate by key identity
    cdef uint64_t n_dels       # deletions so far: relocation by identity is exact without
    cdef uint64_t n_ins        # insertions so far (see _lookup_for_insert)
    # a retired large index being given back to the OS a chunk every RELEASE_EVERY writes
    cdef char* rel_ptr
    cdef size_t rel_bytes
    cdef unsigned int rel_tick    # writes since the last chunk was given back
    # statistics
    cdef Py_ssize_t n_migrations, n_forced
    cdef object __weakref__
    cdef dict __dict__         # also what makes Cython give the type GC support (see tp_traverse below)

    def __cinit__(self, *args, **kwargs):
        self.seg_shift = T_SEG_SHIFT
        self.seg_mask = (<Py_ssize_t>1 << T_SEG_SHIFT) - 1

    def __init__(self, *args, **kwargs):
        if len(args) > 1:
            raise TypeError(f"{type(self).__name__} expected at most 1 argument, got {len(args)}")
        if args:
            self._update_from(args[0], True)
        if kwargs:
            self._update_from(kwargs, True)
        if FM_DEBUG:
            self._dbg_check_cs()

    def __dealloc__(self):
        self._release_storage(True)

    # ------------------------------------------------------------------ storage helpers

    @cython.final
    cdef inline Entry* _ent(self, Py_ssize_t i) noexcept nogil:
        FM_ASSERT(i >= 0)
        FM_ASSERT(i < self.log_cap)          # so the segment index is < nsegs
        return self.segs[i >> self.seg_shift].p + (i & self.seg_mask)

    @cython.final
    cdef inline Py_hash_t _ehash(self, Py_ssize_t i) noexcept nogil:
        """The hash of live entry i: stored, or cached by its exact-str key."""
        cdef Seg* sg = &self.segs[i >> self.seg_shift]
        if sg.h != NULL:
            return sg.h[i & self.seg_mask]
        FM_ASSERT(sg.p[i & self.seg_mask].key != NULL)
        FM_ASSERT(FM_IS_STR(sg.p[i & self.seg_mask].key))
        return FM_STR_HASH(sg.p[i & self.seg_mask].key)

    @cython.final
    cdef inline Py_ssize_t _seg_cap(self, Py_ssize_t si) noexcept nogil:
        if si == 0 and self.log_cap < self.seg_mask + 1:
            return self.log_cap
        return self.seg_mask + 1

    @cython.final
    cdef int _add_hashes(self, Py_ssize_t si) noexcept:
        """Give segment si a hash array (its live keys are exact str until now: their
        hashes are copied from the str objects). O(segment). 0, or -1 (nothing changed)
        if memory is short. Raises nothing, calls no user code."""
        cdef Seg* sg = &self.segs[si]
        cdef Py_ssize_t j, cap = self._seg_cap(si)
        cdef Py_ssize_t used = self.n - (si << self.seg_shift)   # positions past n: unset
        cdef Py_hash_t* h = <Py_hash_t*>PyMem_RawMalloc(cap * sizeof(Py_hash_t))
        if h == NULL:
            return -1
        for j in range(min(cap, used)):
            h[j] = FM_STR_HASH(sg.p[j].key) if sg.p[j].key != NULL else 0
        sg.h = h
        return 0

    @cython.final
    cdef inline int _store_hash(self, Py_ssize_t i, PyObject* key, Py_hash_t h) noexcept:
        """Record the hash of the key about to be stored at id i (before it is stored).
        0, or -1 if a hash array was needed and memory is short (nothing changed)."""
        cdef Seg* sg = &self.segs[i >> self.seg_shift]
        if sg.h == NULL:
            if FM_IS_STR(key):
                return 0
            if self._add_hashes(i >> self.seg_shift) < 0:
                return -1
        sg.h[i & self.seg_mask] = h
        return 0

    @cython.final
    cdef int _ensure_log(self, Py_ssize_t need) except -1:
        """Make ids [0, need) addressable. Allocates only; changes no entry."""
        cdef Py_ssize_t seg_size = self.seg_mask + 1
        cdef Py_ssize_t cap, new_dir
        cdef Entry* p
        cdef Py_hash_t* h
        cdef Seg* d
        while self.log_cap < need:
            if self.nsegs == 0 or (self.nsegs == 1 and self.log_cap < seg_size):
                # the first segment grows by doubling up to a full segment
                cap = self.log_cap * 2 if self.log_cap else 8
                while cap < need and cap < seg_size:
                    cap *= 2
                if cap > seg_size:
                    cap = seg_size
                if self.dir_cap == 0:
                    d = <Seg*>PyMem_RawCalloc(4, sizeof(Seg))
                    if d == NULL:
                        raise MemoryError()
                    self.segs = d
                    self.dir_cap = 4
                p = <Entry*>PyMem_RawRealloc(self.segs[0].p, cap * sizeof(Entry))
                if p == NULL:
                    raise MemoryError()
                self.segs[0].p = p
                if self.segs[0].h != NULL:
                    h = <Py_hash_t*>PyMem_RawRealloc(self.segs[0].h, cap * sizeof(Py_hash_t))
                    if h == NULL:
                        raise MemoryError()   # segs[0].p merely has room to spare
                    self.segs[0].h = h
                self.nsegs = 1
                self.log_cap = cap
                self.stamp += 1      # entry addresses may have moved
                continue
            if self.nsegs >= MAX_SLOTS >> self.seg_shift:
                raise MemoryError("HashMap is full")
            if self.nsegs == self.dir_cap:
                new_dir = self.dir_cap * 2
                d = <Seg*>PyMem_RawRealloc(self.segs, new_dir * sizeof(Seg))
                if d == NULL:
                    raise MemoryError()
                self.segs = d
                self.dir_cap = new_dir
            p = <Entry*>PyMem_RawMalloc(seg_size * sizeof(Entry))
            if p == NULL:
                raise MemoryError()
            self.segs[self.nsegs].p = p
            self.segs[self.nsegs].h = NULL
            self.segs[self.nsegs].live = 0
            self.nsegs += 1
            self.log_cap += seg_size
        FM_ASSERT(self.log_cap >= need)
        return 0

    @cython.final
    cdef void _trim_segments(self) noexcept:
        """Free whole segments past the one that holds position n (kept as room to append)."""
        cdef Py_ssize_t keep = (self.n >> self.seg_shift) + 1
        while self.nsegs > keep and self.nsegs > 1:
            self.nsegs -= 1
            PyMem_RawFree(self.segs[self.nsegs].p)
            PyMem_RawFree(self.segs[self.nsegs].h)
            self.segs[self.nsegs].p = NULL
            self.segs[self.nsegs].h = NULL
            self.log_cap -= self.seg_mask + 1

    @cython.final
    cdef void _decref_range(self, Py_ssize_t lo, Py_ssize_t hi) noexcept:
        """Release the references of the live entries at ids [lo, hi), segment by segment
        (the pointers are locals: a DECREF may run a finalizer, so fields would be
        reloaded after each). Only for a map nothing else can reach (dealloc)."""
        cdef Py_ssize_t seg_size = self.seg_mask + 1, j, end
        cdef Seg* segs = self.segs
        cdef int shift = self.seg_shift
        cdef Entry* p
        while lo < hi:
            p = segs[lo >> shift].p
            j = lo & self.seg_mask
            end = min(seg_size, j + (hi - lo))
            lo += end - j
            while j < end:
                if p[j].key != NULL:
                    fm_decref(p[j].key)
                    fm_decref(p[j].value)
                j += 1

    @cython.final
    cdef void _release_storage(self, bint decref) noexcept:
        """Drop all storage (dealloc). With decref, release every live reference."""
        cdef Py_ssize_t i
        if decref and self.segs != NULL:
            # the gap [w, r) of a running migration holds stale copies: skip it
            if self.old_idx != NULL:
                self._decref_range(0, self.mig_w)
                self._decref_range(self.mig_r, self.n)
            else:
                self._decref_range(0, self.n)
        for i in range(self.nsegs):
            PyMem_RawFree(self.segs[i].p)
            PyMem_RawFree(self.segs[i].h)
        PyMem_RawFree(self.segs)
        _index_free(self.idx, self.mask + 1 if self.idx != NULL else 0)
        _index_free(self.old_idx, self.old_mask + 1 if self.old_idx != NULL else 0)
        self._release_all()
        self._drop_prepared()
        self.segs = NULL
        self.idx = NULL
        self.old_idx = NULL
        self.dir_cap = self.nsegs = self.log_cap = 0
        self.n = self.live = self.fill = self.usable = 0
        self.mask = self.old_mask = 0
        self.mig_w = self.mig_r = self.old_end = 0
        self.pf_done = self.pf_bytes = 0

    # ------------------------------------------------------------------ migration protocol

    @cython.final
    cdef int _start_migration(self, Py_ssize_t slots, bint whole=False) except -1:
        """Allocate a new index of `slots` slots and begin moving into it. The running
        migration, if any, must have finished. MemoryError leaves the map unchanged.
        `whole`: called by a whole-map operation that completes the migration at once."""
        cdef int32_t* new_idx = NULL
        cdef size_t pre_done = 0
        FM_ASSERT(self.old_idx == NULL)
        fm_dbg_event()                   # debug builds: check the map after this call
        if self.pre_idx != NULL:         # prepared ahead (_prepare): adopt it if it fits
            if self.pre_slots == slots and not whole and self.idx != NULL:
                new_idx = self.pre_idx
                pre_done = self.pre_done
            elif not whole:
                self._retire_index(self.pre_idx, self.pre_slots)   # a chunk per write
            else:
                _index_free(self.pre_idx, self.pre_slots)
            self.pre_idx = NULL
            self.pre_slots = 0
            self.pre_done = 0
        if new_idx == NULL:
            new_idx = _index_alloc(slots, whole)
            if new_idx == NULL:
                raise MemoryError()
        if self.idx == NULL:             # first index of an empty map: nothing to move
            self.idx = new_idx
            self.mask = slots - 1
            self.usable = _usable(slots)
            self.idmask = fm_posmask_for(max(self.usable, self.n))
            self.fill = 0
            self.stamp += 1
            self._set_room()
            return 0
        self.old_idx = self.idx
        self.old_mask = self.mask
        self.old_idmask = self.idmask
        self.idx = new_idx
        self.mask = slots - 1
        self.usable = _usable(slots)
        # ids in the new index: moved ones (< old_end = n), and appends while the migration
        # runs (at most n // (step - 1) + 1 writes); then, once it is done, < usable
        self.pf_done = 0
        self.pf_bytes = 0
        if not whole and self.n > T_SYNC_BELOW and <size_t>slots * sizeof(int32_t) >= T_PF_MIN:
            self.pf_bytes = <size_t>slots * sizeof(int32_t)
            self.pf_done = pre_done
        self.idmask = fm_posmask_for(max(self.usable, self.n + self.n // (T_STEP - 1) + 64
                                      + _pf_writes(self.pf_bytes)))
        self.fill = 0
        self.mig_w = 0
        self.mig_r = 0
        self.old_end = self.n
        self.n_migrations += 1
        self.stamp += 1
        self._set_room()
        if self.n <= T_SYNC_BELOW:
            self._migrate(PY_SSIZE_T_MAX)
        return 0

    @cython.final
    cdef void _migrate(self, Py_ssize_t budget) noexcept:
        """Advance the running migration by up to `budget` log positions. Calls no user code.
        Allocates only when a key that needs a stored hash moves into a segment without a
        hash array; if that fails, the migration pauses here and resumes on a later write."""
        cdef Py_ssize_t w = self.mig_w, r = self.mig_r, n = self.n, old_end = self.old_end
        cdef Py_hash_t hh
        cdef Entry* src
        cdef int32_t* slot
        cdef bint moved = False
        cdef Py_ssize_t seg_size = self.seg_mask + 1
        if self.old_idx == NULL:
            return
        while budget > 0 and r < n:
            if (r & self.seg_mask) == 0 and r + seg_size <= n and self.segs[r >> self.seg_shift].live == 0:
                r += seg_size          # a segment without live entries costs one step
                budget -= 1
                continue
            src = self._ent(r)
            if src.key != NULL:
                hh = self._ehash(r)
                if r != w and self._store_hash(w, src.key, hh) < 0:
                    break
                if r < old_end:
                    slot = _find_free(self.idx, self.mask, hh)
                    if slot[0] == 0:
                        self.fill += 1
                        FM_ASSERT(self.fill <= self.usable)
                    slot[0] = fm_slot(hh, self.idmask, w)
                elif r != w:
                    slot = _find_id(self.idx, self.mask, self.idmask, hh, r)
                    FM_ASSERT(slot != NULL)      # an appended entry is in the new index
                    slot[0] = fm_slot(hh, self.idmask, w)
                if r != w:
                    self._ent(w)[0] = src[0]
                    src.key = NULL
                    src.value = NULL
                    self.segs[r >> self.seg_shift].live -= 1
                    self.segs[w >> self.seg_shift].live += 1
                    moved = True
                w += 1
            r += 1
            budget -= 1
        FM_ASSERT(w <= r)
        FM_ASSERT(r <= n)
        FM_ASSERT(old_end <= n)
        self.mig_w = w
        self.mig_r = r
        self.stamp += 1
        if moved:
            self.layout += 1
        if r >= n:
            self._finish()

    @cython.final
    cdef void _finish(self) noexcept:
        """The cursor reached the end of the log: drop the old index, cut the log at w."""
        FM_ASSERT(self.mig_r >= self.n)
        FM_ASSERT(self.live <= self.mig_w)   # every live entry is below w now
        fm_dbg_event()
        self._retire_index(self.old_idx, self.old_mask + 1)
        self.old_idx = NULL
        self.old_mask = 0
        self.pf_done = self.pf_bytes = 0
        if self.n != self.mig_w:
            self.layout += 1
        self.n = self.mig_w
        self.mig_w = self.mig_r = self.old_end = 0
        self.stamp += 1
        self._set_room()
        # the segments past the new log end are freed a few per write (_write_step): a
        # migration that compacted a log with many holes leaves hundreds (~0.3 ms at once)

    @cython.final
    cdef inline void _set_room(self) noexcept:
        """Where the next insert must start a migration, besides a full index: while one
        runs, where ids would overflow the new index's id field (sizing keeps that out of
        reach); otherwise at log length `usable`, which also bounds the log when inserts
        keep reusing DUMMY slots (delete and re-insert the same key forever), as dict
        bounds its entry count by its usable size."""
        cdef size_t next_bytes
        if self.old_idx != NULL:
            self.room_at = <Py_ssize_t>self.idmask
            self.pre_lead = -1
        else:
            self.room_at = min(self.usable, <Py_ssize_t>self.idmask)
            # preparing the next index (_prepare): it will most likely be twice this one;
            # start early enough to populate it a page per T_PRE_EVERY writes, with a margin
            self.live_base = self.live
            self.fill_base = self.fill
            next_bytes = 2 * (self.mask + 1) * sizeof(int32_t)
            self.pre_lead = -1
            if self.idx != NULL and next_bytes >= T_PF_MIN:
                self.pre_lead = <Py_ssize_t>((next_bytes + 4095) // 4096) * T_PRE_EVERY * 5 // 4

    @cython.final
    cdef int _complete_migration(self) except -1:
        if self.old_idx != NULL:
            self.pf_bytes = 0              # the rest of the index is faulted in as it goes
            self._migrate(PY_SSIZE_T_MAX)
            if self.old_idx != NULL:       # a move needed a hash array and memory is short
                raise MemoryError()
            self._trim_segments()          # a whole-map call: the segments at once too
        return 0

    @cython.final
    cdef Py_ssize_t _target_slots(self, Py_ssize_t extra) noexcept:
        """Index size for a migration starting now, holding live + extra entries plus every
        insert that can happen before the migration (visiting n positions) completes."""
        return self._target_slots_at(extra, self.n)

    @cython.final
    cdef Py_ssize_t _target_slots_at(self, Py_ssize_t extra, Py_ssize_t n) noexcept:
        """_target_slots for a migration that starts when the log is n long."""
        cdef Py_ssize_t during = n // (T_STEP - 1) + 1
        cdef Py_ssize_t s = _slots_for(self.live + extra + during + 1)
        while s < MAX_SLOTS and (s < 3 * (self.live + extra) or _usable(s) < self.live + extra
                                 + during + 1 + _pf_writes(<size_t>s * sizeof(int32_t))):
            s <<= 1
        return s

    @cython.final
    cdef int _make_room(self) except -1:
        """Called by an insert when the index is full: start the next migration."""
        if self.idx == NULL:
            return self._start_migration(MIN_SLOTS)
        if self.old_idx != NULL:        # safety valve: sizing should make this unreachable
            self.n_forced += 1
            self._complete_migration()
        if self.live >= MAX_ENTRIES:
            raise MemoryError("HashMap is full")
        return self._start_migration(self._target_slots(0))

    @cython.final
    cdef void _maybe_shrink(self) noexcept:
        """After a delete: start a shrinking migration when the map is under 1/8 full."""
        cdef Py_ssize_t slots
        if self.old_idx != NULL or self.idx == NULL or <Py_ssize_t>self.mask < MIN_SLOTS:
            return
        if self.live * 8 >= self.usable:
            return
        slots = self._target_slots(0)
        if slots >= <Py_ssize_t>self.mask + 1:
            return
        try:
            self._start_migration(slots)
        except MemoryError:
            pass            # shrinking is an optimisation; the delete itself succeeded

    @cython.final
    cdef inline void _write_step(self) noexcept:
        """The bounded background work every write does: migration steps, and giving a
        retired index back to the OS."""
        if self.old_idx != NULL:
            if self.pf_done < self.pf_bytes:
                self._populate_step()
            else:
                self._migrate(T_STEP)
        elif self.pre_lead >= 0:
            self._prepare_step()
        if self.rel_bytes:
            self._release_chunk()
        if self.nsegs > (self.n >> self.seg_shift) + 2:
            self._trim_some()

    @cython.final
    cdef void _trim_some(self) noexcept:
        """Free up to 4 whole segments past the one holding position n (and the next, kept
        as room to append)."""
        cdef Py_ssize_t keep = (self.n >> self.seg_shift) + 2
        cdef int i
        for i in range(4):
            if self.nsegs <= keep or self.nsegs <= 1:
                return
            self.nsegs -= 1
            PyMem_RawFree(self.segs[self.nsegs].p)
            PyMem_RawFree(self.segs[self.nsegs].h)
            self.segs[self.nsegs].p = NULL
            self.segs[self.nsegs].h = NULL
            self.log_cap -= self.seg_mask + 1

    @cython.final
    cdef inline void _prepare_step(self) noexcept:
        """Outside migrations: once the index is within pre_lead inserts of full, allocate
        the next migration's index (_prepare), then populate one page of it every
        T_PRE_EVERY writes, so that the migration starts with its index resident."""
        cdef size_t chunk
        if self.pre_idx == NULL:
            if self.usable - self.fill > self.pre_lead and self.room_at - self.n > self.pre_lead:
                return
            self._prepare()
            return
        chunk = <size_t>self.pre_slots * sizeof(int32_t) - self.pre_done
        if chunk == 0:
            return
        self.pre_tick += 1
        if self.pre_tick < T_PRE_EVERY:
            return
        self.pre_tick = 0
        if chunk > 4096:
            chunk = 4096
        fm_populate(<char*>self.pre_idx + self.pre_done, chunk,
                    FM_HAVE_MMAP and <size_t>self.pre_slots * sizeof(int32_t) >= BIG_INDEX)
        self.pre_done += chunk

    @cython.final
    cdef void _prepare(self) noexcept:
        """Allocate the index the next migration will most likely want: its size as
        _target_slots will compute it when the index is full, predicting the live count
        then from how inserts have changed it since this index was settled (growth: +1 per
        insert; churn that deletes as much as it inserts: +0). A wrong guess costs only
        memory held early: _start_migration frees an index of the wrong size. Without
        memory, or for an index under T_PF_MIN, nothing is prepared for this index."""
        cdef Py_ssize_t remaining = min(self.usable - self.fill, self.room_at - self.n)
        cdef Py_ssize_t dfill = self.fill - self.fill_base
        cdef Py_ssize_t dlive = self.live - self.live_base
        cdef Py_ssize_t extra, slots
        cdef int32_t* p
        self.pre_lead = -1               # one attempt per settled index
        if remaining < 0:
            remaining = 0
        if dfill <= 0:
            extra = remaining
        else:
            extra = remaining * max(0, min(dlive, dfill)) // dfill
        slots = self._target_slots_at(extra, self.n + remaining)
        if <size_t>slots * sizeof(int32_t) < T_PF_MIN:
            return
        p = _index_alloc(slots, False)
        if p == NULL:
            return
        self.pre_idx = p
        self.pre_slots = slots
        self.pre_done = 0
        self.pre_tick = 0
        self.pre_lead = 0                # keep populating it

    @cython.final
    cdef void _populate_step(self) noexcept:
        """Make the next T_PF_CHUNK bytes of the new index resident. A migration into a
        large index does this before its first step: the index is mapped lazily and each
        step scatters entries over random pages of it, so without it the first steps would
        take a page fault per entry (two: a read, then a write), faulting in nearly the
        whole index within a few writes. Populating it in order, a bounded chunk per write,
        spreads that cost evenly and takes one cheap fault (or one madvise call) per page."""
        cdef size_t nbytes = (self.mask + 1) * sizeof(int32_t)
        cdef size_t chunk = self.pf_bytes - self.pf_done
        if chunk > T_PF_CHUNK:
            chunk = T_PF_CHUNK
        fm_populate(<char*>self.idx + self.pf_done, chunk,
                    FM_HAVE_MMAP and nbytes >= BIG_INDEX)
        self.pf_done += chunk

    @cython.final
    cdef void _retire_index(self, int32_t* p, Py_ssize_t slots) noexcept:
        """Free an old index: small ones at once, large ones a chunk per later write."""
        cdef size_t nbytes = <size_t>slots * sizeof(int32_t)
        if not (FM_HAVE_MMAP and nbytes >= BIG_INDEX):
            PyMem_RawFree(p)
            return
        self._release_all()          # a previous one still pending (rare): finish it
        self.rel_ptr = <char*>p
        self.rel_bytes = nbytes

    @cython.final
    cdef void _release_chunk(self) noexcept:
        """Give RELEASE_CHUNK bytes of the retired index back every RELEASE_EVERY writes:
        unmapping costs ~0.45 us per touched page plus ~3 us per call here, so a chunk per
        write would put an 8 MB index's 900 us into any 100 consecutive writes."""
        cdef size_t chunk
        self.rel_tick += 1
        if self.rel_tick < RELEASE_EVERY:
            return
        self.rel_tick = 0
        chunk = RELEASE_CHUNK if self.rel_bytes > RELEASE_CHUNK else self.rel_bytes
        self.rel_bytes -= chunk
        if self.rel_bytes == 0:
            PyTraceMalloc_Untrack(TRACE_DOMAIN, <uintptr_t>self.rel_ptr)
        fm_unmap(self.rel_ptr + self.rel_bytes, chunk)
        if self.rel_bytes == 0:
            self.rel_ptr = NULL

    @cython.final
    cdef void _drop_prepared(self) noexcept:
        """Free the index prepared for the next migration, if any."""
        if self.pre_idx != NULL:
            _index_free(self.pre_idx, self.pre_slots)
            self.pre_idx = NULL
            self.pre_slots = 0
            self.pre_done = 0
        self.pre_lead = -1

    @cython.final
    cdef void _release_all(self) noexcept:
        if self.rel_bytes:
            PyTraceMalloc_Untrack(TRACE_DOMAIN, <uintptr_t>self.rel_ptr)
            fm_unmap(self.rel_ptr, self.rel_bytes)
            self.rel_ptr = NULL
            self.rel_bytes = 0

    # ------------------------------------------------------------------ lookup

    @cython.final
    cdef inline Py_ssize_t _probe(self, int32_t* idx, size_t mask, uint32_t idmask, object key,
                           Py_hash_t h, Py_ssize_t lo, Py_ssize_t hi, int32_t** slotp,
                           uint64_t stamp) except -2:
        cdef size_t perturb = <size_t>h
        cdef size_t i = <size_t>h & mask
        cdef uint32_t tag = fm_tag(h, idmask)
        cdef uint32_t x
        cdef int32_t ix
        cdef Py_ssize_t ident
        cdef Seg* sg
        cdef Py_ssize_t j
        cdef PyObject* sk
        cdef object startkey
        cdef bint eq
        while True:
            ix = idx[i]
            if ix == 0:
                return NOT_FOUND
            x = <uint32_t>ix ^ tag
            if x <= idmask:          # not DUMMY (bit 31 set), and the tag matches
                ident = <Py_ssize_t>x - 1
                if lo <= ident < hi:
                    FM_ASSERT(ident >= 0)
                    FM_ASSERT(ident < self.n)
                    sg = &self.segs[ident >> self.seg_shift]
                    j = ident & self.seg_mask
                    sk = sg.p[j].key
                    FM_ASSERT(sk != NULL)            # a live slot never names a hole
                    FM_ASSERT(_refcnt(sk) > 0)
                    if sk == <PyObject*>key:
                        slotp[0] = &idx[i]
                        return ident
                    if (sg.h[j] if sg.h != NULL else FM_STR_HASH(sk)) == h:
                        startkey = <object>sk
                        eq = PyObject_RichCompareBool(startkey, key, Py_EQ)
                        # (startkey, still held, keeps another key from taking sk's address)
                        if (self.stamp != stamp or idx[i] != ix or
                                self._ent(ident).key != sk):
                            return RESTART    # the table, or the compared entry, changed
                        startkey = None
                        if eq:
                            slotp[0] = &idx[i]
                            return ident
            perturb >>= 5
            i = (i * 5 + perturb + 1) & mask

    @cython.final
    cdef inline Py_ssize_t _lookup(self, object key, Py_hash_t h, int32_t** slotp) except -2:
        """Entry id of `key` (and its slot in *slotp), or NOT_FOUND. Restarts when user code
        in __eq__ changed the map's structure."""
        cdef Py_ssize_t res
        cdef uint64_t stamp
        while True:
            if self.idx == NULL:
                return NOT_FOUND
            stamp = self.stamp
            res = self._probe(self.idx, self.mask, self.idmask, key, h, 0, PY_SSIZE_T_MAX,
                              slotp, stamp)
            if res == RESTART:
                continue
            if res >= 0 or self.old_idx == NULL:
                return res
            res = self._probe(self.old_idx, self.old_mask, self.old_idmask, key, h, self.mig_r,
                              self.old_end, slotp, stamp)
            if res != RESTART:
                return res

    @cython.final
    cdef inline int32_t* _slot_of(self, Py_ssize_t ident) noexcept:
        """The index slot referencing live entry `ident` (no user code)."""
        cdef Py_hash_t h = self._ehash(ident)
        if self.old_idx != NULL and self.mig_r <= ident < self.old_end:
            return _find_id(self.old_idx, self.old_mask, self.old_idmask, h, ident)
        return _find_id(self.idx, self.mask, self.idmask, h, ident)

    # ------------------------------------------------------------------ core writes

    @cython.final
    cdef int _insert_new(self, object key, Py_hash_t h, object value) except -1:
        """Append a key known to be absent. No user code runs in here."""
        cdef Entry* ep
        cdef int32_t* slot
        if self.fill >= self.usable or self.n >= self.room_at:
            self._make_room()
        if self.n >= self.log_cap:
            self._ensure_log(self.n + 1)
        if self._store_hash(self.n, <PyObject*>key, h) < 0:
            raise MemoryError()
        ep = self._ent(self.n)
        Py_INCREF(key)
        Py_INCREF(value)
        ep.key = <PyObject*>key
        ep.value = <PyObject*>value
        self.segs[self.n >> self.seg_shift].live += 1
        slot = _find_free(self.idx, self.mask, h)
        if slot[0] == 0:
            self.fill += 1
        FM_ASSERT(self.fill <= self.usable)
        FM_ASSERT(self.n < <Py_ssize_t>self.idmask)     # the id field holds n + 1
        slot[0] = fm_slot(h, self.idmask, self.n)
        self.n += 1
        self.live += 1
        self.n_ins += 1
        FM_ASSERT(self.live <= self.n)
        self._write_step()
        return 0

    @cython.final
    cdef inline Py_ssize_t _lookup_for_insert(self, object key, Py_hash_t h) except -2:
        """_lookup before an insert. A probe continues past plain inserts made by an
        __eq__ it calls (as CPython's does), so if that __eq__ inserted this very key
        object on a slot the probe had passed, it is found again by identity (no user
        code) rather than inserted twice."""
        cdef int32_t* slot
        cdef uint64_t ins = self.n_ins
        cdef Py_ssize_t i = self._lookup(key, h, &slot)
        if i < 0 and self.n_ins != ins:
            i = self._find_key_id(<PyObject*>key, h)
        return i

    @cython.final
    cdef int _set(self, object key, Py_hash_t h, object value) except -1:
        cdef Py_ssize_t i = self._lookup_for_insert(key, h)
        cdef Entry* ep
        cdef PyObject* old
        if i < 0:
            return self._insert_new(key, h, value)
        FM_ASSERT(i < self.n)
        ep = self._ent(i)
        FM_ASSERT(ep.key != NULL)
        old = ep.value
        Py_INCREF(value)
        ep.value = <PyObject*>value
        self._write_step()
        Py_DECREF(<object>old)       # last: a __del__ may re-enter
        return 0

    @cython.final
    @cython.critical_section
    cdef int _presize_cs(self, Py_ssize_t incoming) except -1:
        return self._presize_for(incoming)

    @cython.final
    cdef int _set_cs(self, object key, Py_hash_t h, object value) except -1:
        """_set inside the map's critical section (for callers that run user code between
        writes, as update does, and so cannot hold it throughout). The constant folds the
        branch away on GIL builds (no per-write cost for the section's bookkeeping)."""
        if FM_FREE_THREADED:
            with cython.critical_section(self):
                return self._set(key, h, value)
        return self._set(key, h, value)

    @cython.final
    cdef void _unlink(self, Py_ssize_t i, int32_t* slot, PyObject** kp, PyObject** vp) noexcept:
        """Remove live entry i (whose index slot is `slot`); hand its references to the
        caller, who must DECREF them after the map is consistent."""
        cdef Entry* ep = self._ent(i)
        FM_ASSERT(ep.key != NULL)
        FM_ASSERT(slot[0] > 0)
        kp[0] = ep.key
        vp[0] = ep.value
        ep.key = NULL
        ep.value = NULL
        slot[0] = FM_SLOT_DUMMY
        self.segs[i >> self.seg_shift].live -= 1
        self.live -= 1
        self.n_dels += 1
        FM_ASSERT(self.segs[i >> self.seg_shift].live >= 0)
        FM_ASSERT(self.live >= 0)
        if self.old_idx == NULL:
            self._maybe_shrink()
        self._write_step()

    @cython.final
    cdef object _get(self, object key, Py_hash_t h, object default):
        cdef int32_t* slot
        cdef Py_ssize_t i = self._lookup(key, h, &slot)
        if i < 0:
            return default
        return <object>self._ent(i).value

    # ------------------------------------------------------------------ iteration core

    @cython.final
    cdef inline Py_ssize_t _next_pos(self, Py_ssize_t pos) noexcept:
        """Skip the migration gap: the logical sequence is [0, w) ++ [r, n)."""
        if self.old_idx != NULL and self.mig_w <= pos < self.mig_r:
            return self.mig_r
        return pos

    @cython.final
    cdef Py_ssize_t _find_key_id(self, PyObject* key, Py_hash_t h,
                                 bint first=False) noexcept:
        """Id of the live entry whose key *is* `key` (address comparison only, no user
        code, `key` is never dereferenced), or -1. With `first`, only if it is the first
        entry on h's probe path whose tag matches, i.e. the entry a lookup of `key`
        reaches without calling any ``__eq__`` (else -1)."""
        cdef int32_t* idx = self.idx
        cdef size_t mask = self.mask
        cdef uint32_t idmask = self.idmask
        cdef uint32_t tag, x
        cdef size_t perturb, i
        cdef int32_t ix
        cdef Py_ssize_t ident, lo = 0, hi = PY_SSIZE_T_MAX
        cdef int which
        if idx == NULL:
            return -1
        for which in range(2):
            if which == 1:
                if self.old_idx == NULL:
                    return -1
                idx = self.old_idx
                mask = self.old_mask
                idmask = self.old_idmask
                lo = self.mig_r
                hi = self.old_end
            perturb = <size_t>h
            i = <size_t>h & mask
            tag = fm_tag(h, idmask)
            while True:
                ix = idx[i]
                if ix == 0:
                    break
                x = <uint32_t>ix ^ tag
                if x <= idmask:
                    ident = <Py_ssize_t>x - 1
                    if lo <= ident < hi:
                        if self._ent(ident).key == key:
                            return ident
                        if first:
                            return -1
                perturb >>= 5
                i = (i * 5 + perturb + 1) & mask
        return -1

    # ------------------------------------------------------------------ mapping protocol

    @cython.critical_section
    def __len__(self):
        return self.live

    @cython.critical_section
    def __getitem__(self, key):
        cdef Py_hash_t h = fm_hash_of(key)
        cdef int32_t* slot
        cdef Py_ssize_t i = self._lookup(key, h, &slot)
        if i >= 0:
            return <object>self._ent(i).value
        if type(self) is not HashMap:
            missing = _lookup_special(self, "__missing__", _NO_SPECIAL)
            if missing is not _NO_SPECIAL:
                return missing(key)      # even None: called, and TypeError, like dict
        raise KeyError(key)

    @cython.critical_section
    def __setitem__(self, key, value):
        self._set(key, fm_hash_of(key), value)
        if FM_DEBUG:
            self._dbg_check()

    @cython.critical_section
    def __delitem__(self, key):
        cdef Py_hash_t h = fm_hash_of(key)
        cdef int32_t* slot
        cdef PyObject* k
        cdef PyObject* v
        cdef Py_ssize_t i = self._lookup(key, h, &slot)
        if i < 0:
            raise KeyError(key)
        self._unlink(i, slot, &k, &v)
        Py_DECREF(<object>k)
        Py_DECREF(<object>v)
        if FM_DEBUG:
            self._dbg_check()

    @cython.critical_section
    def __contains__(self, key):
        cdef Py_hash_t h = fm_hash_of(key)
        cdef int32_t* slot
        return self._lookup(key, h, &slot) >= 0

    @cython.binding(False)
    @cython.critical_section
    def get(self, key, default=None, /):
        """Return the value for key if key is in the map, else default. O(1).

        >>> HashMap(a=1).get("b", 0)
        0
        """
        return self._get(key, fm_hash_of(key), default)

    @cython.critical_section
    def setdefault(self, key, default=None, /):
        """Insert key with a value of default if key is not in the map; return the value
        for key. O(1) amortised, and never an O(n) pause.

        >>> m = HashMap(); m.setdefault("a", []).append(1); m
        HashMap({'a': [1]})
        """
        cdef Py_hash_t h = fm_hash_of(key)
        cdef Py_ssize_t i = self._lookup_for_insert(key, h)
        if i >= 0:
            return <object>self._ent(i).value
        self._insert_new(key, h, default)
        if FM_DEBUG:
            self._dbg_check()
        return default

    @cython.critical_section
    def pop(self, key, /, *args):
        """pop(key[, default]): remove key and return its value, or default if given,
        else raise KeyError. O(1).

        >>> HashMap(a=1).pop("a")
        1
        """
        cdef Py_hash_t h
        cdef int32_t* slot
        cdef PyObject* k
        cdef PyObject* v
        cdef Py_ssize_t i
        if len(args) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(args)}")
        if self.live == 0:           # like dict: an empty map does not hash the key
            if args:
                return args[0]
            raise KeyError(key)
        h = fm_hash_of(key)
        i = self._lookup(key, h, &slot)
        if i < 0:
            if args:
                return args[0]
            raise KeyError(key)
        self._unlink(i, slot, &k, &v)
        result = <object>v
        Py_DECREF(result)        # the map's reference; `result` keeps its own
        Py_DECREF(<object>k)
        if FM_DEBUG:
            self._dbg_check()
        return result

    @cython.critical_section
    def popitem(self):
        """Remove and return the last inserted (key, value) pair (LIFO); KeyError if empty.
        O(1) amortised (skipping trailing holes left by earlier deletes, as dict does).

        >>> HashMap(a=1, b=2).popitem()
        ('b', 2)
        """
        cdef Py_ssize_t i
        cdef int32_t* slot
        cdef PyObject* k
        cdef PyObject* v
        if self.live == 0:
            raise KeyError(f"popitem(): {type(self).__name__} is empty")
        if self.old_idx != NULL:
            i = self._last_live(self.n - 1, self.mig_r)
            if i < self.mig_r:
                # the unvisited region holds only holes: the migration is complete
                self.mig_r = self.n
                self._finish()
        if self.old_idx == NULL:
            i = self._last_live(self.n - 1, 0)
        FM_ASSERT(i >= 0)                # live > 0: there is a live entry
        slot = self._slot_of(i)
        FM_ASSERT(slot != NULL)
        # cut the log at i (the entry and any trailing holes) before unlinking
        self.n = i + 1
        self._unlink_last(i, slot, &k, &v)
        result = (<object>k, <object>v)
        Py_DECREF(<object>k)
        Py_DECREF(<object>v)
        if FM_DEBUG:
            self._dbg_check()
        return result

    @cython.final
    cdef Py_ssize_t _last_live(self, Py_ssize_t i, Py_ssize_t lo) noexcept:
        """The highest live id in [lo, i], or lo - 1. Skips segments without live
        entries, so a long run of holes costs O(run / 2048 + 2048), not O(run)."""
        while i >= lo:
            if self.segs[i >> self.seg_shift].live == 0:
                i = ((i >> self.seg_shift) << self.seg_shift) - 1
                continue
            if self._ent(i).key != NULL:
                return i
            i -= 1
        return lo - 1

    @cython.final
    cdef void _unlink_last(self, Py_ssize_t i, int32_t* slot, PyObject** kp, PyObject** vp) noexcept:
        """popitem's removal: entry i is the last position of the log."""
        cdef Entry* ep = self._ent(i)
        FM_ASSERT(i == self.n - 1)
        FM_ASSERT(ep.key != NULL)
        FM_ASSERT(slot[0] > 0)
        kp[0] = ep.key
        vp[0] = ep.value
        ep.key = NULL
        ep.value = NULL
        slot[0] = FM_SLOT_DUMMY
        self.segs[i >> self.seg_shift].live -= 1
        self.live -= 1
        self.n_dels += 1
        FM_ASSERT(self.live >= 0)
        self.n = i
        if self.old_idx != NULL and self.old_end > i:
            self.old_end = i
        # no stamp change: like a plain delete, a probe can continue past it (its __eq__
        # check sees the emptied slot: id i may be reused, by the same key object too);
        # restarting after every popitem let an __eq__ that pops keep a lookup going for
        # ever where dict's ends. And no layout change: the other entries keep their ids
        # (an iterator goes on by position, as dict's does after popitem)
        if self.old_idx == NULL:
            self._maybe_shrink()
        self._write_step()

    @cython.critical_section
    def clear(self, *, keep_capacity=False):
        """Remove all items. O(n) (the references must be released).

        With ``keep_capacity=True`` the index and entry storage are kept for refilling
        (like Go's ``clear(m)``), so the next ``capacity`` inserts allocate nothing and
        start no migration. ``keep_capacity`` must be a bool (TypeError otherwise, as for
        ObjectPool's ``gc_release``): any other object is more likely a mistake than a flag.

        >>> m = HashMap.with_capacity(1000); m[1] = 2
        >>> m.clear(keep_capacity=True); len(m), m.capacity >= 1000
        (0, True)
        """
        if keep_capacity is not True and keep_capacity is not False:
            raise TypeError(f"keep_capacity must be a bool, not {type(keep_capacity).__name__}")
        self._clear(keep_capacity)
        if FM_DEBUG:
            self._dbg_check()

    @cython.final
    cdef void _clear(self, bint keep_capacity) noexcept:
        """clear() itself, also the GC's tp_clear: calls no method that a subclass or an
        instance attribute could override (only the DECREFs of the removed objects, last,
        run user code)."""
        cdef Seg* segs = self.segs
        cdef Py_ssize_t nsegs = self.nsegs, dir_cap = self.dir_cap, log_cap = self.log_cap
        cdef Py_ssize_t n = self.n, w = self.mig_w, r = self.mig_r
        cdef bint migrating = self.old_idx != NULL
        cdef int32_t* idx = self.idx
        cdef size_t mask = self.mask
        cdef uint32_t idmask = self.idmask
        # the segment geometry too: user code run by the DECREFs below may refill the map
        # by a layout copy from a map with other segments (_copy_layout sets both)
        cdef int seg_shift = self.seg_shift
        cdef Py_ssize_t seg_mask = self.seg_mask
        cdef Py_ssize_t i
        cdef Entry* ep
        cdef PyObject* k
        cdef PyObject* v
        _index_free(self.old_idx, self.old_mask + 1 if self.old_idx != NULL else 0)
        self._release_all()
        self._drop_prepared()
        # detach everything first: user code run by the DECREFs below sees an empty map
        self.segs = NULL
        self.idx = NULL
        self.old_idx = NULL
        self.dir_cap = self.nsegs = self.log_cap = 0
        self.n = self.live = self.fill = self.usable = 0
        self.mask = self.old_mask = 0
        self.mig_w = self.mig_r = self.old_end = 0
        self.pf_done = self.pf_bytes = 0
        self.stamp += 1
        # no layout change: like dict's, an iterator goes on by position in the refilled
        # map (and raises if the size differs); n_dels keeps it from relocating by a key
        # that is gone
        self.n_dels += 1
        for i in range(n):
            if migrating and w <= i < r:
                continue
            ep = segs[i >> seg_shift].p + (i & seg_mask)
            k = ep.key
            if k != NULL:
                v = ep.value
                ep.key = NULL
                ep.value = NULL
                Py_DECREF(<object>k)
                Py_DECREF(<object>v)
        if keep_capacity and self.segs == NULL and self.idx == NULL and idx != NULL:
            self.seg_shift = seg_shift
            self.seg_mask = seg_mask
            memset(idx, 0, (mask + 1) * sizeof(int32_t))
            for i in range(nsegs):
                segs[i].live = 0
            self.segs = segs
            self.nsegs = nsegs
            self.dir_cap = dir_cap
            self.log_cap = log_cap
            self.idx = idx
            self.mask = mask
            self.idmask = idmask        # user code run above may have replaced it
            self.usable = _usable(mask + 1)
            self.stamp += 1
            self._set_room()
            return
        for i in range(nsegs):
            PyMem_RawFree(segs[i].p)
            PyMem_RawFree(segs[i].h)
        PyMem_RawFree(segs)
        _index_free(idx, mask + 1 if idx != NULL else 0)

    def __iter__(self):
        return _make_iter(self, 0, False)

    def __reversed__(self):
        return _make_iter(self, 0, True)

    def keys(self):
        """A live, set-like view of the keys, in insertion order. O(1) to create;
        iterating it is O(n), ``in`` is O(1), set operations return sets (as for dict).

        >>> m = HashMap(a=1, b=2); k = m.keys(); m["c"] = 3
        >>> list(k), k & {"a", "z"}
        (['a', 'b', 'c'], {'a'})
        """
        return make_view(VIEW_KEYS, self, &_VIEW_OPS)

    def values(self):
        """A live view of the values, in insertion order. O(1) to create; iterating it
        and ``in`` are O(n).

        >>> list(HashMap(a=1, b=2).values())
        [1, 2]
        """
        return make_view(VIEW_VALUES, self, &_VIEW_OPS)

    def items(self):
        """A live, set-like view of the (key, value) pairs, in insertion order. O(1) to
        create; iterating it is O(n), ``(k, v) in items`` is O(1).

        >>> m = HashMap(a=1); list(m.items()), ("a", 1) in m.items()
        ([('a', 1)], True)
        """
        return make_view(VIEW_ITEMS, self, &_VIEW_OPS)

    def update(self, *args, **kwargs):
        """update([other], **kwargs): like dict.update. ``other`` may be a mapping, an
        object with ``keys()``, or an iterable of pairs. O(len(other) + len(kwargs)).

        >>> m = HashMap(); m.update({"a": 1}, b=2); m
        HashMap({'a': 1, 'b': 2})
        """
        if len(args) > 1:
            raise TypeError(f"update expected at most 1 argument, got {len(args)}")
        if args:
            self._update_from(args[0], False)
        if kwargs:
            self._update_from(kwargs, False)
        if FM_DEBUG:
            self._dbg_check_cs()

    @cython.final
    cdef int _update_from(self, object other, bint presize) except -1:
        """dict's update/merge rules (``_merge``), then ``_settle`` for what it inserted."""
        cdef uint64_t ins0
        with cython.critical_section(self):
            ins0 = self.n_ins
        self._merge(other)
        with cython.critical_section(self):
            self._settle(<Py_ssize_t>(self.n_ins - ins0))
        return 0

    @cython.final
    cdef void _settle(self, Py_ssize_t k) noexcept:
        """After a call that inserted k items: give the running migration up to k more
        positions (O(k), so the call stays O(its input)). A migration that the call's own
        inserts started then usually ends inside it, instead of leaving the map probing
        two indexes until later writes finish it (a map built by ``HashMap(pairs)`` and
        then only read)."""
        if self.old_idx != NULL and k > 0:
            self._migrate(k)

    @cython.final
    cdef int _merge(self, object other) except -1:
        """dict's update/merge rules: a HashMap or dict whose iteration is not overridden
        is merged directly (a HashMap's stored hashes are reused: no __hash__ calls);
        anything with a ``keys`` attribute is read as ``other[k] for k in
        list(other.keys())``; anything else is an iterable of pairs."""
        cdef _HashMapIterator it
        cdef Entry* ep
        cdef Py_hash_t h
        if isinstance(other, HashMap) and type(other).__iter__ is HashMap.__iter__:
            if other is self:
                return 0            # m.update(m): nothing changes (dict's shortcut too)
            with cython.critical_section(self, other):
                filled = self.live == 0
                if filled:
                    self._fill_from(<HashMap>other)       # no user code at all
            if filled:
                return 0
            with cython.critical_section(other):
                incoming = (<HashMap>other).live
            self._presize_cs(incoming)
            # other's entries read by an iterator's rules (a change of size or keys made
            # by user code in a lookup below raises as in dict), with their stored hashes;
            # k and v keep the objects alive while this map's __eq__ calls run
            it = _make_iter(<HashMap>other, ITER_KEYS, False)
            while True:
                with cython.critical_section(other):
                    ep = it._next_entry()
                    if ep != NULL:
                        k = <object>ep.key
                        v = <object>ep.value
                        h = it._last_hash()
                if ep == NULL:
                    return 0
                self._set_cs(k, h, v)
        if PyDict_CheckExact(other) or (isinstance(other, dict)
                                        and type(other).__iter__ is dict.__iter__):
            return self._update_from_dict(<dict>other)
        if type(other) is list or type(other) is tuple:
            return self._update_from_seq(other)
        for k, v in _update_pairs(other, type(self).__name__):
            self._set_cs(k, fm_hash_of(k), v)
        return 0

    @cython.final
    cdef int _presize_for(self, Py_ssize_t incoming) except -1:
        """Before merging `incoming` items (a true size, never a subclass's __len__): as
        dict does, make room at once only when they alone would not fit the current index
        (so the O(len) rebuild is paid for by an O(incoming) operation)."""
        if incoming > 0 and (self.idx == NULL or incoming > self.usable):
            self._reserve(self.live + incoming)
        return 0

    @cython.final
    cdef int _update_from_dict(self, dict other) except -1:
        # both critical sections (free-threaded builds): PyDict_Next needs the dict's, the
        # writes need the map's; user code (__hash__, __eq__) inside may suspend them, and
        # the loop already revalidates after it (the dict's size, the map's counters)
        with cython.critical_section(self, other):
            return self._update_from_dict_locked(other)

    @cython.final
    cdef int _update_from_dict_locked(self, dict other) except -1:
        """Merge a dict (or a subclass whose iteration is dict's) by reading its storage,
        as dict.update does. Into an empty map its keys are known to be distinct: while
        no user code has run (the hash comes from the dict or from an exact str/int key,
        ``fm_dict_next``) they are appended straight into the presized storage, a batch
        at a time (``_append_batch``). A key whose hash must be computed (3.13 and
        free-threaded builds: the C API gives no stored hash there) is inserted with
        ``_insert_new``; if that hash was user code (``fm_hash_is_builtin``: not a builtin
        atom or a tuple of them), every key after it is looked up: its ``__hash__`` may
        have rearranged the dict (a key deleted and inserted again comes again at the end
        of its iteration) or written to this map."""
        cdef Py_ssize_t pos = 0, size = PyDict_GET_SIZE(other)
        cdef PyObject* kp
        cdef PyObject* vp
        cdef Py_hash_t h
        cdef bint fast = self.live == 0
        cdef bint user = False        # a key's __hash__ has run
        cdef uint64_t ins, dels
        cdef int got
        self._presize_for(size)
        ins, dels = self.n_ins, self.n_dels
        while True:
            if fast and self.n_ins == ins and self.n_dels == dels and self.old_idx == NULL:
                # no user code since the last check: append what fits without a migration
                got = self._append_batch(other, &pos, &kp, &vp, &h)
                ins = self.n_ins
                if got == 0:
                    return 0           # the dict is exhausted
                if got == 1:
                    continue           # a full batch went in; there may be room for more
                # got == 2: (kp, vp, h) is the next item, not appended (its hash is
                # unknown, or no room is left)
            elif not fm_dict_next(other, &pos, &kp, &vp, &h):
                return 0
            # owned references (user code below may drop the dict's), both taken before
            # the previous item's are released (whose __del__ could change the dict)
            k, v = <object>kp, <object>vp
            if h == -1:
                user = user or not fm_hash_is_builtin(kp, 0)
                h = fm_hash_of(k)
            if PyDict_GET_SIZE(other) != size:
                raise RuntimeError("dictionary changed size during iteration")
            if fast and self.n_ins == ins and self.n_dels == dels:
                # (no user code ran before this key's hash: it cannot be here already)
                self._insert_new(k, h, v)
                ins = self.n_ins
            else:
                fast = False
                self._set(k, h, v)
            if user:
                fast = False

    @cython.final
    cdef int _append_batch(self, dict other, Py_ssize_t* pos, PyObject** kp,
                           PyObject** vp, Py_hash_t* h) except -1:
        """The appending step of _update_from_dict_locked: read up to _BATCH items of
        `other` from *pos whose hashes are known without user code and that fit without
        a migration, prefetch their first index slots, then append them (keys known
        distinct and absent; no user code runs). Returns 0 when the dict is exhausted,
        1 after a full batch, 2 when the item left in (*kp, *vp, *h) was read but not
        appended (unknown hash, or no room)."""
        cdef PyObject* bk[_BATCH]
        cdef PyObject* bv[_BATCH]
        cdef Py_hash_t bh[_BATCH]
        cdef Py_ssize_t room = min(self.usable - self.fill, self.room_at - self.n,
                                   self.log_cap - self.n)
        cdef int cnt = 0, res = 1
        while cnt < _BATCH:
            if not fm_dict_next(other, pos, kp, vp, h):
                res = 0
                break
            if h[0] == -1 or cnt >= room:
                res = 2
                break
            bk[cnt] = kp[0]
            bv[cnt] = vp[0]
            bh[cnt] = h[0]
            FM_PREFETCH_W(&self.idx[<size_t>h[0] & self.mask])
            cnt += 1
        self._append_known_n(bk, bv, bh, cnt)
        return res

    @cython.final
    cdef int _append_known_n(self, PyObject** keys, PyObject** values, Py_hash_t* hashes,
                             int cnt) except -1:
        """Append cnt keys (known absent and distinct, with their hashes) with their
        values, taking new references, into a map with room for all of them (no
        migration running, fill + cnt <= usable, n + cnt <= room_at and <= log_cap),
        with the map's fields kept in locals. No user code runs and no background step
        is taken."""
        cdef int j
        cdef Py_ssize_t i = self.n, start = self.n, fill = self.fill
        cdef Py_hash_t h
        cdef PyObject* key
        cdef PyObject* value
        cdef Entry* dst
        cdef Seg* sg
        cdef int32_t* slot
        cdef int32_t* idx = self.idx
        cdef size_t mask = self.mask
        cdef uint32_t idmask = self.idmask
        cdef int shift = self.seg_shift
        cdef Py_ssize_t smask = self.seg_mask
        FM_ASSERT(self.old_idx == NULL and self.fill + cnt <= self.usable
                  and i + cnt <= self.log_cap)
        for j in range(cnt):
            key = keys[j]
            value = values[j]
            h = hashes[j]
            sg = &self.segs[i >> shift]
            if sg.h != NULL:
                sg.h[i & smask] = h
            elif not FM_IS_STR(key):
                # _add_hashes fills the positions below n: bring the fields up to date
                self.n, self.fill = i, fill
                self.live += i - start
                self.n_ins += <uint64_t>(i - start)
                start = i
                if self._add_hashes(i >> shift) < 0:
                    raise MemoryError()
                sg.h[i & smask] = h
            dst = sg.p + (i & smask)
            Py_INCREF(<object>key)
            Py_INCREF(<object>value)
            dst.key = key
            dst.value = value
            slot = _find_free(idx, mask, h)
            fill += slot[0] == 0
            slot[0] = fm_slot(h, idmask, i)
            sg.live += 1
            i += 1
        self.n, self.fill = i, fill
        self.live += i - start
        self.n_ins += <uint64_t>(i - start)
        return 0

    @cython.final
    cdef int _update_from_seq(self, object seq) except -1:
        """Merge an exact list or tuple of pairs: dict's rules (as _update_pairs), with
        2-tuples read directly."""
        cdef Py_ssize_t i = 0
        name = None
        for item in seq:
            if type(item) is tuple and PyTuple_GET_SIZE(item) == 2:
                k = <object>PyTuple_GET_ITEM(item, 0)
                v = <object>PyTuple_GET_ITEM(item, 1)
            else:
                if name is None:
                    name = type(self).__name__
                k, v = _as_pair(item, i, name)
            self._set_cs(k, fm_hash_of(k), v)
            i += 1
        return 0

    @classmethod
    def fromkeys(cls, iterable, value=None, /):
        """Create a new map with keys from iterable and values set to value.
        O(len(iterable)), amortised O(1) per key with no O(n) pause.

        >>> HashMap.fromkeys("ab", 0)
        HashMap({'a': 0, 'b': 0})
        """
        d = cls()
        if type(d) is HashMap:
            t = type(iterable)
            if t is dict or t is set or t is frozenset or t is HashMap:
                (<HashMap>d)._reserve(len(iterable))     # exact types: a true length
            for k in iterable:
                (<HashMap>d)._set(k, fm_hash_of(k), value)
            (<HashMap>d)._settle(<Py_ssize_t>(<HashMap>d).n_ins)
        else:
            for k in iterable:
                d[k] = value
        if FM_DEBUG and isinstance(d, HashMap):
            (<HashMap>d)._dbg_check_cs()
        return d

    @cython.critical_section
    def copy(self):
        """A shallow copy (a HashMap, also for subclasses, like dict.copy). O(n).

        >>> HashMap(a=1).copy()
        HashMap({'a': 1})
        """
        cdef HashMap new = HashMap.__new__(HashMap)
        if self.live == 0:
            return new
        new._fill_from(self)
        if FM_DEBUG:
            new._dbg_check()     # (nothing else can reach `new` yet)
        return new

    @cython.final
    cdef int _fill_from(self, HashMap src) except -1:
        """Make this map, which has no live entries, hold src's items in src's order. No
        user code runs. A dense src outside a migration is copied layout and all (as
        dict.copy copies its table): segments, hash arrays and index by memcpy, then one
        INCREF pass; otherwise its live entries are appended, compacted, into a presized
        index, with their stored hashes and without lookups (the keys are distinct)."""
        if self.live != 0 or src is self:
            raise SystemError("_fill_from needs an empty map and another map")
        if src.live == 0:
            return 0
        if self.idx != NULL or self.segs != NULL:
            self._release_storage(False)     # holes only: no references to release
            self.stamp += 1
            self.layout += 1
        if src.old_idx == NULL and src.live * 3 >= src.n * 2:
            return self._copy_layout(src)
        return self._append_all(src)

    @cython.final
    cdef int _copy_layout(self, HashMap src) except -1:
        """_fill_from's memcpy path (self has no storage; src is not migrating)."""
        cdef Py_ssize_t i, used, cap, pos
        cdef size_t nbytes = (src.mask + 1) * sizeof(int32_t)
        cdef Seg* d
        cdef Entry* ep
        cdef void* p
        self.seg_shift = src.seg_shift
        self.seg_mask = src.seg_mask
        d = <Seg*>PyMem_RawCalloc(src.dir_cap, sizeof(Seg))
        if d == NULL:
            raise MemoryError()
        self.segs = d
        self.dir_cap = src.dir_cap
        # allocate everything first (self.n stays 0, so a failure leaves a valid empty map)
        for i in range(src.nsegs):
            cap = src._seg_cap(i)
            used = min(cap, src.n - (i << src.seg_shift))
            d[i].p = <Entry*>PyMem_RawMalloc(cap * sizeof(Entry))
            if d[i].p == NULL:
                raise MemoryError()
            self.nsegs = i + 1
            self.log_cap += cap
            if src.segs[i].h != NULL:
                d[i].h = <Py_hash_t*>PyMem_RawMalloc(cap * sizeof(Py_hash_t))
                if d[i].h == NULL:
                    raise MemoryError()
                if used > 0:
                    memcpy(d[i].h, src.segs[i].h, used * sizeof(Py_hash_t))
            if used > 0:
                memcpy(d[i].p, src.segs[i].p, used * sizeof(Entry))
            d[i].live = src.segs[i].live
        if FM_HAVE_MMAP and nbytes >= BIG_INDEX:
            p = fm_map_zeroed(nbytes, 0)
            if p != NULL:
                PyTraceMalloc_Track(TRACE_DOMAIN, <uintptr_t>p, nbytes)
        else:
            p = PyMem_RawMalloc(nbytes)
        if p == NULL:
            for i in range(self.nsegs):
                d[i].live = 0
            raise MemoryError()
        memcpy(p, src.idx, nbytes)
        self.idx = <int32_t*>p
        self.mask = src.mask
        self.usable = src.usable
        self.fill = src.fill
        self.idmask = src.idmask
        for i in range(self.nsegs):
            ep = d[i].p
            for pos in range(min(self._seg_cap(i), src.n - (i << src.seg_shift))):
                if ep[pos].key != NULL:
                    fm_incref(ep[pos].key)
                    fm_incref(ep[pos].value)
        self.n = src.n
        self.live = src.live
        self.n_ins += src.live
        self.stamp += 1
        self._set_room()
        return 0

    @cython.final
    cdef int _append_all(self, HashMap src) except -1:
        """_fill_from's appending path: src's live entries, in order, into a presized index."""
        cdef HashMap new = self
        cdef Py_ssize_t pos = 0
        cdef Entry* ep
        cdef Py_hash_t h
        new._reserve(src.live)
        while True:
            pos = src._next_pos(pos)
            if pos >= src.n:
                break
            ep = src._ent(pos)
            pos += 1
            if ep.key == NULL:
                continue
            # a copy holds distinct keys: append without lookups; no user code runs here
            h = src._ehash(pos - 1)
            new._append_known_n(&ep.key, &ep.value, &h, 1)
        return 0

    def __copy__(self):
        if type(self) is HashMap:
            new = HashMap.copy(self)     # (not an instance attribute named copy)
            attrs = vars(self)
            if attrs:
                vars(new).update(attrs)
            return new
        return _copy_via_reduce(self)

    # ------------------------------------------------------------------ extras

    @classmethod
    def with_capacity(cls, Py_ssize_t n):
        """A new, empty map that can hold n entries before it starts any migration (like
        Go's ``make(map[K]V, n)``). O(n / 2048) allocation calls.

        >>> m = HashMap.with_capacity(10_000); m.capacity >= 10_000
        True
        """
        if n < 0:
            raise ValueError("capacity must be >= 0")
        m = cls()
        if not isinstance(m, HashMap):    # a subclass whose __new__ returns something else
            raise TypeError(f"{cls.__name__}() returned {type(m).__name__}, not a HashMap: "
                            f"with_capacity cannot reserve room in it")
        (<HashMap>m)._reserve(n)
        if FM_DEBUG:
            (<HashMap>m)._dbg_check_cs()
        return m

    @cython.critical_section
    def reserve(self, Py_ssize_t n):
        """Make room for n entries in total (len included) so that inserting up to that
        many starts no migration. O(len) if the index must be rebuilt (done at once).

        >>> m = HashMap(a=1); m.reserve(100); m.capacity >= 100
        True
        """
        if n < 0:
            raise ValueError("capacity must be >= 0")
        self._reserve(n)
        if FM_DEBUG:
            self._dbg_check()

    @cython.final
    cdef int _reserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t slots
        if n > MAX_ENTRIES:
            raise MemoryError(f"cannot reserve {n} entries (the maximum is {MAX_ENTRIES})")
        if self.old_idx != NULL:
            self._complete_migration()
        if n <= self.live:
            n = self.live
        # the index must take n live entries plus the DUMMY slots already present
        if self.idx == NULL or self._capacity() < n:
            slots = _slots_for(n + 1)
            if self.idx == NULL:
                self._start_migration(slots, True)
            else:
                self._rebuild(slots)
        self._ensure_log(self.n + (n - self.live))
        return 0

    @cython.final
    cdef int _rebuild(self, Py_ssize_t slots) except -1:
        """Synchronous migration into an index of `slots` slots (whole-map calls only)."""
        if self.old_idx != NULL:
            self._complete_migration()
        self._start_migration(slots, True)   # allocation can fail: then nothing changed
        self._complete_migration()
        return 0

    @cython.critical_section
    def shrink_to_fit(self):
        """Compact the log and rebuild the index at the smallest size for len(self).
        O(n), done at once.

        >>> m = HashMap.fromkeys(range(1000)); [m.pop(k) for k in range(990)] and None
        >>> m.shrink_to_fit(); m.stats()["index_slots"]
        32
        """
        self._complete_migration()
        self._rebuild(_slots_for(self.live + 1))
        if self.nsegs == 1 and self.log_cap > 8:
            self._shrink_first_segment()
        if FM_DEBUG:
            self._dbg_check()

    @cython.final
    cdef void _shrink_first_segment(self) noexcept:
        cdef Py_ssize_t cap = 8
        cdef Entry* p
        cdef Py_hash_t* h
        while cap < self.n:
            cap *= 2
        if cap < self.log_cap:
            if self.segs[0].h != NULL:
                h = <Py_hash_t*>PyMem_RawRealloc(self.segs[0].h, cap * sizeof(Py_hash_t))
                if h == NULL:
                    return
                self.segs[0].h = h
            p = <Entry*>PyMem_RawRealloc(self.segs[0].p, cap * sizeof(Entry))
            if p != NULL:
                self.segs[0].p = p
                self.log_cap = cap
                self.stamp += 1

    @property
    def capacity(self):
        """How many entries the map can hold before its next migration starts (while one
        runs: at least this many). O(1).

        >>> HashMap.with_capacity(100).capacity >= 100
        True
        """
        with cython.critical_section(self):
            return self._capacity()

    @cython.final
    cdef Py_ssize_t _capacity(self) noexcept:
        """Exact outside migrations. During one, a lower bound: the entries not yet moved
        (at most old_end - r of them) will take slots in the new index."""
        cdef Py_ssize_t room
        if self.idx == NULL:
            return 0
        room = min(self.usable - self.fill, self.room_at - self.n)
        if self.old_idx != NULL:
            room -= max(0, self.old_end - self.mig_r)
        return self.live + max(0, room)

    @cython.critical_section
    def _progress(self):
        """(migrating, positions left to visit, migrations started, forced finishes); O(1).
        For tests."""
        if self.old_idx != NULL:
            return (True, self.n - self.mig_r, self.n_migrations, self.n_forced)
        return (False, 0, self.n_migrations, self.n_forced)

    @cython.critical_section
    def stats(self):
        """A dict describing the internal state (O(n): it counts the log's holes):

        ``len``, ``capacity``, ``index_slots``, ``index_fill``, ``tombstones`` (DUMMY
        slots + holes in the entry log), ``log_length``, ``migrating``,
        ``migration_remaining`` (log positions still to visit), ``old_index_slots``,
        ``migrations`` (started so far), ``forced_finishes`` (should stay 0),
        ``segments`` and ``bytes`` (memory held, as ``__sizeof__``).

        >>> s = HashMap.fromkeys(range(10)).stats()
        >>> s["len"], s["migrating"], s["tombstones"]
        (10, False, 0)
        """
        cdef Py_ssize_t holes = 0, pos = 0
        while True:
            pos = self._next_pos(pos)
            if pos >= self.n:
                break
            if self._ent(pos).key == NULL:
                holes += 1
            pos += 1
        migrating = self.old_idx != NULL
        return {
            "len": self.live,
            "capacity": self._capacity(),
            "index_slots": (self.mask + 1) if self.idx != NULL else 0,
            "index_fill": self.fill,
            "tombstones": holes + _count_dummies(self.idx, self.mask + 1 if self.idx != NULL else 0),
            "log_length": self.n - (self.mig_r - self.mig_w if migrating else 0),
            "log_holes": holes,
            "migrating": migrating,
            "migration_remaining": (self.n - self.mig_r) if migrating else 0,
            "old_index_slots": (self.old_mask + 1) if migrating else 0,
            "migrations": self.n_migrations,
            "forced_finishes": self.n_forced,
            "segments": self.nsegs,
            "bytes": self._sizeof(),
        }

    @cython.critical_section
    def __sizeof__(self):
        return self._sizeof()

    @cython.final
    cdef Py_ssize_t _sizeof(self):
        cdef Py_ssize_t size = type(self).__basicsize__, s
        size += self.dir_cap * sizeof(Seg)
        size += self.log_cap * sizeof(Entry)
        for s in range(self.nsegs):
            if self.segs[s].h != NULL:
                size += self._seg_cap(s) * sizeof(Py_hash_t)
        if self.idx != NULL:
            size += (self.mask + 1) * sizeof(int32_t)
        if self.old_idx != NULL:
            size += (self.old_mask + 1) * sizeof(int32_t)
        if self.pre_idx != NULL:
            size += self.pre_slots * sizeof(int32_t)
        return size + self.rel_bytes

    @cython.critical_section
    def _check(self):
        """Verify every internal invariant; raise AssertionError on the first violation.
        O(n + index size). For tests (debug builds also run it after mutating calls)."""
        self._verify()
        return True

    @cython.final
    cdef int _dbg_check(self) except -1:
        """Debug builds: the checker at the end of a mutating call, inside the map's
        critical section, once the map is consistent and the removed objects are
        released; it runs when fm_dbg_due says so for its cost (O(n + index size))."""
        cdef Py_ssize_t cost = self.n
        if self.idx != NULL:
            cost += self.mask + 1
        if self.old_idx != NULL:
            cost += self.old_mask + 1
        if fm_dbg_due(cost):
            self._verify()
        return 0

    @cython.final
    cdef int _dbg_check_cs(self) except -1:
        """_dbg_check for methods that do not hold the map's critical section."""
        with cython.critical_section(self):
            return self._dbg_check()

    @cython.final
    cdef int _verify(self) except -1:
        """_check's body: reads the map's storage only (no user code, no Python object
        allocated before a violation is found), so it may run anywhere the map is
        consistent, also while user code of another call on it is on the stack."""
        cdef Py_ssize_t pos = 0, live = 0, slots, s, ident, fill = 0
        cdef Entry* ep
        cdef int32_t* slot
        cdef bint migrating = self.old_idx != NULL
        cdef int32_t ix
        if self.idx == NULL:
            assert self.live == 0 and self.n == 0 and not migrating, "no index but entries"
            return 0
        assert self.n <= self.log_cap, "log end past allocated segments"
        if not migrating:
            assert self.mig_w == 0 and self.mig_r == 0, "cursor set outside a migration"
        else:
            assert 0 <= self.mig_w <= self.mig_r <= self.n, "cursor out of order"
            assert self.old_end <= self.n, "old_end past log end"
        # the logical log: live count, each live entry reachable in its index
        while True:
            pos = self._next_pos(pos)
            if pos >= self.n:
                break
            ep = self._ent(pos)
            if ep.key != NULL:
                live += 1
                assert ep.value != NULL, f"live entry {pos} without value"
                # (not `key.__hash__ is not None`: an attribute lookup may run user code,
                # and a class may drop its __hash__ while its instances are stored)
                assert _refcnt(ep.key) > 0 and _refcnt(ep.value) > 0, \
                    f"entry {pos}: freed key or value"
                if self.segs[pos >> self.seg_shift].h == NULL:
                    assert FM_IS_STR(ep.key), f"entry {pos}: not a str, no stored hash"
                    assert FM_STR_HASH(ep.key) != -1, f"entry {pos}: str hash not cached"
                slot = self._slot_of(pos)
                assert slot != NULL, f"entry {pos} not on its probe path"
                if migrating and self.mig_r <= pos < self.old_end:
                    assert _find_id(self.idx, self.mask, self.idmask, self._ehash(pos), pos) == NULL, \
                        f"unmoved entry {pos} also in the new index"
            else:
                assert ep.value == NULL, f"hole {pos} with a value"
            pos += 1
        assert live == self.live, f"live count {self.live} but {live} live entries"
        for s in range(self.nsegs):
            ident = 0
            for pos in range(s << self.seg_shift, min(self.n, (s + 1) << self.seg_shift)):
                if self._ent(pos).key != NULL:
                    ident += 1
            assert ident == self.segs[s].live, f"segment {s}: count {self.segs[s].live}, {ident} live"
        # every slot of the current index: fill count, references only live entries
        slots = self.mask + 1
        assert slots & (slots - 1) == 0, "index size not a power of two"
        for s in range(slots):
            ix = self.idx[s]
            if ix != 0:
                fill += 1
            if ix > 0:
                ident = <Py_ssize_t>(ix & self.idmask) - 1
                assert ident >= 0, f"slot {s}: id field 0"
                assert ident < self.n, f"slot {s} points past the log"
                assert not (migrating and self.mig_w <= ident < self.mig_r), \
                    f"slot {s} points into the migration gap"
                assert not (migrating and self.mig_r <= ident < self.old_end), \
                    f"new-index slot {s} points into the unvisited region"
                assert self._ent(ident).key != NULL, f"slot {s} points to a hole"
                assert ix == fm_slot(self._ehash(ident), self.idmask, ident), \
                    f"slot {s}: wrong tag"
            else:
                assert ix == 0 or ix == FM_SLOT_DUMMY, f"bad slot value {ix}"
        assert fill == self.fill, f"fill {self.fill} but {fill} used slots"
        assert self.fill <= self.usable, "index over its load limit"
        if migrating:
            for s in range(<Py_ssize_t>self.old_mask + 1):
                ix = self.old_idx[s]
                ident = <Py_ssize_t>(ix & self.old_idmask) - 1
                if ix > 0 and self.mig_r <= ident < self.old_end:
                    assert self._ent(ident).key != NULL, f"old slot {s} points to a hole"
                    assert ix == fm_slot(self._ehash(ident), self.old_idmask, ident), \
                        f"old slot {s}: wrong tag"
        return 0

    # ------------------------------------------------------------------ comparisons, repr

    def __eq__(self, other):
        # As dict: compare with HashMaps and dicts; other mappings get NotImplemented, so
        # their own __eq__ decides (collections.abc.Mapping compares item by item).
        if not isinstance(other, (HashMap, dict)):
            return NotImplemented
        return _mapping_equal(self, other)

    def __ne__(self, other):
        if not isinstance(other, (HashMap, dict)):
            return NotImplemented
        return not _mapping_equal(self, other)

    __hash__ = None

    def __repr__(self):
        name = type(self).__name__
        with cython.critical_section(self):
            empty = self.live == 0
        if empty:
            return f"{name}()"
        if Py_ReprEnter(self):
            return "..."
        try:
            parts = []
            for k, v, _ in _tolerant_items(self):
                parts.append(f"{k!r}: {v!r}")
            return f"{name}({{{', '.join(parts)}}})"
        finally:
            Py_ReprLeave(self)

    def __reduce_ex__(self, protocol):
        # as for a dict subclass (fastmaps._mapping.reduce_map)
        return _reduce_map(self, iter(self.items()))

    def __or__(self, other):
        if not isinstance(other, (HashMap, dict)):
            return NotImplemented
        new = HashMap.copy(self)      # as dict's |: not a subclass's copy() or update()
        (<HashMap>new)._update_from(other, False)
        if FM_DEBUG:
            (<HashMap>new)._dbg_check_cs()
        return new

    def __ror__(self, other):
        if not isinstance(other, (HashMap, dict)):
            return NotImplemented
        new = HashMap(other)
        new.update(self)
        return new

    def __ior__(self, other):
        self._update_from(other, False)  # as dict's |=: not a subclass's update()
        if FM_DEBUG:
            self._dbg_check_cs()
        return self

    def __class_getitem__(cls, item):
        return _GenericAlias(cls, item)


cdef Py_ssize_t _count_dummies(int32_t* idx, Py_ssize_t slots) noexcept:
    cdef Py_ssize_t s, c = 0
    for s in range(slots):
        if idx[s] == FM_SLOT_DUMMY:
            c += 1
    return c


cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object k) except? NULL


def _tolerant_items(HashMap m):
    """(key, value, hash) in order, like dict's internal iteration: tolerates mutation
    (never raises for it, may then skip or repeat) and never reads freed memory. Used by repr
    (_mapping_equal inlines the same loop)."""
    cdef Py_ssize_t pos = 0, found
    cdef PyObject* last_key = NULL
    cdef Py_hash_t last_hash = 0
    cdef uint64_t layout = m.layout
    cdef Entry* ep
    cdef bint got
    while True:
        # one step inside the map's critical section (never held across the yield)
        got = False
        with cython.critical_section(m):
            while True:
                if m.layout != layout:
                    layout = m.layout
                    if last_key != NULL:
                        found = m._find_key_id(last_key, last_hash)
                        if found >= 0:
                            pos = found + 1
                pos = m._next_pos(pos)
                if pos >= m.n:
                    break
                ep = m._ent(pos)
                pos += 1
                if ep.key == NULL:
                    continue
                last_key = ep.key
                last_hash = m._ehash(pos - 1)
                k = <object>ep.key
                v = <object>ep.value
                got = True
                break
        if not got:
            return
        yield k, v, last_hash


cdef bint _same_entries(HashMap a, HashMap b) noexcept:
    """Do a and b (neither migrating) hold the same key and value objects at every log
    position? Then a == b with no lookup and no user code (an identical value compares
    equal, as PyObject_RichCompareBool says): the case of a map and its copy. Pointer
    comparisons only; False just means "compare the general way"."""
    cdef Py_ssize_t base, j, cnt
    cdef Entry* pa
    cdef Entry* pb
    if (a.old_idx != NULL or b.old_idx != NULL or a.n != b.n
            or a.seg_shift != b.seg_shift or a.nsegs == 0 or b.nsegs == 0):
        return False
    base = 0
    while base < a.n:
        pa = a._ent(base)
        pb = b._ent(base)
        cnt = min(a.seg_mask + 1, a.n - base)
        for j in range(cnt):
            if pa[j].key != pb[j].key:
                return False
            # dict looks each key up with the other map's stored hash: a key whose hash
            # changed between the two insertions is not found there
            if pa[j].key != NULL and (pa[j].value != pb[j].value
                                      or a._ehash(base + j) != b._ehash(base + j)):
                return False
        base += cnt
    return True


cdef bint _equal_by_identity(HashMap a, HashMap b, Py_ssize_t* ppos, PyObject** last_key,
                             Py_hash_t* last_hash) noexcept:
    """_mapping_equal's pass without user code (a and b of equal length, both in their
    critical sections): True if every live entry of a has, in b, an entry whose key *is*
    its key, reached by a lookup with a's stored hash without passing another entry whose
    tag matches (so a lookup would call no ``__eq__``), and whose value *is* its value.
    Otherwise False, with *ppos the position in a of the first entry not settled, and
    *last_key / *last_hash the key and hash of the entry before it (if any)."""
    cdef Py_ssize_t pos = 0, i
    cdef Entry* ep
    cdef Py_hash_t h
    while True:
        pos = a._next_pos(pos)
        if pos >= a.n:
            return True
        ep = a._ent(pos)
        if ep.key != NULL:
            h = a._ehash(pos)
            i = b._find_key_id(ep.key, h, True)
            if i < 0 or b._ent(i).value != ep.value:
                ppos[0] = pos
                return False
            last_key[0] = ep.key
            last_hash[0] = h
        pos += 1


cdef bint _mapping_equal(HashMap a, object b) except -1:
    """a == b for b a HashMap or a dict: same length, and every key of a is in b (looked
    up without __missing__, with a's stored hash when b is a HashMap) with an equal value
    (identity first). Tolerates mutation during the comparison, as dict does."""
    cdef HashMap hb
    cdef int32_t* slot
    cdef Py_ssize_t i
    cdef PyObject* found
    cdef Py_ssize_t pos = 0
    cdef PyObject* last_key = NULL
    cdef Py_hash_t h = 0
    cdef uint64_t layout
    cdef Entry* ep
    cdef Py_ssize_t la, lb
    cdef bint got
    hb = b if isinstance(b, HashMap) else None
    # true sizes (a subclass's __len__ is not consulted, as dict's == does not); each map
    # is read inside its own critical section (free-threaded builds), never two at once
    with cython.critical_section(a):
        la = a.live
        layout = a.layout
    if hb is not None:
        with cython.critical_section(hb):
            lb = hb.live
    else:
        lb = PyDict_GET_SIZE(b)
    if la != lb:
        return False
    if hb is not None and hb is not a:
        with cython.critical_section(a, hb):
            same = _same_entries(a, hb)
            if not same:
                # every item that needs no user code to compare (b's entry for the key is
                # found by identity and its value is the same object) is settled here;
                # the loop below goes on from the first one that does (the sizes are read
                # again: another thread may have changed them since)
                if a.live != hb.live:
                    return False
                same = _equal_by_identity(a, hb, &pos, &last_key, &h)
                layout = a.layout
                # the loop below takes a's section again: another thread may move entries
                # in between. It relocates after the last settled key, which `k` keeps
                # alive (as each of its own steps does); with none settled it starts over
                if last_key == NULL:
                    pos = 0
                else:
                    k = <object>last_key
        if same:
            return True
    while True:
        # _tolerant_items, inlined (no generator per comparison); one step per critical
        # section, the lookup in b and the value comparison outside it
        got = False
        with cython.critical_section(a):
            while True:
                if a.layout != layout:
                    layout = a.layout
                    if last_key != NULL:
                        i = a._find_key_id(last_key, h)
                        if i >= 0:
                            pos = i + 1
                pos = a._next_pos(pos)
                if pos >= a.n:
                    break
                ep = a._ent(pos)
                pos += 1
                if ep.key == NULL:
                    continue
                last_key = ep.key
                h = a._ehash(pos - 1)
                k = <object>ep.key
                v = <object>ep.value
                got = True
                break
        if not got:
            return True
        if hb is not None:
            with cython.critical_section(hb):
                i = hb._lookup(k, h, &slot)
                if i >= 0:
                    bv = <object>hb._ent(i).value
            if i < 0:
                return False
        else:
            # (a borrowed reference: taken inside the dict's own critical section, so that
            # another thread cannot free the value first on free-threaded builds)
            with cython.critical_section(b):
                found = PyDict_GetItemWithError(b, k)   # (an error propagates)
                if found != NULL:
                    bv = <object>found
            if found == NULL:
                return False
        if not (v is bv or PyObject_RichCompareBool(v, bv, Py_EQ)):
            return False


_abc.MutableMapping.register(HashMap)


# ---------------------------------------------------------------------- iterators

cdef enum IterKind:
    ITER_KEYS = 0
    ITER_VALUES = 1
    ITER_ITEMS = 2


cdef object _STOP = object()     # _HashMapIterator._step: the iteration is over


cdef _HashMapIterator _make_iter(HashMap m, int kind, bint rev):
    """Iterator factory (a direct tp_new call: no argument parsing)."""
    cdef _HashMapIterator it = _HashMapIterator.__new__(_HashMapIterator)
    with cython.critical_section(m):
        _init_iter(it, m, kind, rev)
    return it


cdef void _init_iter(_HashMapIterator it, HashMap m, int kind, bint rev) noexcept:
    it.m = m
    it.kind = kind
    it.rev = rev
    it.used = m.live
    it.remaining = m.live
    it.layout = m.layout
    it.last_key = NULL
    it.n_dels = m.n_dels
    it.pos = m.n - 1 if rev else 0


@cython.final
cdef class _HashMapIterator:
    """Iterator over a HashMap's keys, values or items, forwards or in reverse."""
    cdef HashMap m             # None once exhausted
    cdef Py_ssize_t pos
    cdef PyObject* last_key    # the last key produced (read only while surely alive)
    cdef Py_hash_t last_hash   # hash of last_key; -1: last_key is an exact str (read it there)
    cdef uint64_t n_dels       # the map's deletion count at the last step
    cdef uint64_t layout
    cdef Py_ssize_t used
    cdef Py_ssize_t remaining
    cdef int kind
    cdef bint rev
    cdef tuple result          # reused items result, see _item

    def __iter__(self):
        return self

    def __length_hint__(self):
        cdef HashMap m = self.m
        if m is None:
            return 0
        with cython.critical_section(m):
            if m.live != self.used:
                return 0
            return self.remaining

    def __reduce__(self):
        # like dict iterators: pickled as an iterator over a list of what remains
        cdef _HashMapIterator twin
        cdef HashMap m = self.m
        if m is None:
            return (iter, ((),))
        twin = _make_iter(m, self.kind, self.rev)
        # the position is read in the map's critical section, where this iterator's steps
        # run on free-threaded builds: a step of another thread cannot interleave with it
        with cython.critical_section(m):
            twin.pos, twin.last_key, twin.last_hash = self.pos, self.last_key, self.last_hash
            twin.layout, twin.used, twin.remaining = self.layout, self.used, self.remaining
            twin.n_dels = self.n_dels
        return (iter, (list(twin),))

    def __next__(self):
        # free-threaded builds: the step runs in the map's critical section (its writers
        # are excluded while it reads the entry and takes references to what it returns);
        # the constant folds the branch away on GIL builds. The end is signalled by the
        # _STOP sentinel and raised here (Cython ends the iteration without building an
        # exception then).
        if FM_FREE_THREADED:
            r = self._step_locked()
        else:
            r = self._step()
        if r is _STOP:
            raise StopIteration
        return r

    cdef object _step_locked(self):
        # self.m is read under the iterator's own critical section: a step of another
        # thread sharing this iterator may drop it (set it to None) at the end
        cdef HashMap m
        with cython.critical_section(self):
            m = self.m
            if m is None:
                return _STOP
            with cython.critical_section(m):
                return self._step()

    cdef inline Entry* _next_entry(self) except? NULL:
        """Advance to the next live entry and return it (NULL: the iteration is over), or
        raise as dict's iterators do when the map changed size or keys."""
        cdef Entry* ep
        if self.m is None:
            return NULL
        # self.m is read through the typed attribute (no reference counting per item)
        if self.m.live != self.used:
            self._size_changed()
        if self.m.layout != self.layout:
            self._relocate(self.m)
        ep = self._bwd() if self.rev else self._fwd()
        if ep == NULL:
            self.m = None
            return NULL
        if self.remaining <= 0:
            self._keys_changed()
        self.remaining -= 1
        self.last_key = ep.key
        self.n_dels = self.m.n_dels
        return ep

    cdef inline object _step(self):
        """The next item, or _STOP."""
        cdef Entry* ep = self._next_entry()
        if ep == NULL:
            return _STOP
        if self.kind == ITER_KEYS:
            return <object>ep.key
        if self.kind == ITER_VALUES:
            return <object>ep.value
        return self._item(ep.key, ep.value)

    # _fwd/_bwd read the map only through self.m's C fields: no reference counting.
    cdef inline Entry* _fwd(self) noexcept:
        """The next live entry in logical order ([0, w) ++ [r, n)), or NULL."""
        cdef Py_ssize_t pos = self.pos
        cdef Py_ssize_t n = self.m.n
        cdef bint migrating = self.m.old_idx != NULL
        cdef Seg* segs = self.m.segs
        cdef int shift = self.m.seg_shift
        cdef Py_ssize_t smask = self.m.seg_mask
        cdef Seg* sg
        cdef Entry* ep
        while True:
            if migrating and self.m.mig_w <= pos < self.m.mig_r:
                pos = self.m.mig_r
            if pos >= n:
                self.pos = pos
                return NULL
            sg = segs + (pos >> shift)
            ep = sg.p + (pos & smask)
            if ep.key != NULL:
                self.last_hash = sg.h[pos & smask] if sg.h != NULL else -1
                self.pos = pos + 1
                return ep
            pos += 1

    cdef inline Entry* _bwd(self) noexcept:
        """The previous live entry in logical order, or NULL."""
        cdef Py_ssize_t pos = self.pos
        cdef Py_ssize_t n = self.m.n
        cdef bint migrating = self.m.old_idx != NULL
        cdef Seg* segs = self.m.segs
        cdef int shift = self.m.seg_shift
        cdef Py_ssize_t smask = self.m.seg_mask
        cdef Seg* sg
        cdef Entry* ep
        while True:
            if migrating and self.m.mig_w <= pos < self.m.mig_r:
                pos = self.m.mig_w - 1
            if pos < 0:
                self.pos = pos
                return NULL
            if pos >= n:
                pos = n - 1
                continue
            sg = segs + (pos >> shift)
            ep = sg.p + (pos & smask)
            if ep.key != NULL:
                self.last_hash = sg.h[pos & smask] if sg.h != NULL else -1
                self.pos = pos - 1
                return ep
            pos -= 1

    cdef object _size_changed(self):
        self.used = -1             # like dict: the error is permanent
        raise RuntimeError(f"{type(self.m).__name__} changed size during iteration")

    cdef object _keys_changed(self):
        name = type(self.m).__name__
        self.remaining = -1
        self.m = None              # like dict: later calls end the iteration
        raise RuntimeError(f"{name} keys changed during iteration")

    cdef int _relocate(self, HashMap m) except -1:
        """Entries moved since the last step: continue next to the last key produced."""
        cdef Py_ssize_t found
        self.layout = m.layout
        if self.last_key == NULL:
            self.pos = m.n - 1 if self.rev else 0
            return 0
        # Without deletions the last key is still the entry we produced (it may only have
        # moved). After a delete it may be gone, or re-inserted at the end: keys changed.
        # (So the last key is alive, and an exact str's cached hash can be read from it.)
        found = -1 if m.n_dels != self.n_dels else m._find_key_id(self.last_key, self._last_hash())
        if found < 0:
            self.remaining = -1
            self.m = None
            raise RuntimeError(f"{type(m).__name__} keys changed during iteration")
        self.pos = found - 1 if self.rev else found + 1
        return 0

    cdef inline Py_hash_t _last_hash(self) noexcept:
        """The hash of the last key produced, which must still be alive: stored by the
        step (-1: the key is an exact str that caches it)."""
        return self.last_hash if self.last_hash != -1 else FM_STR_HASH(self.last_key)

    cdef inline object _item(self, PyObject* k, PyObject* v):
        """(k, v), reusing the previous result tuple when the caller has dropped it (as
        dict's items iterator does): no allocation per item in `for k, v in m.items()`."""
        cdef PyObject* res = <PyObject*>self.result
        # (not on free-threaded builds, where a count of 1 does not prove that no other
        # thread holds the tuple: the count is split between owner and other threads)
        if not FM_FREE_THREADED and res != <PyObject*>None and fm_refcnt(res) == 1:
            _reuse_pair(res, k, v)
            result = <object>res
            fm_decref(res)             # (_reuse_pair's reference: `result` holds one)
            return result
        result = (<object>k, <object>v)
        self.result = result
        return result


cdef inline void _reuse_pair(PyObject* res, PyObject* k, PyObject* v) noexcept:
    """Make the 2-tuple res, which nobody else holds (a count of 1, GIL builds only),
    hold (k, v) in place of its items, and take a new reference to it for the caller:
    _item's reuse, as dict's items iterator does. The reference is taken first, as
    dict's does: releasing the old items can run a __del__ that steps this iterator
    again, which must then see the tuple as held (and make a new one), not reuse it or
    free it."""
    cdef PyObject* old_k = fm_tuple_get(res, 0)
    cdef PyObject* old_v = fm_tuple_get(res, 1)
    fm_incref(res)
    fm_incref(k)
    fm_incref(v)
    fm_tuple_set(res, 0, k)
    fm_tuple_set(res, 1, v)
    # the GC may have untracked it (it does so to tuples of untracked atoms); that
    # matters only if it now holds an object of a GC type (str and int are not: a
    # type-flag test spares the call for them)
    if (FM_TYPE_IS_GC(k) or FM_TYPE_IS_GC(v)) and not fm_gc_is_tracked(res):
        fm_gc_track(res)
    fm_decref(old_k)                   # after the tuple is consistent again
    fm_decref(old_v)


cdef PyObject* _iternext(_HashMapIterator it) except? NULL:
    """_HashMapIterator's tp_iternext on GIL builds (installed at import, in place of the
    generated ``__next__`` wrapper): the common step inline, which is a step while the
    map's size and layout are what the iterator last saw and no migration runs (so
    ``_next_entry``'s checks pass and only ``_fwd``/``_bwd`` remain), and, for items, the
    reuse of the previous result tuple; the rest (the end, the first step after a change,
    a new tuple, errors) goes through ``_step``. NULL with no exception set ends the
    iteration. (``it`` is borrowed: the slot's one argument.)"""
    cdef Entry* ep
    cdef PyObject* r
    if (it.m is not None and it.m.live == it.used and it.m.layout == it.layout
            and it.m.old_idx == NULL and it.remaining > 0):
        ep = it._bwd() if it.rev else it._fwd()
        if ep != NULL:
            it.remaining -= 1
            it.last_key = ep.key
            it.n_dels = it.m.n_dels
            if it.kind == ITER_KEYS:
                r = ep.key
            elif it.kind == ITER_VALUES:
                r = ep.value
            else:
                r = <PyObject*>it.result
                if not FM_FREE_THREADED and fm_refcnt(r) == 1 and r != <PyObject*>None:
                    _reuse_pair(r, ep.key, ep.value)     # the common case, inline
                    return r                             # (_reuse_pair's reference)
                else:
                    item = it._item(ep.key, ep.value)
                    r = <PyObject*>item
            fm_incref(r)
            return r
    out = it._step()        # (after _fwd/_bwd found the end, they find it again)
    if out is _STOP:
        return NULL
    fm_incref(<PyObject*>out)
    return <PyObject*>out


cdef extern from "Python.h":
    # Raw-pointer forms of the C API, so that Cython adds no reference counting of its own.
    Py_ssize_t fm_refcnt "Py_REFCNT" (PyObject* o) noexcept
    PyObject* fm_tuple_get "PyTuple_GET_ITEM" (PyObject* t, Py_ssize_t i) noexcept
    void fm_tuple_set "PyTuple_SET_ITEM" (PyObject* t, Py_ssize_t i, PyObject* o) noexcept
    void fm_incref "Py_INCREF" (PyObject* o) noexcept
    void fm_decref "Py_DECREF" (PyObject* o) noexcept
    int fm_gc_is_tracked "PyObject_GC_IsTracked" (PyObject* o) noexcept
    void fm_gc_track "PyObject_GC_Track" (PyObject* o) noexcept


# ---------------------------------------------------------------------- views

# keys(), values() and items() are fastmaps._mapping's views; these hooks are how they read
# a HashMap: C calls into the same lookups and iterators HashMap's own methods use (each in
# the map's critical section), so a view costs no Python-level call per item or lookup.

cdef Py_ssize_t _view_len(object m) except -1:
    with cython.critical_section(m):
        return (<HashMap>m).live


cdef object _view_iter(object m, int kind, bint rev):
    return _make_iter(<HashMap>m, kind, rev)       # VIEW_* are the ITER_* kinds


cdef int _view_contains(object m, object key) except -1:
    cdef HashMap hm = <HashMap>m
    cdef int32_t* slot
    with cython.critical_section(hm):
        return hm._lookup(key, fm_hash_of(key), &slot) >= 0   # not a subclass's __contains__


cdef object _view_lookup(object m, object key, object missing):
    cdef HashMap hm = <HashMap>m
    cdef int32_t* slot
    cdef Py_ssize_t i
    with cython.critical_section(hm):
        i = hm._lookup(key, fm_hash_of(key), &slot)
        if i < 0:
            return missing
        return <object>hm._ent(i).value


cdef view_ops _VIEW_OPS
_VIEW_OPS.length = _view_len
_VIEW_OPS.iterate = _view_iter
_VIEW_OPS.contains = _view_contains
_VIEW_OPS.lookup = _view_lookup
if (VIEW_KEYS, VIEW_VALUES, VIEW_ITEMS) != (ITER_KEYS, ITER_VALUES, ITER_ITEMS):
    raise ImportError("fastmaps._hashmap: view kinds and iterator kinds differ")


# ---------------------------------------------------------------------- cyclic GC

cdef fm_traverseproc _base_traverse = NULL
cdef fm_inquiry _base_clear = NULL


cdef int _hashmap_traverse(PyObject* o, fm_visitproc visit, void* arg) noexcept:
    """tp_traverse: visit every key and value exactly once (the gap holds none)."""
    cdef HashMap m = <HashMap>o
    cdef Py_ssize_t i, n = m.n
    cdef Entry* ep
    cdef int r
    for i in range(n):
        if m.old_idx != NULL and m.mig_w <= i < m.mig_r:
            continue
        ep = m._ent(i)
        if ep.key != NULL:
            r = visit(ep.key, arg)
            if r:
                return r
            r = visit(ep.value, arg)
            if r:
                return r
    if _base_traverse != NULL:
        return _base_traverse(o, visit, arg)
    return 0


cdef int _hashmap_clear(PyObject* o) noexcept:
    """tp_clear: break reference cycles by clearing the map, at C level: a subclass's
    clear() or an instance attribute named clear must not run instead (the cycle would
    never be freed)."""
    cdef HashMap m = <HashMap>o
    m._clear(False)
    if _base_clear != NULL:
        return _base_clear(o)
    return 0


if not FM_FREE_THREADED:
    fm_set_iternext(<PyTypeObject*>_HashMapIterator, <fm_iternextfunc>_iternext)
fm_set_gc_slots(<PyTypeObject*>HashMap, _hashmap_traverse, _hashmap_clear,
                &_base_traverse, &_base_clear)
fm_set_mapping_flag(<PyTypeObject*>HashMap)
