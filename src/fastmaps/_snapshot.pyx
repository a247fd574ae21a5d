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
  (``i = hash & mask``, then ``i = 5*i + 1 + (perturb >>= 5)``).  A slot is EMPTY (-1),
  DUMMY (-2), or a live record's **tag | position**: the position in the low bits given
  by the index's position mask (sized when the index is made, ``fm_pmask_for``: twice
  the slots or twice the log, whichever is larger), the tag in the bits above, up to
  bit 30 (mixed high bits of the hash, ``fm_stag``; 9 bits at 10^6 entries, more below).
  One XOR and one compare tell whether a live slot's tag matches, and the record is
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
(``oroot``) and gets a new, empty one (``iroot``: O(1), because it is a tree of shared,
never-freed all-EMPTY pages that the first write to each page copies), sized for >= 3x
the live count when growing and with room for every insert the migration can overlap.
Three cursors in the version split the log::

    [0, mw)        compacted; indexed in the new index
    [mw, mr)       the gap: holes only, indexed nowhere
    [mr, mend)     not visited yet; live records indexed in the old index
    [mend, elen)   appended during the migration; indexed in the new index

Every write (insert, delete, update, each item of a bulk write) then advances ``mr`` by
``step`` (8) log positions: a hole is skipped; a live record is *moved* down to ``mw``
(its key and value references change place: no incref/decref, unless the page is shared
with another version and has to be copied first, 32 increfs) and its slot in the new
index is written (a free slot for a record from the old region, the re-pointed slot for
one appended during the migration).  A log page left wholly inside the gap is replaced by
a shared all-hole page (freed now, copied back if ``mw`` reaches it).  When the cursor has
nothing left to move, the log ends at ``mw``, trailing holes are trimmed and the old index
is dropped; its pages (O(n/256) of them, no Python objects) are queued and released one
inner node (<= 32 pages) per later write, so no write frees O(n) pages either.  Lookups
probe the new index and, on a miss there, the old one, where a slot pointing outside
``[mr, mend)`` is stale and skipped without reading the log; a delete marks the slot of
whichever index holds the key.  Insertion order is kept (records only move down, in
order, into the gap) and so is LIFO ``popitem`` (the trim skips the gap in one step).
Sizing makes the new index unable to fill before the migration ends (it needs at most
elen / (step - 1) writes); if it ever did, the insert would finish the migration at once
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
Memory: at rest (no migration) elen <= 2*count + 32 log records and index load between
1/6 and 2/3; during a migration the old index is kept as well, and holes deleted during
it are compacted by the next one.
Deleting the last record trims the run of holes before it (so that popitem stays LIFO)
through the live counts: O(log n) even after a long stretch at the end of the log was
emptied (500k trailing holes at 10^6: 0.009 ms, was 0.5-2 ms when it read every hole).

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

**Why this structure (chosen by measurement; details in docs/design.md).**  The previous
version of this module was a CHAMP-style HAMT.  It iterated in hash order (1.6x dict at
10^3, 7.5-9.4x at 10^6, keys and values touched in random memory order), its lookups in
insertion order were 1.6-2.7x dict, and its writes were no faster than immutables.Map.set.
An ordered log next to the trie would have fixed only iteration; a frozen base plus an
overlay makes every read check the overlay and merges every O(n/8) writes.  Dict's own
layout, paged, gives dict's memory access pattern for reads (0.6-1.36x dict, iteration
about 1.0x at every size), O(1) pages per write (0.32-0.53x immutables.Map.set), and,
with the incremental migration, none of dict's O(n) resize pauses.

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
"""

cimport cython
from cpython.object cimport PyObject
from cpython.dict cimport PyDict_Size
from cpython.pythread cimport PyThread_get_thread_ident
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t

import collections.abc as _abc
from fastmaps._hashmap import _update_pairs, _as_pair, _view_isdisjoint   # dict's rules, shared
import copyreg as _copyreg
from types import GenericAlias as _GenericAlias, MappingProxyType as _MappingProxyType

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    #define FM_EBITS 5                    /* log entries per leaf page: 32 */
    #define FM_ECAP (1 << FM_EBITS)
    #define FM_IBITS 8                    /* index slots per leaf page: 256 */
    #define FM_ICAP (1 << FM_IBITS)
    #define FM_FBITS 5                    /* children per inner node: 32 */
    #define FM_FAN (1 << FM_FBITS)
    #define FM_EMPTY (-1)
    #define FM_DUMMY (-2)
    #define FM_INNER 0
    #define FM_ELEAF 1
    #define FM_ILEAF 2
    #define FM_MAX_LEN ((Py_ssize_t)0x7fffffff)

    typedef struct fm_node {
        Py_ssize_t refcnt;     /* node reference count (atomic on free-threaded builds) */
        uint32_t live;         /* log tree: live records in this subtree (index tree: 0) */
        uint16_t cap;          /* leaves: number of records/slots; inner nodes: FM_FAN */
        uint8_t kind;          /* FM_INNER, FM_ELEAF or FM_ILEAF */
        uint8_t _pad;
        /* followed by fm_node *[cap], fm_entry[cap] or int32_t[cap] */
    } fm_node;

    /* 16 bytes, so that a page's records / slots start 16-byte aligned after it */
    typedef char fm_node_header_is_16_bytes[sizeof(fm_node) == 16 ? 1 : -1];

    typedef struct fm_entry {
        Py_hash_t hash;
        PyObject *key;         /* NULL: a hole */
        PyObject *value;
    } fm_entry;

    typedef struct fm_ver {
        fm_node *eroot;        /* entry log tree (NULL: no page) */
        fm_node *iroot;        /* index tree (NULL: no index, count == 0) */
        Py_ssize_t elen;       /* log positions in use, holes included */
        Py_ssize_t count;      /* live entries */
        Py_ssize_t fill;       /* index slots that are not EMPTY */
        size_t imask;          /* index slots - 1 */
        int edepth, idepth;    /* inner levels above the leaf pages */
        /* incremental migration (see "Migration" in the module docstring); oroot == NULL:
           none running.  Log positions [0, mw): compacted, indexed in the new index
           (iroot); [mw, mr): the gap, holes only, indexed nowhere; [mr, mend): not yet
           visited, live ones indexed in the old index (oroot); [mend, elen): appended
           during the migration, indexed in the new index. */
        fm_node *oroot;
        size_t omask;
        int odepth;
        Py_ssize_t mw, mr, mend;
        /* position fields of the slots of iroot / oroot (2^k - 1, see fm_stag) */
        uint32_t ipmask, opmask;
    } fm_ver;

    static inline fm_node **fm_kids(fm_node *n) { return (fm_node **)(n + 1); }
    static inline fm_entry *fm_ents(fm_node *n) { return (fm_entry *)(n + 1); }
    static inline int32_t *fm_slots(fm_node *n) { return (int32_t *)(n + 1); }
    /* Index slots: FM_EMPTY (-1), FM_DUMMY (-2), or a live slot's tag | pos, where pos
       (the log position) fills the low bits given by the index's position mask pmask
       (2^k - 1, <= 2^31 - 1) and the tag the bits above it up to bit 30: mixed high bits
       of the hash (int hashes are the identity, so their high bits are often zero and
       their low bits chose the slot).  A probe computes x = slot ^ fm_stag(h, pmask):
       x <= pmask exactly when the slot is live and its tag matches, and then x is the
       position (EMPTY and DUMMY have bit 31 set, so x > pmask for them).  The record is
       read only then: a miss usually reads no record and a hit only its own, with no
       second array to read (the tag travels in the slot). */
    static inline uint32_t fm_stag(Py_hash_t h, uint32_t pmask) {
        return (uint32_t)(((uint64_t)h * 0x9E3779B97F4A7C15ull) >> 33) & ~pmask;
    }

    /* ---- atomics: real ones on free-threaded builds, plain code under the GIL ---- */
    #ifdef Py_GIL_DISABLED
    static inline void fm_node_incref(fm_node *n) { _Py_atomic_add_ssize(&n->refcnt, 1); }
    static inline int fm_node_decref_is_zero(fm_node *n) { return _Py_atomic_add_ssize(&n->refcnt, -1) == 1; }
    static inline Py_ssize_t fm_node_refcnt(fm_node *n) { return _Py_atomic_load_ssize(&n->refcnt); }
    /* sequentially consistent, not just acquire: the reader's "announce (readers + 1),
       then load _cur" and the writer's "exchange _cur, then load readers" are the
       store-buffering pattern, which C11 only forbids when all four are seq_cst (a plain
       load on x86, ldar on ARMv8: no cost over acquire there) */
    static inline PyObject *fm_load_published(PyObject **p) { return (PyObject *)_Py_atomic_load_ptr(p); }
    static inline PyObject *fm_exchange_published(PyObject **p, PyObject *v) { return (PyObject *)_Py_atomic_exchange_ptr(p, v); }
    static inline void fm_readers_enter(Py_ssize_t *c) { _Py_atomic_add_ssize(c, 1); }
    static inline void fm_readers_exit(Py_ssize_t *c) { _Py_atomic_add_ssize(c, -1); }
    static inline Py_ssize_t fm_readers_load(Py_ssize_t *c) { return _Py_atomic_load_ssize(c); }
    static inline void fm_readers_add(Py_ssize_t *c, Py_ssize_t d) { _Py_atomic_add_ssize(c, d); }
    static inline uintptr_t fm_owner_load(uintptr_t *p) { return _Py_atomic_load_uintptr_relaxed(p); }
    static inline void fm_owner_store(uintptr_t *p, uintptr_t v) { _Py_atomic_store_uintptr_relaxed(p, v); }
    /* Snapshot.__hash__'s lazy cache: threads may compute and store it at once (the same
       value); relaxed atomics make that race defined */
    static inline Py_hash_t fm_hash_cache_load(Py_hash_t *p) { return _Py_atomic_load_ssize_relaxed(p); }
    static inline void fm_hash_cache_store(Py_hash_t *p, Py_hash_t v) { _Py_atomic_store_ssize_relaxed(p, v); }
    static inline int fm_flag_load_acquire(int *p) { return _Py_atomic_load_int_acquire(p); }
    static inline void fm_flag_store_release(int *p, int v) { _Py_atomic_store_int_release(p, v); }
    #define FM_FREE_THREADED 1
    #else
    static inline void fm_node_incref(fm_node *n) { n->refcnt++; }
    static inline int fm_node_decref_is_zero(fm_node *n) { return --n->refcnt == 0; }
    static inline Py_ssize_t fm_node_refcnt(fm_node *n) { return n->refcnt; }
    static inline PyObject *fm_load_published(PyObject **p) { return *p; }
    static inline PyObject *fm_exchange_published(PyObject **p, PyObject *v) { PyObject *o = *p; *p = v; return o; }
    static inline void fm_readers_enter(Py_ssize_t *c) { (void)c; }
    static inline void fm_readers_exit(Py_ssize_t *c) { (void)c; }
    static inline Py_ssize_t fm_readers_load(Py_ssize_t *c) { return *c; }
    static inline void fm_readers_add(Py_ssize_t *c, Py_ssize_t d) { *c += d; }
    static inline uintptr_t fm_owner_load(uintptr_t *p) { return *p; }
    static inline void fm_owner_store(uintptr_t *p, uintptr_t v) { *p = v; }
    static inline Py_hash_t fm_hash_cache_load(Py_hash_t *p) { return *p; }
    static inline void fm_hash_cache_store(Py_hash_t *p, Py_hash_t v) { *p = v; }
    static inline int fm_flag_load_acquire(int *p) { return *p; }
    static inline void fm_flag_store_release(int *p, int v) { *p = v; }
    #define FM_FREE_THREADED 0
    #endif

    /* hash(key); for an exact str, its cached hash is read directly (as dict does) */
    static inline Py_hash_t fm_hash_of(PyObject *k) {
        if (PyUnicode_CheckExact(k)) {
    #ifdef Py_GIL_DISABLED
            Py_hash_t h = _Py_atomic_load_ssize_relaxed(&((PyASCIIObject *)k)->hash);
    #else
            Py_hash_t h = ((PyASCIIObject *)k)->hash;
    #endif
            if (h != -1) return h;
        }
        return PyObject_Hash(k);
    }

    static inline int fm_exact_str_or_int(PyObject *k) {
        return PyUnicode_CheckExact(k) || PyLong_CheckExact(k);
    }

    /* ---- node allocation and release ---- */
    static size_t fm_payload(int kind, uint32_t cap) {
        return kind == FM_INNER ? cap * sizeof(fm_node *)
             : kind == FM_ELEAF ? cap * sizeof(fm_entry) : cap * sizeof(int32_t);
    }
    static fm_node *fm_node_new(int kind, uint32_t cap) {
        size_t sz = fm_payload(kind, cap);
        fm_node *n = (fm_node *)PyMem_Malloc(sizeof(fm_node) + sz);
        if (n == NULL) { PyErr_NoMemory(); return NULL; }
        n->refcnt = 1; n->live = 0; n->cap = (uint16_t)cap; n->kind = (uint8_t)kind;
        n->_pad = 0;
        /* index slots 0xff..: FM_EMPTY */
        memset((void *)(n + 1), kind == FM_ILEAF ? 0xff : 0, sz);
        return n;
    }
    static void fm_node_free(fm_node *n);
    static inline void fm_node_decref(fm_node *n) {
        if (n != NULL && fm_node_decref_is_zero(n)) fm_node_free(n);
    }
    static void fm_node_free(fm_node *n) {
        uint32_t i;
        if (n->kind == FM_INNER) {
            fm_node **c = fm_kids(n);
            for (i = 0; i < n->cap; i++) fm_node_decref(c[i]);
        } else if (n->kind == FM_ELEAF) {
            fm_entry *e = fm_ents(n);
            for (i = 0; i < n->cap; i++)
                if (e[i].key != NULL) { Py_DECREF(e[i].key); Py_DECREF(e[i].value); }
        }
        PyMem_Free(n);
    }
    /* A copy of n with capacity cap >= n->cap, sharing n's children / keys / values. */
    static fm_node *fm_node_clone(fm_node *n, uint32_t cap) {
        fm_node *c = fm_node_new(n->kind, cap);
        uint32_t i;
        if (c == NULL) return NULL;
        memcpy((void *)(c + 1), (void *)(n + 1), fm_payload(n->kind, n->cap));
        c->live = n->live;
        if (n->kind == FM_INNER) {
            fm_node **k = fm_kids(c);
            for (i = 0; i < n->cap; i++) if (k[i] != NULL) fm_node_incref(k[i]);
        } else if (n->kind == FM_ELEAF) {
            fm_entry *e = fm_ents(c);
            for (i = 0; i < n->cap; i++)
                if (e[i].key != NULL) { Py_INCREF(e[i].key); Py_INCREF(e[i].value); }
        }
        return c;
    }

    /* ---- references to drop later (after the writer lock is released) ---- */
    #define FM_PEND_INLINE 6
    typedef struct fm_pending { void **items; Py_ssize_t n, cap; void *small[FM_PEND_INLINE]; } fm_pending;
    static inline void fm_pending_init(fm_pending *p) { p->items = p->small; p->n = 0; p->cap = FM_PEND_INLINE; }
    static int fm_pending_reserve(fm_pending *p, Py_ssize_t k) {
        if (p->n + k > p->cap) {
            Py_ssize_t cap = p->cap * 2;
            void **items;
            while (cap < p->n + k) cap *= 2;
            if (p->items == p->small) {
                items = (void **)PyMem_Malloc(cap * sizeof(void *));
                if (items != NULL) memcpy(items, p->small, p->n * sizeof(void *));
            } else items = (void **)PyMem_Realloc(p->items, cap * sizeof(void *));
            if (items == NULL) { PyErr_NoMemory(); return -1; }
            p->items = items; p->cap = cap;
        }
        return 0;
    }
    static inline int fm_pending_push(fm_pending *p, void *item) {
        if (p->n == p->cap && fm_pending_reserve(p, 1) < 0) return -1;
        p->items[p->n++] = item;
        return 0;
    }
    /* objects are pushed as-is, nodes with the low bit set */
    static inline int fm_pending_push_obj(fm_pending *p, PyObject *o) { return fm_pending_push(p, (void *)o); }
    static inline int fm_pending_push_node(fm_pending *p, fm_node *n) {
        if (n == NULL) return 0;
        return fm_pending_push(p, (void *)((uintptr_t)n | 1));
    }
    /* Release everything; safe to run user code (__del__) from here. */
    static void fm_pending_flush(fm_pending *p) {
        while (p->n > 0) {
            void **items = p->items;
            Py_ssize_t i, n = p->n;
            int heap = items != p->small;
            void *local[FM_PEND_INLINE];
            if (!heap) { memcpy(local, items, n * sizeof(void *)); items = local; }
            fm_pending_init(p);
            for (i = 0; i < n; i++) {
                uintptr_t v = (uintptr_t)items[i];
                if (v & 1) fm_node_decref((fm_node *)(v & ~(uintptr_t)1));
                else Py_DECREF((PyObject *)v);
            }
            if (heap) PyMem_Free(items);
        }
        if (p->items != p->small) { PyMem_Free(p->items); fm_pending_init(p); }
    }
    static int fm_pending_move_last(fm_pending *src, fm_pending *dst) {
        void *item = src->items[src->n - 1];
        if (fm_pending_push(dst, item) < 0) return -1;
        src->n--;
        return 0;
    }

    /* ---- reading a version ---- */
    #if defined(__GNUC__) || defined(__clang__)
    #define FM_HOT static inline __attribute__((always_inline))
    #else
    #define FM_HOT static inline
    #endif
    FM_HOT fm_entry *fm_entry_at(const fm_ver *v, Py_ssize_t p) {
        fm_node *n = v->eroot;
        int d;
        for (d = v->edepth; d > 0; d--)
            n = fm_kids(n)[((size_t)p >> (FM_EBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
        return fm_ents(n) + ((size_t)p & (FM_ECAP - 1));
    }
    FM_HOT int32_t *fm_islot_at(fm_node *n, int depth, size_t i) {
        int d;
        for (d = depth; d > 0; d--)
            n = fm_kids(n)[(i >> (FM_IBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
        return fm_slots(n) + (i & (FM_ICAP - 1));
    }
    FM_HOT int32_t *fm_slot_at(const fm_ver *v, size_t i) {
        return fm_islot_at(v->iroot, v->idepth, i);
    }
    /* The leaf page of an index holding slot i. */
    FM_HOT fm_node *fm_ileaf_at(fm_node *n, int depth, size_t i) {
        int d;
        for (d = depth; d > 0; d--)
            n = fm_kids(n)[(i >> (FM_IBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
        return n;
    }
    /* During a migration: is log position p indexed by the old index? */
    static inline int fm_in_old(const fm_ver *v, Py_ssize_t p) {
        return v->oroot != NULL && p >= v->mr && p < v->mend;
    }
    /* The old-index half of fm_probe (the key is not in the new index).  Slots of the old
       index pointing outside [mr, mend) are stale (their records moved) and are skipped
       without touching the log.  A hit's slot is reported as -2 - i.  Kept out of line so
       that fm_probe stays small enough to be inlined into the lookups. */
    #ifndef Py_NO_INLINE                /* Python.h defines it from 3.11 on */
    #  if defined(__GNUC__) || defined(__clang__)
    #    define Py_NO_INLINE __attribute__((noinline))
    #  elif defined(_MSC_VER)
    #    define Py_NO_INLINE __declspec(noinline)
    #  else
    #    define Py_NO_INLINE
    #  endif
    #endif
    static Py_NO_INLINE int fm_probe_old(const fm_ver *v, Py_hash_t h, PyObject *key,
                                         Py_ssize_t *pos, Py_ssize_t *slot) {
        size_t mask = v->omask, perturb = (size_t)h, i = (size_t)h & mask;
        uint32_t pm = v->opmask, tag = fm_stag(h, pm), x;
        int32_t ix;
        for (;;) {
            ix = *fm_islot_at(v->oroot, v->odepth, i);
            x = (uint32_t)ix ^ tag;
            if (x <= pm) {
                if ((Py_ssize_t)x >= v->mr && (Py_ssize_t)x < v->mend) {
                    fm_entry *e = fm_entry_at(v, (Py_ssize_t)x);
                    if (e->key == key) goto found;
                    if (e->hash == h) {
                        int r = PyObject_RichCompareBool(e->key, key, Py_EQ);
                        if (r < 0) return -1;
                        if (r > 0) goto found;
                    }
                }
            } else if (ix == FM_EMPTY) return 0;
            perturb >>= 5;
            i = (i * 5 + perturb + 1) & mask;
            continue;
        found:
            *pos = (Py_ssize_t)x;
            if (slot) *slot = -2 - (Py_ssize_t)i;
            return 1;
        }
    }
    /* Probe for key (hash h).  1: found (*pos, and *slot if given: >= 0 in the index,
       <= -2 for slot -2 - *slot of the old index during a migration); 0: absent
       (*freeslot, if given: the first DUMMY slot of the (new) index on the probe sequence,
       else the EMPTY slot ending it; -1 when there is no index); -1: error (__eq__ raised).  The caller owns a reference
       keeping the version alive (or holds the lock guarding a private version); the
       version cannot change while __eq__ runs. */
    FM_HOT int fm_probe(const fm_ver *v, Py_hash_t h, PyObject *key, Py_ssize_t *pos,
                               Py_ssize_t *slot, Py_ssize_t *freeslot) {
        size_t mask, i, perturb;
        Py_ssize_t fs = -1;
        uint32_t pm, tag, x;
        int32_t ix;
        if (v->iroot == NULL) { if (freeslot) *freeslot = -1; return 0; }
        mask = v->imask; perturb = (size_t)h; i = (size_t)h & mask;
        pm = v->ipmask; tag = fm_stag(h, pm);
        for (;;) {
            /* the slot's tag first: a live slot whose tag differs is skipped without
               reading its log record (a miss usually reads no record at all) */
            ix = *fm_islot_at(v->iroot, v->idepth, i);
            x = (uint32_t)ix ^ tag;
            if (x <= pm) {
                fm_entry *e = fm_entry_at(v, (Py_ssize_t)x);
                if (e->key == key) goto found;
                if (e->hash == h) {
                    int r = PyObject_RichCompareBool(e->key, key, Py_EQ);
                    if (r < 0) return -1;
                    if (r > 0) goto found;
                }
            } else if (ix == FM_EMPTY) {
                if (freeslot) *freeslot = fs >= 0 ? fs : (Py_ssize_t)i;
                if (v->oroot != NULL) return fm_probe_old(v, h, key, pos, slot);
                return 0;
            } else if (ix == FM_DUMMY && fs < 0) fs = (Py_ssize_t)i;
            perturb >>= 5;
            i = (i * 5 + perturb + 1) & mask;
            continue;
        found:
            *pos = (Py_ssize_t)x;
            if (slot) *slot = (Py_ssize_t)i;
            return 1;
        }
    }
    FM_HOT int fm_find(const fm_ver *v, Py_hash_t h, PyObject *key, fm_entry **out) {
        Py_ssize_t pos;
        int r = fm_probe(v, h, key, &pos, NULL, NULL);
        if (r > 0) *out = fm_entry_at(v, pos);
        return r;
    }
    /* The slot of an index (root n, depth, mask) holding log position pos (whose hash is
       h), -1 if none.  No user code. */
    static Py_ssize_t fm_islot_of(fm_node *n, int depth, size_t mask, uint32_t pmask,
                                  Py_hash_t h, Py_ssize_t pos) {
        size_t perturb = (size_t)h, i = (size_t)h & mask;
        int32_t want = (int32_t)(fm_stag(h, pmask) | (uint32_t)pos);
        for (;;) {
            int32_t ix = *fm_islot_at(n, depth, i);
            if (ix == want) return (Py_ssize_t)i;
            if (ix == FM_EMPTY) return -1;
            perturb >>= 5;
            i = (i * 5 + perturb + 1) & mask;
        }
    }
    /* The slot holding live log position pos, encoded as fm_probe reports it. */
    static Py_ssize_t fm_slot_of(const fm_ver *v, Py_hash_t h, Py_ssize_t pos) {
        if (fm_in_old(v, pos))
            return -2 - fm_islot_of(v->oroot, v->odepth, v->omask, v->opmask, h, pos);
        return fm_islot_of(v->iroot, v->idepth, v->imask, v->ipmask, h, pos);
    }
    /* First EMPTY or DUMMY slot of the (new) index on h's probe sequence (the key is known
       to be absent from it). */
    static Py_ssize_t fm_free_slot(const fm_ver *v, Py_hash_t h) {
        size_t mask = v->imask, perturb = (size_t)h, i = (size_t)h & mask;
        for (;;) {
            if (*fm_slot_at(v, i) < 0) return (Py_ssize_t)i;
            perturb >>= 5;
            i = (i * 5 + perturb + 1) & mask;
        }
    }
    /* Iteration: the next live record at or after *pos (< end), or NULL.  *leaf caches the
       current leaf page's first record. */
    static inline fm_entry *fm_next_live(const fm_ver *v, Py_ssize_t *pos, Py_ssize_t end,
                                         fm_entry **leaf) {
        Py_ssize_t p = *pos;
        while (p < end) {
            fm_entry *e;
            if ((p & (FM_ECAP - 1)) == 0 || *leaf == NULL)
                *leaf = fm_entry_at(v, p) - (p & (FM_ECAP - 1));
            e = *leaf + (p & (FM_ECAP - 1));
            p++;
            if (e->key != NULL) { *pos = p; return e; }
        }
        *pos = p;
        return NULL;
    }

    /* ---- versions: sharing and release ---- */
    static inline void fm_ver_init(fm_ver *v) { memset(v, 0, sizeof(fm_ver)); }
    static inline void fm_ver_share(fm_ver *dst, const fm_ver *src) {
        *dst = *src;
        if (dst->eroot) fm_node_incref(dst->eroot);
        if (dst->iroot) fm_node_incref(dst->iroot);
        if (dst->oroot) fm_node_incref(dst->oroot);
    }
    /* Hand v's pages to pend (released after the lock) and make v empty. */
    static int fm_ver_release(fm_ver *v, fm_pending *pend) {
        if (fm_pending_reserve(pend, 3) < 0) return -1;
        fm_pending_push_node(pend, v->eroot);
        fm_pending_push_node(pend, v->iroot);
        fm_pending_push_node(pend, v->oroot);
        fm_ver_init(v);
        return 0;
    }
    static void fm_sf_release(fm_node *n);
    /* Drop v's pages now (may run user code: only outside the lock).  An old index goes
       through the incremental teardown (below): a version that dies during a migration
       may hold the last reference to it (always so on free-threaded builds, where the
       write that ends a migration changes a copy, never the published version). */
    static void fm_ver_clear(fm_ver *v) {
        fm_node *e = v->eroot, *i = v->iroot, *o = v->oroot;
        fm_ver_init(v);
        fm_node_decref(e);
        fm_node_decref(i);
        fm_sf_release(o);
    }

    /* ---- making pages writable (the caller holds v exclusively; no user code runs) ---- */
    /* Replace *slot by a private copy unless the node has reference count 1. */
    static Py_NO_INLINE fm_node *fm_own_copy(fm_node **slot, fm_pending *pend);
    FM_HOT fm_node *fm_own(fm_node **slot, fm_pending *pend) {
        fm_node *n = *slot;
        if (fm_node_refcnt(n) == 1) return n;       /* (the common case, inlined) */
        return fm_own_copy(slot, pend);
    }
    static Py_NO_INLINE fm_node *fm_own_copy(fm_node **slot, fm_pending *pend) {
        fm_node *n = *slot, *c;
        if (fm_pending_reserve(pend, 1) < 0) return NULL;
        c = fm_node_clone(n, n->cap);
        if (c == NULL) return NULL;
        fm_pending_push_node(pend, n);      /* our reference to the shared original */
        *slot = c;
        return c;
    }
    static inline Py_ssize_t fm_ecapacity(const fm_ver *v) {
        if (v->eroot == NULL) return 0;
        if (v->edepth == 0) return v->eroot->cap;
        return (Py_ssize_t)FM_ECAP << (FM_FBITS * v->edepth);
    }
    /* The record at log position p, writable; creates pages and grows the tree as needed.
       The version's content is unchanged (only copied/created pages).  NULL on error. */
    static Py_NO_INLINE fm_entry *fm_entry_writable_slow(fm_ver *v, Py_ssize_t p, fm_pending *pend);
    FM_HOT fm_entry *fm_entry_writable(fm_ver *v, Py_ssize_t p, fm_pending *pend) {
        /* inlined common case: the page exists and its path is already private */
        if (p < fm_ecapacity(v)) {
            fm_node *n = v->eroot;
            int d;
            for (d = v->edepth; ; d--) {
                if (n == NULL || fm_node_refcnt(n) != 1) break;
                if (d == 0) return fm_ents(n) + ((size_t)p & (FM_ECAP - 1));
                n = fm_kids(n)[((size_t)p >> (FM_EBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
            }
        }
        return fm_entry_writable_slow(v, p, pend);
    }
    static Py_NO_INLINE fm_entry *fm_entry_writable_slow(fm_ver *v, Py_ssize_t p, fm_pending *pend) {
        fm_node **slot, *n;
        int d;
        while (p >= fm_ecapacity(v)) {
            if (v->eroot == NULL || (v->edepth == 0 && v->eroot->cap < FM_ECAP)) {
                uint32_t cap = v->eroot ? v->eroot->cap : 1;
                while ((Py_ssize_t)cap <= p && cap < FM_ECAP) cap <<= 1;
                if (v->eroot == NULL) {
                    n = fm_node_new(FM_ELEAF, cap);
                    if (n == NULL) return NULL;
                } else if (fm_node_refcnt(v->eroot) == 1) {
                    n = (fm_node *)PyMem_Realloc(v->eroot, sizeof(fm_node) + fm_payload(FM_ELEAF, cap));
                    if (n == NULL) { PyErr_NoMemory(); return NULL; }
                    memset(fm_ents(n) + n->cap, 0, (cap - n->cap) * sizeof(fm_entry));
                    n->cap = (uint16_t)cap;
                } else {
                    if (fm_pending_reserve(pend, 1) < 0) return NULL;
                    n = fm_node_clone(v->eroot, cap);
                    if (n == NULL) return NULL;
                    fm_pending_push_node(pend, v->eroot);
                }
                v->eroot = n;
            } else {
                n = fm_node_new(FM_INNER, FM_FAN);
                if (n == NULL) return NULL;
                fm_kids(n)[0] = v->eroot;       /* the version's reference moves down */
                n->live = v->eroot->live;
                v->eroot = n;
                v->edepth++;
            }
        }
        slot = &v->eroot;
        for (d = v->edepth; ; d--) {
            if (*slot == NULL) {
                n = fm_node_new(d ? FM_INNER : FM_ELEAF, d ? FM_FAN : FM_ECAP);
                if (n == NULL) return NULL;
                *slot = n;
            } else {
                n = fm_own(slot, pend);
                if (n == NULL) return NULL;
            }
            if (d == 0) return fm_ents(n) + ((size_t)p & (FM_ECAP - 1));
            slot = &fm_kids(n)[((size_t)p >> (FM_EBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
        }
    }
    /* The slot i of an index (root *root, `depth` levels), writable. */
    static Py_NO_INLINE int32_t *fm_islot_writable_slow(fm_node **root, int depth, size_t i,
                                                        fm_pending *pend);
    FM_HOT int32_t *fm_islot_writable(fm_node **root, int depth, size_t i, fm_pending *pend) {
        /* inlined common case: the path to the slot's page is already private */
        fm_node *n = *root;
        int d;
        for (d = depth; ; d--) {
            if (fm_node_refcnt(n) != 1) break;
            if (d == 0) return fm_slots(n) + (i & (FM_ICAP - 1));
            n = fm_kids(n)[(i >> (FM_IBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
        }
        return fm_islot_writable_slow(root, depth, i, pend);
    }
    static Py_NO_INLINE int32_t *fm_islot_writable_slow(fm_node **root, int depth, size_t i,
                                                        fm_pending *pend) {
        fm_node **slot = root, *n;
        int d;
        for (d = depth; ; d--) {
            n = fm_own(slot, pend);
            if (n == NULL) return NULL;
            if (d == 0) return fm_slots(n) + (i & (FM_ICAP - 1));
            slot = &fm_kids(n)[(i >> (FM_IBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
        }
    }
    /* A slot as fm_probe / fm_slot_of report it (>= 0: index, <= -2: old index), writable. */
    static int32_t *fm_slot_writable(fm_ver *v, Py_ssize_t slot, fm_pending *pend) {
        if (slot >= 0) return fm_islot_writable(&v->iroot, v->idepth, (size_t)slot, pend);
        return fm_islot_writable(&v->oroot, v->odepth, (size_t)(-2 - slot), pend);
    }

    /* ---- tuning (tests: _set_tuning) and counters ---- */
    static Py_ssize_t fm_t_step = 8;          /* log positions a write advances a migration */
    static Py_ssize_t fm_t_sync_below = 1024; /* migrations of logs this short run at once */
    static Py_ssize_t fm_forced = 0;          /* inserts that tripped fm_insert's safety valve:
                                                 the new index filled up or the log outgrew
                                                 the position field (sizing makes this 0) */

    /* ---- shared, never-freed pages: all-EMPTY index nodes of every depth and an
            all-hole log page.  A new index is one of them (O(1), no memset); a log page
            entirely inside a migration's gap is replaced by the hole page.  Their
            reference count never drops to 0 (this file holds one), so fm_own always copies
            them on first write: that copy is the lazy allocation. ---- */
    #define FM_EMPTY_LEVELS 8
    static fm_node *fm_empty_inodes[FM_EMPTY_LEVELS];
    static fm_node *fm_hole_page;
    static int fm_empty_init(void) {
        int d;
        uint32_t i;
        if (fm_hole_page != NULL) return 0;
        fm_empty_inodes[0] = fm_node_new(FM_ILEAF, FM_ICAP);
        if (fm_empty_inodes[0] == NULL) return -1;
        for (d = 1; d < FM_EMPTY_LEVELS; d++) {
            fm_node *n = fm_node_new(FM_INNER, FM_FAN);
            if (n == NULL) return -1;
            for (i = 0; i < FM_FAN; i++) {
                fm_kids(n)[i] = fm_empty_inodes[d - 1];
                fm_node_incref(fm_empty_inodes[d - 1]);
            }
            fm_empty_inodes[d] = n;
        }
        fm_hole_page = fm_node_new(FM_ELEAF, FM_ECAP);
        return fm_hole_page == NULL ? -1 : 0;
    }
    /* A new all-EMPTY index of nslots (a power of two >= 8) slots: O(1) above one page. */
    static int fm_index_new(size_t nslots, fm_node **root, int *depth) {
        int d = 0;
        size_t span = FM_ICAP;
        if (nslots <= FM_ICAP) {
            fm_node *n = fm_node_new(FM_ILEAF, (uint32_t)nslots);
            if (n == NULL) return -1;
            *root = n; *depth = 0;
            return 0;
        }
        while (span < nslots) { span <<= FM_FBITS; d++; }
        if (d >= FM_EMPTY_LEVELS) { PyErr_NoMemory(); return -1; }
        fm_node_incref(fm_empty_inodes[d]);
        *root = fm_empty_inodes[d]; *depth = d;
        return 0;
    }
    /* Replace the log page holding positions [p, p + FM_ECAP) (all holes) by the shared
       hole page, freeing it (it is copied back if the compaction cursor reaches it). */
    static int fm_drop_page(fm_ver *v, Py_ssize_t p, fm_pending *pend) {
        fm_node **slot = &v->eroot, *n;
        int d;
        if (v->edepth == 0) return 0;
        for (d = v->edepth; d > 0; d--) {
            n = fm_own(slot, pend);
            if (n == NULL) return -1;
            slot = &fm_kids(n)[((size_t)p >> (FM_EBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
        }
        if (*slot == NULL || *slot == fm_hole_page) return 0;
        if (fm_pending_reserve(pend, 1) < 0) return -1;
        fm_pending_push_node(pend, *slot);
        fm_node_incref(fm_hole_page);
        *slot = fm_hole_page;
        return 0;
    }

    /* Add delta to the live counts on the path to log position p (a record there was
       just filled or emptied; the path is private: fm_entry_writable(v, p) was called). */
    static void fm_live_add(fm_ver *v, Py_ssize_t p, int delta) {
        fm_node *n = v->eroot;
        int d;
        for (d = v->edepth; ; d--) {
            n->live += (uint32_t)delta;
            if (d == 0) return;
            n = fm_kids(n)[((size_t)p >> (FM_EBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
        }
    }
    /* The position of the last live record (v->count > 0): one descent guided by the live
       counts, at most FM_FAN children or records read per level. */
    static Py_ssize_t fm_last_live(const fm_ver *v) {
        fm_node *n = v->eroot;
        size_t base = 0;
        int d, c;
        for (d = v->edepth; d > 0; d--) {
            fm_node *k = NULL;
            for (c = FM_FAN - 1; c > 0; c--) {
                k = fm_kids(n)[c];
                if (k != NULL && k->live > 0) break;
            }
            if (c == 0) k = fm_kids(n)[0];
            base += (size_t)c << (FM_EBITS + FM_FBITS * (d - 1));
            n = k;
        }
        for (c = (int)n->cap - 1; c > 0 && fm_ents(n)[c].key == NULL; c--) ;
        return (Py_ssize_t)(base + (size_t)c);
    }
    /* Drop holes at the end of the log (so that the last position holds the last live
       record: popitem is LIFO).  O(log n) whatever the number of holes (a migration's gap
       included): the live counts of the log tree lead to the last live record. */
    static void fm_trim(fm_ver *v) {
        if (v->elen > 0 && fm_entry_at(v, v->elen - 1)->key == NULL)
            v->elen = (v->eroot != NULL && v->eroot->live > 0) ? fm_last_live(v) + 1 : 0;
        if (v->oroot != NULL) {
            if (v->mr > v->elen) v->mr = v->elen;
            if (v->mw > v->mr) v->mw = v->mr;
            if (v->mend > v->elen) v->mend = v->elen;
        }
    }

    /* ---- incremental teardown of dropped indexes.  An old index dropped at the end of
            a migration may be O(n/256) pages; freeing them all in that write would be
            the last O(n) pause.  Index pages hold no Python objects, so their release
            can be spread over later writes (of any map): fm_sf_release drops a reference
            and queues an inner node whose count reached zero; each write's fm_sf_run
            frees one queued inner node and its (up to 32) children, queueing inner
            children.  Protected by the GIL, or by a PyMutex on free-threaded builds. ---- */
    static fm_node **fm_sf_items = NULL;
    static Py_ssize_t fm_sf_n = 0, fm_sf_cap = 0;
    #ifdef Py_GIL_DISABLED
    static PyMutex fm_sf_mutex = {0};
    #define FM_SF_LOCK() PyMutex_Lock(&fm_sf_mutex)
    #define FM_SF_UNLOCK() PyMutex_Unlock(&fm_sf_mutex)
    #define FM_SF_PENDING() (_Py_atomic_load_ssize_relaxed(&fm_sf_n) > 0)
    #else
    #define FM_SF_LOCK() ((void)0)
    #define FM_SF_UNLOCK() ((void)0)
    #define FM_SF_PENDING() (fm_sf_n > 0)
    #endif
    static int fm_sf_reserve(Py_ssize_t k) {        /* lock held */
        if (fm_sf_n + k > fm_sf_cap) {
            Py_ssize_t cap = fm_sf_cap ? fm_sf_cap * 2 : 64;
            fm_node **items;
            while (cap < fm_sf_n + k) cap *= 2;
            items = (fm_node **)PyMem_RawRealloc(fm_sf_items, cap * sizeof(fm_node *));
            if (items == NULL) return -1;
            fm_sf_items = items; fm_sf_cap = cap;
        }
        return 0;
    }
    static void fm_sf_release(fm_node *n) {
        if (n == NULL || !fm_node_decref_is_zero(n)) return;
        if (n->kind != FM_INNER) { PyMem_Free(n); return; }
        FM_SF_LOCK();
        if (fm_sf_reserve(1) == 0) { fm_sf_items[fm_sf_n++] = n; n = NULL; }
        FM_SF_UNLOCK();
        if (n != NULL) fm_node_free(n);            /* no memory for the queue: at once */
    }
    #define FM_SF_BUDGET 8                       /* children released per write */
    static void fm_sf_run(void) {
        fm_node *n, *now = NULL;
        int budget = FM_SF_BUDGET;
        if (!FM_SF_PENDING()) return;
        FM_SF_LOCK();
        while (fm_sf_n > 0 && budget > 0) {
            n = fm_sf_items[fm_sf_n - 1];
            /* n is dead (count 0): its cap counts the children not yet released */
            if (fm_sf_reserve(FM_SF_BUDGET) < 0) { fm_sf_n--; now = n; break; }
            while (n->cap > 0 && budget > 0) {
                fm_node *k = fm_kids(n)[--n->cap];
                if (k == NULL || !fm_node_decref_is_zero(k)) continue;
                budget--;
                if (k->kind != FM_INNER) PyMem_Free(k);
                else { fm_sf_items[fm_sf_n++] = k; break; }   /* depth first */
            }
            if (n->cap == 0 && fm_sf_items[fm_sf_n - 1] == n) { fm_sf_n--; PyMem_Free(n); }
            else if (n->cap == 0) {
                /* a child was pushed above n: move n under it (n is finished) */
                fm_sf_items[fm_sf_n - 2] = fm_sf_items[fm_sf_n - 1];
                fm_sf_n--;
                PyMem_Free(n);
            }
        }
        FM_SF_UNLOCK();
        if (now != NULL) fm_node_free(now);      /* no memory for the queue: at once */
    }

    /* ---- migration: the incremental rebuild of index and log ---- */
    /* Advance v's migration by at most `budget` log positions; finishes it (dropping the
       old index) when the cursor has nothing left to do.  Each step allocates (copies
       shared pages) before it changes anything, so on error v is consistent and the step
       can be retried.  No user code runs: stored hashes are used, records are moved
       (references change place, no incref/decref). */
    static int fm_migrate(fm_ver *v, Py_ssize_t budget, fm_pending *pend) {
        while (v->oroot != NULL) {
            Py_ssize_t r = v->mr, w = v->mw, si;
            fm_entry *e, *src, *dst = NULL;
            int32_t *s;
            if (r >= v->elen || (r >= v->mend && w == r)) {
                /* done: [w, elen) is the gap (or empty) */
                fm_sf_release(v->oroot);        /* torn down over later writes */
                if (w < r) v->elen = w;
                v->oroot = NULL; v->omask = 0; v->odepth = 0; v->opmask = 0;
                v->mw = v->mr = v->mend = 0;
                fm_trim(v);
                return 0;
            }
            if (budget-- <= 0) return 0;
            e = fm_entry_at(v, r);
            if (e->key != NULL) {
                if (w < r) {
                    dst = fm_entry_writable(v, w, pend);
                    if (dst == NULL) return -1;
                    src = fm_entry_writable(v, r, pend);
                    if (src == NULL) return -1;
                } else src = e;
                if (r < v->mend) si = fm_free_slot(v, src->hash);
                else {
                    si = fm_islot_of(v->iroot, v->idepth, v->imask, v->ipmask, src->hash, r);
                    if (si < 0) {
                        PyErr_SetString(PyExc_SystemError, "SnapshotMap: migration lost a record");
                        return -1;
                    }
                }
                s = fm_islot_writable(&v->iroot, v->idepth, (size_t)si, pend);
                if (s == NULL) return -1;
                if (dst != NULL) {
                    *dst = *src;
                    src->key = NULL; src->value = NULL; src->hash = 0;
                    fm_live_add(v, w, 1);
                    fm_live_add(v, r, -1);
                }
                if (*s == FM_EMPTY) v->fill++;
                *s = (int32_t)(fm_stag(dst != NULL ? dst->hash : src->hash, v->ipmask) | (uint32_t)w);
                v->mw = w + 1;
            }
            v->mr = r + 1;
            if ((v->mr & (FM_ECAP - 1)) == 0 && v->mr - FM_ECAP >= v->mw &&
                    fm_drop_page(v, v->mr - FM_ECAP, pend) < 0)
                PyErr_Clear();          /* only memory: the page stays */
        }
        return 0;
    }
    static inline size_t fm_nslots_for(Py_ssize_t n, int factor_x2) {
        /* smallest power of two >= max(8, n * factor_x2 / 2) */
        size_t want = (size_t)n * (size_t)factor_x2 / 2 + 1, s = 8;
        while (s < want) s <<= 1;
        return s;
    }
    /* Index size for a migration of v: room (load <= 2/3) for every live record plus one
       insert per write the migration can take (each write advances it fm_t_step
       positions and appends at most one), and for growth at least 3x the live count. */
    static size_t fm_nslots_mig(const fm_ver *v, int grow) {
        Py_ssize_t during = (v->elen + 2) / (fm_t_step - 1) + 2;
        size_t a = fm_nslots_for(v->count + during + 1, 3);
        if (grow) {
            size_t b = fm_nslots_for(v->count + 1, 6);
            if (b > a) a = b;
        }
        return a;
    }
    /* The position mask of a new index of nslots slots for a log of elen positions:
       room for positions below max(2 * nslots, 2 * elen + 64, 256).  At rest the log
       holds at most 2 * count + 32 positions (compaction starts beyond) and count <= 2/3
       of the slots; a migration appends at most one position per write it lasts, and
       fm_nslots_mig sizes its index for those writes too.  So the positions never reach
       the mask's limit (fm_insert's safety valve would finish the migration if they
       did), and the rest of the 31 bits carry the tag: 9 bits at 10^6 entries, more in
       smaller maps. */
    static inline uint32_t fm_pmask_for(size_t nslots, Py_ssize_t elen) {
        size_t want = nslots * 2, m = 255;
        if ((size_t)elen * 2 + 64 > want) want = (size_t)elen * 2 + 64;
        while (m + 1 < want && m < 0x7fffffffu) m = m * 2 + 1;
        return (uint32_t)m;
    }
    /* Start a migration to a new index of nslots slots (no migration running).  Logs of
       at most fm_t_sync_below positions are migrated at once. */
    static int fm_mig_start(fm_ver *v, size_t nslots, fm_pending *pend) {
        fm_node *root;
        int depth;
        if (fm_index_new(nslots, &root, &depth) < 0) return -1;
        if (v->iroot == NULL) {             /* empty version: nothing to migrate */
            v->iroot = root; v->idepth = depth; v->imask = nslots - 1; v->fill = 0;
            v->ipmask = fm_pmask_for(nslots, v->elen);
            return 0;
        }
        v->oroot = v->iroot; v->odepth = v->idepth; v->omask = v->imask;
        v->opmask = v->ipmask;
        v->iroot = root; v->idepth = depth; v->imask = nslots - 1; v->fill = 0;
        v->ipmask = fm_pmask_for(nslots, v->elen);
        v->mw = v->mr = 0; v->mend = v->elen;
        if (v->elen <= fm_t_sync_below) return fm_migrate(v, PY_SSIZE_T_MAX, pend);
        return 0;
    }
    /* A whole rebuild now, compacting the log (bulk operations only: their cost is
       proportional to their own size, see fm_reserve). */
    static int fm_rebuild(fm_ver *v, size_t nslots, fm_pending *pend) {
        if (v->oroot != NULL && fm_migrate(v, PY_SSIZE_T_MAX, pend) < 0) return -1;
        if (fm_mig_start(v, nslots, pend) < 0) return -1;
        return fm_migrate(v, PY_SSIZE_T_MAX, pend);
    }
    static inline int fm_needs_compaction(const fm_ver *v) {
        return v->elen - v->count > 32 && v->elen - v->count > v->count;
    }
    /* After every write: advance the running migration; start a compacting one when holes
       outnumber live records.  An optimisation only: errors are swallowed (retried by the
       next write), v stays consistent. */
    static void fm_maintain(fm_ver *v, fm_pending *pend) {
        fm_sf_run();
        if (v->oroot != NULL && fm_migrate(v, fm_t_step, pend) < 0) { PyErr_Clear(); return; }
        if (v->oroot == NULL && v->count > 0 && fm_needs_compaction(v) &&
                fm_mig_start(v, fm_nslots_mig(v, 0), pend) < 0)
            PyErr_Clear();
    }
    /* Make room for n more inserts (bulk operations).  A rebuild here costs O(count + n),
       so it is done only when n is at least half the live count; smaller bulk writes
       insert one by one and migrate incrementally like single-key writes. */
    static int fm_reserve(fm_ver *v, Py_ssize_t n, fm_pending *pend) {
        if (v->iroot != NULL && (size_t)(v->fill + n) * 3 <= (v->imask + 1) * 2) return 0;
        if (v->iroot != NULL && n * 2 < v->count) return 0;
        return fm_rebuild(v, fm_nslots_for(v->count + n, 3), pend);
    }

    /* ---- the three mutations (v held exclusively; no user code runs; v's content is
            unchanged if they fail) ---- */
    static int fm_set_value(fm_ver *v, Py_ssize_t pos, PyObject *value, fm_pending *pend) {
        fm_entry *e = fm_entry_writable(v, pos, pend);
        if (e == NULL || fm_pending_reserve(pend, 1) < 0) return -1;
        fm_pending_push_obj(pend, e->value);
        Py_INCREF(value);
        e->value = value;
        fm_maintain(v, pend);
        return 0;
    }
    /* Append key (absent; freeslot from fm_probe) at the end of the log. */
    static int fm_insert(fm_ver *v, Py_hash_t h, PyObject *key, PyObject *value,
                         Py_ssize_t freeslot, fm_pending *pend) {
        fm_entry *e;
        int32_t *s;
        if (v->elen >= FM_MAX_LEN) {
            PyErr_SetString(PyExc_OverflowError, "SnapshotMap: too many entries");
            return -1;
        }
        if (v->iroot == NULL || freeslot < 0 ||
                (*fm_slot_at(v, (size_t)freeslot) == FM_EMPTY &&
                 (size_t)(v->fill + 1) * 3 > (v->imask + 1) * 2) ||
                (size_t)v->elen > v->ipmask) {
            int tripped = v->oroot != NULL || (v->iroot != NULL && (size_t)v->elen > v->ipmask);
            if (tripped) fm_forced++;     /* counted once per insert */
            if (v->oroot != NULL) {
                /* the new index filled up, or the log outgrew its position field, before
                   the migration ended: cannot happen with fm_nslots_mig's and
                   fm_pmask_for's sizing; finish it now rather than fail */
                if (fm_migrate(v, PY_SSIZE_T_MAX, pend) < 0) return -1;
            }
            if (v->iroot == NULL || (size_t)(v->fill + 1) * 3 > (v->imask + 1) * 2) {
                if (fm_mig_start(v, fm_nslots_mig(v, 1), pend) < 0) return -1;
            } else if ((size_t)v->elen > v->ipmask) {
                /* at rest, the log outgrew the position field (compaction sizing makes
                   this impossible): a compacting migration to an index sized for it */
                if (fm_mig_start(v, fm_nslots_mig(v, 0), pend) < 0) return -1;
            }
            freeslot = fm_free_slot(v, h);
        }
        e = fm_entry_writable(v, v->elen, pend);
        if (e == NULL) return -1;
        s = fm_slot_writable(v, freeslot, pend);
        if (s == NULL) return -1;
        e->hash = h;
        Py_INCREF(key); e->key = key;
        fm_live_add(v, v->elen, 1);
        Py_INCREF(value); e->value = value;
        if (*s == FM_EMPTY) v->fill++;
        *s = (int32_t)(fm_stag(h, v->ipmask) | (uint32_t)v->elen);
        v->elen++;
        v->count++;
        fm_maintain(v, pend);
        return 0;
    }
    static int fm_delete(fm_ver *v, Py_ssize_t pos, Py_ssize_t slot, fm_pending *pend) {
        fm_entry *e = fm_entry_writable(v, pos, pend);
        int32_t *s;
        if (e == NULL) return -1;
        s = fm_slot_writable(v, slot, pend);
        if (s == NULL || fm_pending_reserve(pend, 5) < 0) return -1;
        fm_pending_push_obj(pend, e->key);
        fm_pending_push_obj(pend, e->value);
        e->key = NULL; e->value = NULL; e->hash = 0;
        fm_live_add(v, pos, -1);
        *s = FM_DUMMY;
        v->count--;
        if (v->count == 0) return fm_ver_release(v, pend);     /* reserved above */
        fm_trim(v);
        fm_maintain(v, pend);
        return 0;
    }
    /* items() result tuple, reused when the caller dropped it (like dict's items iterator).
       Reuse relies on the GIL making the refcount check exact, so it is off when free-threaded. */
    static PyObject *fm_item_tuple(PyObject **cache, PyObject *k, PyObject *v) {
        PyObject *t = *cache;
    #if !FM_FREE_THREADED
        if (t != NULL && Py_REFCNT(t) == 1) {
            PyObject *ok = PyTuple_GET_ITEM(t, 0), *ov = PyTuple_GET_ITEM(t, 1);
            Py_INCREF(k); Py_INCREF(v);
            PyTuple_SET_ITEM(t, 0, k); PyTuple_SET_ITEM(t, 1, v);
            Py_INCREF(t);
            Py_DECREF(ok); Py_DECREF(ov);
            if (!PyObject_GC_IsTracked(t)) PyObject_GC_Track(t);
            return t;
        }
    #endif
        t = PyTuple_Pack(2, k, v);
        if (t == NULL) return NULL;
    #if !FM_FREE_THREADED
        Py_XSETREF(*cache, t);
        Py_INCREF(t);
    #endif
        return t;
    }

    /* Py_TPFLAGS_MAPPING, so that `match` mapping patterns accept the types (registering
       with collections.abc.Mapping cannot set it on a static type). */
    static void fm_set_mapping_flag(PyTypeObject *t) {
        t->tp_flags |= Py_TPFLAGS_MAPPING;
        PyType_Modified(t);
    }
    /* GC slots: patched onto the types at import (see _install_gc_slots). */
    static void fm_set_gc_slots(PyTypeObject *t, traverseproc tr, inquiry cl) {
        t->tp_traverse = tr; t->tp_clear = cl;
    }

    /* ---- cyclic GC (see "Cyclic GC" at the end of the module) ---- */
    /* Records a version alone holds: those of the log pages reached from its root through
       nodes of reference count 1 (only this version can reach them). */
    static int fm_visit_own(fm_node *n, visitproc visit, void *arg) {
        uint32_t i;
        int r;
        if (n == NULL || n == fm_hole_page || fm_node_refcnt(n) != 1) return 0;
        if (n->kind == FM_ELEAF) {
            fm_entry *e = fm_ents(n);
            for (i = 0; i < n->cap; i++)
                if (e[i].key != NULL) {
                    if ((r = visit(e[i].key, arg)) != 0) return r;
                    if ((r = visit(e[i].value, arg)) != 0) return r;
                }
        } else if (n->kind == FM_INNER) {
            for (i = 0; i < n->cap; i++)
                if ((r = fm_visit_own(fm_kids(n)[i], visit, arg)) != 0) return r;
        }
        return 0;
    }
    /* Records of the log pages a version shares: pages at or below a node of reference
       count > 1.  Each such node is marked when first met (the _pad byte), so that a
       family's traverse reports every shared page once however many of its versions
       reach it; fm_unmark_shared then clears the marks along the same paths. */
    static int fm_visit_shared(fm_node *n, int shared, visitproc visit, void *arg) {
        uint32_t i;
        int r;
        if (n == NULL || n == fm_hole_page) return 0;
        if (!shared && fm_node_refcnt(n) > 1) shared = 1;
        if (shared) {
            if (n->_pad) return 0;
            n->_pad = 1;
        }
        if (n->kind == FM_ELEAF) {
            fm_entry *e = fm_ents(n);
            if (!shared) return 0;
            for (i = 0; i < n->cap; i++)
                if (e[i].key != NULL) {
                    if ((r = visit(e[i].key, arg)) != 0) return r;
                    if ((r = visit(e[i].value, arg)) != 0) return r;
                }
        } else if (n->kind == FM_INNER) {
            for (i = 0; i < n->cap; i++)
                if ((r = fm_visit_shared(fm_kids(n)[i], shared, visit, arg)) != 0) return r;
        }
        return 0;
    }
    static void fm_unmark_shared(fm_node *n, int shared) {
        uint32_t i;
        if (n == NULL || n == fm_hole_page) return;
        if (!shared && fm_node_refcnt(n) > 1) shared = 1;
        if (shared) {
            if (!n->_pad) return;
            n->_pad = 0;
        }
        if (n->kind == FM_INNER)
            for (i = 0; i < n->cap; i++) fm_unmark_shared(fm_kids(n)[i], shared);
    }
    /* A family's member list is guarded by a spin flag on free-threaded builds (held for
       a few stores, or for a traverse; never across a point where the thread could be
       stopped); the GIL guards it otherwise. */
    #ifdef Py_GIL_DISABLED
    static inline void fm_spin_lock(int *l) {
        for (;;) { int z = 0; if (_Py_atomic_compare_exchange_int(l, &z, 1)) return; }
    }
    static inline void fm_spin_unlock(int *l) { _Py_atomic_store_int_release(l, 0); }
    #else
    static inline void fm_spin_lock(int *l) { (void)l; }
    static inline void fm_spin_unlock(int *l) { (void)l; }
    #endif
    /* A family's members: an intrusive list of their versions (no references held: a
       member unlinks itself before it dies). */
    typedef struct fm_member { struct fm_member *prev, *next; fm_ver *ver; } fm_member;
    typedef struct fm_family { fm_member *head; int spin; } fm_family;
    static void fm_member_link(fm_family *f, fm_member *m, fm_ver *v) {
        fm_spin_lock(&f->spin);
        m->ver = v; m->prev = NULL; m->next = f->head;
        if (f->head != NULL) f->head->prev = m;
        f->head = m;
        fm_spin_unlock(&f->spin);
    }
    static void fm_member_unlink(fm_family *f, fm_member *m) {
        fm_spin_lock(&f->spin);
        if (m->prev != NULL) m->prev->next = m->next; else f->head = m->next;
        if (m->next != NULL) m->next->prev = m->prev;
        m->prev = m->next = NULL; m->ver = NULL;
        fm_spin_unlock(&f->spin);
    }
    /* The family's traverse: every record of the pages its members share, once. */
    static int fm_family_visit(fm_family *f, visitproc visit, void *arg) {
        fm_member *m;
        int r = 0;
        fm_spin_lock(&f->spin);
        for (m = f->head; m != NULL && r == 0; m = m->next)
            r = fm_visit_shared(m->ver->eroot, 0, visit, arg);
        for (m = f->head; m != NULL; m = m->next)
            fm_unmark_shared(m->ver->eroot, 0);
        fm_spin_unlock(&f->spin);
        return r;
    }
    /* An allocation that cannot start a collection (GIL builds collect inside the
       allocation up to 3.11, so finalizers could run under the writer lock). */
    static inline int fm_gc_pause(void) {
    #if FM_FREE_THREADED || PY_VERSION_HEX >= 0x030C0000
        return 0;      /* collections are only scheduled by an allocation */
    #else
        return PyGC_Disable();
    #endif
    }
    static inline void fm_gc_resume(int was_enabled) { if (was_enabled) PyGC_Enable(); }
    """
    ctypedef struct fm_node:
        Py_ssize_t refcnt
        uint32_t live
        uint16_t cap
        uint8_t kind
    ctypedef struct fm_entry:
        Py_hash_t hash
        PyObject* key
        PyObject* value
    ctypedef struct fm_ver:
        fm_node* eroot
        fm_node* iroot
        Py_ssize_t elen
        Py_ssize_t count
        Py_ssize_t fill
        size_t imask
        int edepth
        int idepth
        fm_node* oroot
        size_t omask
        int odepth
        Py_ssize_t mw
        Py_ssize_t mr
        Py_ssize_t mend
        uint32_t ipmask
        uint32_t opmask
    ctypedef struct fm_pending:
        Py_ssize_t n
    ctypedef int (*visitproc)(PyObject*, void*)
    ctypedef int (*traverseproc)(PyObject*, visitproc, void*)
    ctypedef int (*inquiry)(PyObject*)
    ctypedef struct PyTypeObject:
        pass

    int FM_EBITS
    int FM_ECAP
    int FM_IBITS
    int FM_ICAP
    int FM_FBITS
    int FM_FAN
    int FM_EMPTY
    int FM_DUMMY
    int FM_INNER
    int FM_ELEAF
    int FM_ILEAF
    int FM_FREE_THREADED
    fm_node** fm_kids(fm_node*) nogil
    fm_entry* fm_ents(fm_node*) nogil
    int32_t* fm_slots(fm_node*) nogil
    uint32_t fm_stag(Py_hash_t, uint32_t) nogil
    fm_node* fm_ileaf_at(fm_node*, int, size_t) nogil
    void fm_node_incref(fm_node*) nogil
    Py_ssize_t fm_node_refcnt(fm_node*) nogil
    void fm_node_decref(fm_node*)
    PyObject* fm_load_published(PyObject**) nogil
    PyObject* fm_exchange_published(PyObject**, PyObject*) nogil
    void fm_readers_enter(Py_ssize_t*) nogil
    void fm_readers_exit(Py_ssize_t*) nogil
    Py_ssize_t fm_readers_load(Py_ssize_t*) nogil
    void fm_readers_add(Py_ssize_t*, Py_ssize_t) nogil
    uintptr_t fm_owner_load(uintptr_t*) nogil
    void fm_owner_store(uintptr_t*, uintptr_t) nogil
    Py_hash_t fm_hash_cache_load(Py_hash_t*) noexcept nogil
    void fm_hash_cache_store(Py_hash_t*, Py_hash_t) noexcept nogil
    bint fm_flag_load_acquire(bint*) noexcept nogil
    void fm_flag_store_release(bint*, bint) noexcept nogil
    void fm_pending_init(fm_pending*) nogil
    int fm_pending_push_obj(fm_pending*, PyObject*) except -1
    int fm_pending_push_node(fm_pending*, fm_node*) except -1
    int fm_pending_move_last(fm_pending*, fm_pending*) except -1
    void fm_pending_flush(fm_pending*)
    fm_entry* fm_entry_at(const fm_ver*, Py_ssize_t) nogil
    int32_t* fm_slot_at(const fm_ver*, size_t) nogil
    int fm_probe(const fm_ver*, Py_hash_t, PyObject*, Py_ssize_t*, Py_ssize_t*, Py_ssize_t*) except -1
    int fm_find(const fm_ver*, Py_hash_t, PyObject*, fm_entry**) except -1
    Py_ssize_t fm_slot_of(const fm_ver*, Py_hash_t, Py_ssize_t) nogil
    fm_entry* fm_next_live(const fm_ver*, Py_ssize_t*, Py_ssize_t, fm_entry**) nogil
    void fm_ver_init(fm_ver*) nogil
    void fm_ver_share(fm_ver*, const fm_ver*) nogil
    int fm_ver_release(fm_ver*, fm_pending*) except -1
    void fm_ver_clear(fm_ver*)
    int fm_reserve(fm_ver*, Py_ssize_t, fm_pending*) except -1
    int fm_set_value(fm_ver*, Py_ssize_t, PyObject*, fm_pending*) except -1
    int fm_insert(fm_ver*, Py_hash_t, PyObject*, PyObject*, Py_ssize_t, fm_pending*) except -1
    int fm_delete(fm_ver*, Py_ssize_t, Py_ssize_t, fm_pending*) except -1
    int fm_in_old(const fm_ver*, Py_ssize_t) nogil
    int32_t* fm_islot_at(fm_node*, int, size_t) nogil
    int fm_empty_init() except -1
    Py_ssize_t fm_sf_n
    Py_ssize_t fm_t_step
    Py_ssize_t fm_t_sync_below
    Py_ssize_t fm_forced
    object fm_item_tuple(PyObject** cache, PyObject* k, PyObject* v)
    void fm_set_gc_slots(PyTypeObject*, traverseproc, inquiry)
    int fm_visit_own(fm_node*, visitproc, void*) noexcept
    int fm_visit_shared(fm_node*, int, visitproc, void*) noexcept
    void fm_unmark_shared(fm_node*, int) noexcept
    void fm_spin_lock(int*) noexcept nogil
    void fm_spin_unlock(int*) noexcept nogil
    int fm_gc_pause() noexcept
    void fm_gc_resume(int) noexcept
    int fm_pending_reserve(fm_pending*, Py_ssize_t) except -1
    ctypedef struct fm_member:
        pass
    ctypedef struct fm_family:
        pass
    void fm_member_link(fm_family*, fm_member*, fm_ver*) noexcept
    void fm_member_unlink(fm_family*, fm_member*) noexcept
    int fm_family_visit(fm_family*, visitproc, void*) noexcept
    void fm_set_mapping_flag(PyTypeObject*)

    void fm_incref "Py_INCREF"(PyObject*)
    void fm_decref "Py_DECREF"(PyObject*)
    void fm_xdecref "Py_XDECREF"(PyObject*)
    Py_ssize_t fm_refcnt "Py_REFCNT"(object)
    Py_ssize_t fm_refcnt_ptr "Py_REFCNT"(PyObject*) nogil
    Py_hash_t fm_hash "fm_hash_of"(object) except -1
    int fm_eq "PyObject_RichCompareBool"(PyObject*, PyObject*, int) except -1
    int Py_ReprEnter(object) except -1
    void Py_ReprLeave(object)


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
    cdef object _gc   # present so that the type takes part in cyclic GC (see _install_gc_slots)

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

    def __dealloc__(self):
        _fam_leave(self)
        fm_ver_clear(&self.v)

    # -- reading -------------------------------------------------------------------------
    def __len__(self):
        return self.v.count

    def __getitem__(self, key):
        cdef fm_entry* e = NULL
        if not fm_find(&self.v, fm_hash(key), <PyObject*>key, &e):
            raise KeyError(key)
        return <object>e.value

    def __contains__(self, key):
        cdef fm_entry* e = NULL
        return fm_find(&self.v, fm_hash(key), <PyObject*>key, &e) != 0

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
        if not fm_find(&self.v, fm_hash(key), <PyObject*>key, &e):
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
        return _KeysView(self)

    def values(self):
        """A view of the values, in insertion order.

        Complexity: O(1) to create; iterating it, and ``in`` (a scan), are O(n).

        >>> list(Snapshot(a=1, b=2).values())
        [1, 2]
        """
        return _ValuesView(self)

    def items(self):
        """A set-like view of the (key, value) pairs, in insertion order.

        Complexity: O(1) to create; iterating it is O(n); ``in`` is O(1) average (a key
        lookup, then a comparison of the value).

        >>> s = Snapshot(a=1, b=2)
        >>> list(s.items()), ("a", 1) in s.items(), ("a", 2) in s.items()
        ([('a', 1), ('b', 2)], True, False)
        """
        return _ItemsView(self)

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
            e = fm_next_live(&self.v, &p, self.v.elen, &leaf)
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
    if s._fam is not None or s is src or src.v.eroot == NULL:
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
        if a.v.count != b.v.count:
            return 0
        if a.v.eroot == b.v.eroot and a.v.iroot == b.v.iroot:
            return 1
        while True:
            e = fm_next_live(&a.v, &p, a.v.elen, &leaf)
            if e == NULL:
                return 1
            if not fm_find(&b.v, e.hash, e.key, &f):
                return 0
            if not (f.value == e.value or fm_eq(e.value, f.value, 2)):
                return 0
    if isinstance(other, dict):
        # like dict == dict: the dict's own storage (a subclass's overridden items(),
        # __len__ or __getitem__ are not consulted)
        if PyDict_Size(other) != a.v.count:
            return 0
        for k, v in dict.items(other):
            if not fm_find(&a.v, fm_hash(k), <PyObject*>k, &e):
                return 0
            if not (e.value == <PyObject*>v or fm_eq(e.value, <PyObject*>v, 2)):
                return 0
        return 1
    if isinstance(other, _abc.Mapping):
        if len(other) != a.v.count:
            return 0
        for k, v in other.items():
            if not fm_find(&a.v, fm_hash(k), <PyObject*>k, &e):
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
        if (<Snapshot>s).v.count == 0:
            return f"{name}()"
        return f"{name}({{" + ", ".join([f"{k!r}: {v!r}" for k, v in _make_iter(s, 2)]) + "})"
    finally:
        Py_ReprLeave(obj)


# -- bulk building -------------------------------------------------------------------------

cdef extern from *:
    """
    /* ---- bulk writes: the items of an update, collected before the lock into a C array
            of {hash, key, value} holding strong references (no tuple, no int object
            for the hash, nothing the cyclic GC tracks), then stored into a private
            version in one pass.  The array's references are dropped after the lock. ---- */
    typedef struct fm_buf { fm_entry *items; Py_ssize_t n, cap; } fm_buf;
    static inline void fm_buf_init(fm_buf *b) { b->items = NULL; b->n = 0; b->cap = 0; }
    static int fm_buf_reserve(fm_buf *b, Py_ssize_t k) {
        if (b->n + k > b->cap) {
            Py_ssize_t cap = b->cap ? b->cap * 2 : 16;
            fm_entry *items;
            while (cap < b->n + k) cap *= 2;
            if ((size_t)cap > PY_SSIZE_T_MAX / sizeof(fm_entry)) { PyErr_NoMemory(); return -1; }
            items = (fm_entry *)PyMem_Realloc(b->items, (size_t)cap * sizeof(fm_entry));
            if (items == NULL) { PyErr_NoMemory(); return -1; }
            b->items = items; b->cap = cap;
        }
        return 0;
    }
    static inline int fm_buf_push(fm_buf *b, Py_hash_t h, PyObject *k, PyObject *v) {
        fm_entry *e;
        if (b->n == b->cap && fm_buf_reserve(b, 1) < 0) return -1;
        e = b->items + b->n++;
        e->hash = h;
        Py_INCREF(k); e->key = k;
        Py_INCREF(v); e->value = v;
        return 0;
    }
    /* Drop the references (may run user code: only outside the writer lock). */
    static void fm_buf_clear(fm_buf *b) {
        fm_entry *items = b->items;
        Py_ssize_t i, n = b->n;
        fm_buf_init(b);
        for (i = 0; i < n; i++) { Py_XDECREF(items[i].key); Py_XDECREF(items[i].value); }
        PyMem_Free(items);
    }
    /* Append a dict's items (a dict, or a subclass whose iteration is dict's) to b, read
       from its storage as dict.update reads it.  Where the C API gives the dict's stored
       hashes (3.10-3.12) they are used, as dict.update uses them: no __hash__ runs, so the
       dict cannot change while it is read.  Elsewhere each key is hashed (a key's
       __hash__ may change the dict: a size change raises RuntimeError, like dict
       iteration).  Returns 1 when no user code ran (the items are distinct keys), 0 when
       some did, -1 on error. */
    static int fm_buf_from_dict(fm_buf *b, PyObject *d) {
        Py_ssize_t pos = 0, size = PyDict_GET_SIZE(d);
        PyObject *k, *v;
        int r = 1;
        if (fm_buf_reserve(b, size) < 0) return -1;
    #if PY_VERSION_HEX < 0x030D0000 && !defined(Py_GIL_DISABLED)
        {
            Py_hash_t h;
            while (_PyDict_Next(d, &pos, &k, &v, &h))
                if (fm_buf_push(b, h, k, v) < 0) return -1;
        }
    #else
    #ifdef Py_GIL_DISABLED
        Py_BEGIN_CRITICAL_SECTION(d);
    #endif
        while (PyDict_Next(d, &pos, &k, &v)) {
            Py_hash_t h;
            if (!fm_exact_str_or_int(k)) r = 0;
            Py_INCREF(k); Py_INCREF(v);      /* a key's __hash__ may drop the dict's */
            h = fm_hash_of(k);
            if (h == -1 || fm_buf_push(b, h, k, v) < 0) r = -1;
            Py_DECREF(k); Py_DECREF(v);
            if (r < 0) break;
            if (PyDict_GET_SIZE(d) != size) {
                PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
                r = -1;
                break;
            }
        }
    #ifdef Py_GIL_DISABLED
        Py_END_CRITICAL_SECTION();
    #endif
    #endif
        return r;
    }
    /* Can fm_bulk_store take n items into v in one pass: no migration running, and room
       in the index (load <= 2/3) and in its position field for n appends? */
    static inline int fm_bulk_fits(const fm_ver *v, Py_ssize_t n) {
        return v->oroot == NULL && v->iroot != NULL &&
               (size_t)(v->fill + n) * 3 <= (v->imask + 1) * 2 &&
               (size_t)(v->elen + n) <= (size_t)v->ipmask;
    }
    /* Store items[0..n) into the private version v (fm_bulk_fits(v, n) holds), in order.
       The first `distinct` items are known to be absent from v and distinct from one
       another (v was empty and they came from one dict or version with no user code
       run since): they are appended without a lookup.  The others are looked up (a
       key's __eq__ may run: v is private, nobody can reach it).  Appends fill the log
       page by page (one descent per page, the live counts added once per page); no
       migration can start (fm_bulk_fits).  On error (-1: __eq__ raised, or memory) v is
       a valid version holding the items before the failing one.  *changed is set when
       anything was stored.  The references of the items stored move from the array to
       v (the array's slot is cleared: no incref now, no decref later). */
    static int fm_bulk_store(fm_ver *v, fm_entry *items, Py_ssize_t n,
                             Py_ssize_t distinct, fm_pending *pend, int *changed) {
        fm_entry *leaf = NULL;
        Py_ssize_t i, base = 0, end = 0, unlive = 0, lpos = 0;
        int r = 0;
        for (i = 0; i < n; i++) {
            fm_entry *it = items + i;
            Py_ssize_t pos, slot, fs, p;
            fm_entry *e;
            int32_t *s;
            if (i >= distinct) {
                int found = fm_probe(v, it->hash, it->key, &pos, &slot, &fs);
                if (found < 0) { r = -1; break; }
                if (found) {
                    if (unlive) { fm_live_add(v, lpos, (int)unlive); unlive = 0; }
                    e = fm_entry_at(v, pos);
                    if (e->value == it->value) continue;
                    e = fm_entry_writable(v, pos, pend);
                    if (e == NULL || fm_pending_reserve(pend, 1) < 0) { r = -1; break; }
                    /* (a copied page on e's path is not on the append page's: that one
                       is already private, so leaf stays valid) */
                    fm_pending_push_obj(pend, e->value);
                    e->value = it->value;           /* the array's reference moves */
                    it->value = NULL;
                    *changed = 1;
                    continue;
                }
                if (fs < 0) fs = fm_free_slot(v, it->hash);
            } else fs = fm_free_slot(v, it->hash);
            p = v->elen;
            if (leaf == NULL || p >= end) {
                if (unlive) { fm_live_add(v, lpos, (int)unlive); unlive = 0; }
                e = fm_entry_writable(v, p, pend);
                if (e == NULL) { r = -1; break; }
                leaf = e - (p & (FM_ECAP - 1));
                base = p - (p & (FM_ECAP - 1));
                end = base + (Py_ssize_t)(((fm_node *)leaf) - 1)->cap;
            }
            s = fm_islot_writable(&v->iroot, v->idepth, (size_t)fs, pend);
            if (s == NULL) { r = -1; break; }
            e = leaf + (p - base);
            e->hash = it->hash;
            e->key = it->key; e->value = it->value;     /* the references move */
            it->key = NULL; it->value = NULL;
            if (*s == FM_EMPTY) v->fill++;
            *s = (int32_t)(fm_stag(it->hash, v->ipmask) | (uint32_t)p);
            v->elen++;
            v->count++;
            lpos = p;
            unlive++;
            *changed = 1;
        }
        if (unlive) fm_live_add(v, lpos, (int)unlive);
        if (r == 0) fm_maintain(v, pend);
        return r;
    }
    """
    ctypedef struct fm_buf:
        fm_entry* items
        Py_ssize_t n
    void fm_buf_init(fm_buf*) nogil
    int fm_buf_reserve(fm_buf*, Py_ssize_t) except -1
    int fm_buf_push(fm_buf*, Py_hash_t, PyObject*, PyObject*) except -1
    void fm_buf_clear(fm_buf*)
    int fm_bulk_fits(const fm_ver*, Py_ssize_t) nogil
    int fm_buf_from_dict(fm_buf*, object) except -1
    int fm_bulk_store(fm_ver*, fm_entry*, Py_ssize_t, Py_ssize_t, fm_pending*, int*) except -1
    bint fm_exact_str_or_int "fm_exact_str_or_int"(object) nogil
    PyObject* fm_tuple_item "PyTuple_GET_ITEM"(object, Py_ssize_t) nogil
    Py_ssize_t fm_tuple_size "PyTuple_GET_SIZE"(object) nogil


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
        fm_buf_reserve(b, s.v.count)
        while True:
            e = fm_next_live(&s.v, &pos, s.v.elen, &leaf)
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
            fm_buf_push(b, fm_hash(k), <PyObject*>k, <PyObject*>v)
            i += 1
    else:
        for k, v in _update_pairs(mapping, "SnapshotMap"):
            fm_buf_push(b, fm_hash(k), <PyObject*>k, <PyObject*>v)
    if kwargs:
        for k, v in kwargs.items():
            fm_buf_push(b, fm_hash(k), <PyObject*>k, <PyObject*>v)
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
    cdef fm_node* _root        # _snap.v.eroot when the iterator was made
    cdef Py_ssize_t _end       # _snap.v.elen then
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
        if self._snap.v.eroot != self._root or self._snap.v.elen != self._end:
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
    it._remaining = s.v.count
    it._root = s.v.eroot
    it._end = s.v.elen
    it._pos = 0
    it._leaf = NULL
    return it


def _isdisjoint(view, other):
    """As dict's views: see fastmaps._hashmap._view_isdisjoint."""
    return _view_isdisjoint(view, other, (_KeysView, _ItemsView))




class _KeysView(_abc.KeysView):
    """Keys of one immutable version (the snapshot current when the view was made)."""
    __slots__ = ()

    isdisjoint = _isdisjoint

    @property
    def mapping(self):
        """A read-only proxy of the version the view reads."""
        return _MappingProxyType(self._mapping)

    def __iter__(self):
        return _make_iter(self._mapping, 0)

    def __reversed__(self):
        return reversed(self._mapping)

    def __contains__(self, key):
        return key in self._mapping

    def __len__(self):
        return len(self._mapping)

    def __repr__(self):
        return f"snapshot_keys({list(self)!r})"


class _ValuesView(_abc.ValuesView):
    """Values of one immutable version."""
    __slots__ = ()

    @property
    def mapping(self):
        """A read-only proxy of the version the view reads."""
        return _MappingProxyType(self._mapping)

    def __iter__(self):
        return _make_iter(self._mapping, 1)

    def __reversed__(self):
        return iter(list(self)[::-1])

    def __len__(self):
        return len(self._mapping)

    def __repr__(self):
        return f"snapshot_values({list(self)!r})"


class _ItemsView(_abc.ItemsView):
    """(key, value) pairs of one immutable version."""
    __slots__ = ()

    isdisjoint = _isdisjoint

    @property
    def mapping(self):
        """A read-only proxy of the version the view reads."""
        return _MappingProxyType(self._mapping)

    def __iter__(self):
        return _make_iter(self._mapping, 2)

    def __reversed__(self):
        return iter(list(self)[::-1])

    def __contains__(self, item):
        if not isinstance(item, tuple) or len(item) != 2:
            return False                    # as dict: only a 2-tuple can be an item
        key, value = item
        m = self._mapping
        v = m.get(key, _MISSING)
        return v is not _MISSING and (v is value or v == value)

    def __len__(self):
        return len(self._mapping)

    def __repr__(self):
        return f"snapshot_items({list(self)!r})"


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
        if self._version == 0 and (<Snapshot>self._cur).v.count == 0:
            # fresh map: the initial contents are version 0, built before the lock (their
            # keys' __hash__/__eq__, a mapping's keys() run there) ...
            s = Snapshot(mapping, **kwargs)
            if not s.v.count:
                return
            fm_pending_init(&pend)
            _acquire(self)
            try:
                # ... and published only if the map is still fresh: a write made meanwhile
                # (by that user code, or by another thread) is kept, and the contents are
                # then applied over it as an update, as dict.__init__ does
                if self._version == 0 and (<Snapshot>self._cur).v.count == 0:
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

    def __dealloc__(self):
        cdef PyObject* cur = self._cur
        self._cur = NULL
        fm_xdecref(cur)
        fm_pending_flush(&self._retired)

    # -- reading (lock-free) --------------------------------------------------------------
    def __getitem__(self, key):
        cdef Py_hash_t h = fm_hash(key)
        cdef Snapshot s = _load(self)
        cdef fm_entry* e = NULL
        if not fm_find(&s.v, h, <PyObject*>key, &e):
            raise KeyError(key)
        return <object>e.value

    def __contains__(self, key):
        cdef Py_hash_t h = fm_hash(key)
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
        cdef Py_hash_t h = fm_hash(key)
        cdef Snapshot s = _load(self)
        cdef fm_entry* e = NULL
        if not fm_find(&s.v, h, <PyObject*>key, &e):
            return default
        return <object>e.value

    def __len__(self):
        return _load(self).v.count

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
        return _KeysView(_load(self))

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
        return _ValuesView(_load(self))

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
        return _ItemsView(_load(self))

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
        # As for a dict subclass: recreate with cls.__new__ (no __init__ call), restore a
        # subclass's instance state, then set the items one by one.  pickle and copy
        # record the new map in their memo before its items are built, so a map that
        # contains itself round-trips.
        cls = type(self)
        state = None
        if cls is not SnapshotMap:
            getstate = getattr(self, "__getstate__", None)      # 3.11+: object's
            state = getstate() if getstate is not None else getattr(self, "__dict__", None)
        return (_copyreg.__newobj__, (cls,), state or None, None, iter(_load(self).items()))

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
        if s.v.count:
            c = _snap_share(s)
            fm_pending_init(&pend)
            _acquire(m)
            try:
                _publish_locked(m, c, &pend)
            finally:
                _release(m)
                fm_pending_flush(&pend)
        return m

    def __copy__(self):
        if type(self) is SnapshotMap:
            return self.copy()
        import copy         # a subclass: through __reduce_ex__, keeping type and state
        return copy._reconstruct(self, None, *self.__reduce_ex__(4))

    __class_getitem__ = classmethod(_GenericAlias)

    # -- single-key writes ---------------------------------------------------------------
    def __setitem__(self, key, value):
        cdef Py_hash_t h = fm_hash(key)
        _write_assoc(self, h, key, value, False)

    def __delitem__(self, key):
        cdef Py_hash_t h = fm_hash(key)
        cdef object value = _write_without(self, h, key, None, False)
        if value is _MISSING:
            raise KeyError(key)

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
        if _load(self).v.count == 0:        # like dict: an empty map does not hash the key
            if default is _MISSING:
                raise KeyError(key)
            return default
        h = fm_hash(key)
        value = _write_without(self, h, key, None, False)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
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
        return _write_popitem(self)

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
        r = _write_assoc(self, fm_hash(key), key, default, True)
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
                changed = _ver_update_buf(&tmp, &buf, distinct if tmp.count == 0 else 0,
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
            if (<Snapshot>self._cur).v.count:
                self._version += 1
                s._version = self._version
                _publish_locked(self, s, &pend)
        finally:
            _release(self)
            fm_pending_flush(&pend)

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
        cdef Py_hash_t h = fm_hash(key)
        r = _write_assoc(self, h, key, value, True)
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
        cdef Py_hash_t h = fm_hash(key)
        value = _write_without(self, h, key, None, False)
        if value is _MISSING:
            return (None, False)
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
        cdef Py_hash_t h = fm_hash(key)
        r = _write_assoc(self, h, key, value, False)
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
        cdef Py_hash_t h = fm_hash(key)
        return _write_cas(self, h, key, old, new)

    def compare_and_delete(self, key, old):
        """If key is present and its value is old (identity, then ==), delete it and
        return True; otherwise return False.

        Complexity: as ``pop()``: O(1) average (the log is compacted incrementally).

        >>> m = SnapshotMap(a=1, b=2)
        >>> m.compare_and_delete("a", 0), m.compare_and_delete("a", 1), m
        (False, True, SnapshotMap({'b': 2}))
        """
        cdef Py_hash_t h = fm_hash(key)
        return _write_without(self, h, key, old, True) is not _MISSING

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
                "migrating": _load(self).v.oroot != NULL}


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
    """Take the writer lock (see "Writer lock" in the module docstring)."""
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


cdef object _write_assoc(SnapshotMap m, Py_hash_t h, object key, object value,
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
    tmp.eroot = tmp.iroot = tmp.oroot = NULL     # (fm_ver_share fills the rest)
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
        if tmp.eroot != NULL or tmp.iroot != NULL or tmp.oroot != NULL:
            fm_ver_clear(&tmp)          # only if the write failed
    return result


cdef object _write_without(SnapshotMap m, Py_hash_t h, object key, object old,
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
    tmp.eroot = tmp.iroot = tmp.oroot = NULL     # (fm_ver_share fills the rest)
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
        if tmp.eroot != NULL or tmp.iroot != NULL or tmp.oroot != NULL:
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
    tmp.eroot = tmp.iroot = tmp.oroot = NULL     # (fm_ver_share fills the rest)
    fm_pending_init(&pend)
    _acquire(m)
    try:
        cur = <Snapshot>m._cur
        if cur.v.count:
            # the last log position always holds the last live entry; its index slot is
            # found by position, so no user code runs.  The result tuple is made after
            # the lock is released (an allocation can start a collection, whose
            # finalizers may write to this map).
            pos = cur.v.elen - 1
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
        if tmp.eroot != NULL or tmp.iroot != NULL or tmp.oroot != NULL:
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
    tmp.eroot = tmp.iroot = tmp.oroot = NULL     # (fm_ver_share fills the rest)
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
        if tmp.eroot != NULL or tmp.iroot != NULL or tmp.oroot != NULL:
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
            fm_pending_push_node(&self._pend, self._v.eroot)
            fm_pending_push_node(&self._pend, self._v.iroot)
            fm_pending_push_node(&self._pend, self._v.oroot)
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
            h = fm_hash(key)
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

    cdef object _without(self, object key):
        cdef Py_hash_t h
        cdef Py_ssize_t pos, slot
        cdef fm_entry* e = NULL
        cdef object result = _MISSING
        self._enter_write()
        try:
            h = fm_hash(key)
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
        if self._kin.v.eroot == NULL:
            self._kin = s                # the batch's pages are all new: s starts a family
        s._version = self._base._version
        return s

    # -- mapping API -----------------------------------------------------------------
    def __setitem__(self, key, value):
        self._assoc(key, value, False)

    def __delitem__(self, key):
        if self._without(key) is _MISSING:
            raise KeyError(key)

    def __getitem__(self, key):
        cdef fm_entry* e = NULL
        self._enter_read()
        try:
            if not fm_find(&self._v, fm_hash(key), <PyObject*>key, &e):
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
            if not fm_find(&self._v, fm_hash(key), <PyObject*>key, &e):
                return default
            return <object>e.value
        finally:
            self._leave()

    def __contains__(self, key):
        cdef fm_entry* e = NULL
        self._enter_read()
        try:
            return fm_find(&self._v, fm_hash(key), <PyObject*>key, &e) != 0
        finally:
            self._leave()

    def __len__(self):
        self._enter_read()
        self._leave()
        return self._v.count

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
        value = self._without(key)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
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
            if self._v.count == 0:
                raise KeyError("popitem(): batch is empty")
            pos = self._v.elen - 1
            e = fm_entry_at(&self._v, pos)
            result = (<object>e.key, <object>e.value)
            slot = fm_slot_of(&self._v, e.hash, pos)
            fm_delete(&self._v, pos, slot, &self._pend)
            self._dirty = True
        finally:
            self._leave()
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
                if _ver_update_buf(&self._v, &buf, distinct if self._v.count == 0 else 0,
                                   &self._pend):
                    self._dirty = True
            except BaseException:
                self._dirty = True   # earlier items of this update may have been applied
                raise
            finally:
                self._leave()
        finally:
            fm_buf_clear(&buf)

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
            if self._v.count:
                fm_ver_release(&self._v, &self._pend)
                self._dirty = True
        finally:
            self._leave()

    def __repr__(self):
        state = ("active" if self._state == 1 else "finished" if self._state == 2 else "new")
        return f"<SnapshotMap batch ({state}, {self._v.count} items)>"


# ---------------------------------------------------------------------------------------
# invariant checker
# ---------------------------------------------------------------------------------------

cdef Py_ssize_t _check_tree(fm_node* n, int depth, int leafbits, int kind, size_t base,
                            size_t limit, Py_ssize_t elen) except -1:
    """Structure of one page tree; returns the number of leaf pages covering positions
    below `limit`.  For the log, records at positions >= elen must be holes."""
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
                if <Py_ssize_t>(base + i) >= elen:
                    assert e[i].key == NULL and e[i].value == NULL, "live record beyond elen"
                else:
                    assert (e[i].key == NULL) == (e[i].value == NULL), "half a record"
        return 1 if base < limit else 0
    assert n.kind == FM_INNER and n.cap == FM_FAN, "bad inner node"
    span = (<size_t>1) << (leafbits + FM_FBITS * (depth - 1))
    for i in range(FM_FAN):
        if fm_kids(n)[i] != NULL:
            total += _check_tree(fm_kids(n)[i], depth - 1, leafbits, kind, base + i * span,
                                 limit, elen)
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
        for i in range(FM_FAN):
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


cdef int _check_pmask(uint32_t pmask, size_t nslots) except -1:
    assert pmask >= 255 and pmask <= 0x7fffffff and (pmask & (pmask + 1)) == 0, \
        "position mask is not 2^k - 1"
    assert pmask + 1 >= min(2 * nslots, 0x80000000), "position field narrower than 2 * slots"
    return 0


cdef bint _reachable(fm_node* root, int depth, size_t mask, uint32_t pmask, Py_hash_t h,
                    Py_ssize_t p):
    """Is log position p on h's probe sequence before any EMPTY slot?"""
    cdef size_t perturb = <size_t>h
    cdef size_t i = <size_t>h & mask
    cdef int32_t ix
    while True:
        ix = fm_islot_at(root, depth, i)[0]
        if ix == FM_EMPTY:
            return False
        if ix >= 0 and (<uint32_t>ix & pmask) == <uint32_t>p:
            return True
        perturb >>= 5
        i = (i * 5 + perturb + 1) & mask


cdef int _check_ver(fm_ver* v, bint rehash) except -1:
    cdef Py_ssize_t p, live = 0, used = 0, filled = 0, pos
    cdef size_t i, nslots
    cdef int32_t ix
    cdef fm_entry* e = NULL
    cdef bytearray seen
    cdef bint mig = v.oroot != NULL
    assert v.count >= 0 and v.elen >= v.count, "counts"
    if v.count == 0:
        assert v.eroot == NULL and v.iroot == NULL and v.oroot == NULL and v.elen == 0 \
            and v.fill == 0, "empty version still holds pages"
        return 0
    assert v.eroot != NULL and v.iroot != NULL, "missing pages"
    # log
    if v.edepth == 0:
        assert v.eroot.kind == FM_ELEAF and v.eroot.cap <= FM_ECAP, "bad root leaf"
        assert v.elen <= v.eroot.cap, "elen beyond the root leaf"
    else:
        assert v.elen <= (<Py_ssize_t>FM_ECAP << (FM_FBITS * v.edepth)), "elen beyond the tree"
    _check_tree(v.eroot, v.edepth, FM_EBITS, FM_ELEAF, 0, 0, v.elen)
    assert _check_live(v.eroot, v.edepth) == v.count, "live count of the log root != count"
    for p in range(v.elen):
        e = fm_entry_at(v, p)
        if e.key != NULL:
            live += 1
            assert not (mig and v.mw <= p < v.mr), "live record inside the migration gap"
            if rehash:
                assert hash(<object>e.key) == e.hash, "stored hash differs from hash(key)"
    assert live == v.count, f"count {v.count} != {live} live records"
    assert fm_entry_at(v, v.elen - 1).key != NULL, "trailing hole (popitem must be LIFO)"
    if mig:
        assert 0 <= v.mw <= v.mr <= v.elen and v.mend <= v.elen, "migration cursors"
        assert v.mr < v.elen and not (v.mr >= v.mend and v.mw == v.mr), \
            "finished migration still holds the old index"
        _check_index(v.oroot, v.odepth, v.omask)
    else:
        assert v.mw == 0 and v.mr == 0 and v.mend == 0, "cursors set without a migration"
        assert v.elen - v.count <= max(v.count, 32), "too many holes (compaction missed)"
    # index (the new one during a migration)
    _check_index(v.iroot, v.idepth, v.imask)
    nslots = v.imask + 1
    _check_pmask(v.ipmask, nslots)
    assert <size_t>v.elen <= v.ipmask + 1, "log beyond the index's position field"
    seen = bytearray(v.elen)
    for i in range(nslots):
        ix = fm_slot_at(v, i)[0]
        if ix != FM_EMPTY:
            filled += 1
        if ix >= 0:
            used += 1
            pos = <uint32_t>ix & v.ipmask
            assert pos < v.elen, "index slot beyond the log"
            assert not fm_in_old(v, pos), "index slot pointing to a record of the old index"
            assert not seen[pos], "two index slots for one record"
            seen[pos] = 1
            assert fm_entry_at(v, pos).key != NULL, "index slot pointing to a hole"
            assert <uint32_t>ix == fm_stag(fm_entry_at(v, pos).hash, v.ipmask) | <uint32_t>pos, \
                "index slot's tag differs from its record's"
        else:
            assert ix == FM_EMPTY or ix == FM_DUMMY, "bad index slot value"
    assert filled == v.fill, f"fill {v.fill} != {filled}"
    assert filled * 3 <= nslots * 2, "index too full"
    if mig:
        _check_pmask(v.opmask, v.omask + 1)
        # old index: slots pointing into [mr, mend) are live and unique; others are stale
        for i in range(v.omask + 1):
            ix = fm_islot_at(v.oroot, v.odepth, i)[0]
            pos = <uint32_t>ix & v.opmask
            if ix >= 0 and fm_in_old(v, pos):
                used += 1
                assert not seen[pos], "two index slots for one record"
                seen[pos] = 1
                assert fm_entry_at(v, pos).key != NULL, "old index slot pointing to a hole"
                assert <uint32_t>ix == \
                    fm_stag(fm_entry_at(v, pos).hash, v.opmask) | <uint32_t>pos, \
                    "old index slot's tag differs from its record's"
            elif ix < 0:
                assert ix == FM_EMPTY or ix == FM_DUMMY, "bad old index slot value"
    assert used == v.count, "the indexes do not cover every live record"
    # every record is reachable in the index that owns it by probing its hash without
    # crossing an EMPTY slot
    for p in range(v.elen):
        e = fm_entry_at(v, p)
        if e.key == NULL:
            continue
        if fm_in_old(v, p):
            assert _reachable(v.oroot, v.odepth, v.omask, v.opmask, e.hash, p), \
                "record not reachable from its hash (old index)"
        else:
            assert _reachable(v.iroot, v.idepth, v.imask, v.ipmask, e.hash, p), \
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

cdef traverseproc _orig_snap_traverse
cdef inquiry _orig_snap_clear
cdef traverseproc _orig_map_traverse
cdef inquiry _orig_map_clear


cdef int _snap_traverse(PyObject* o, visitproc visit, void* arg) noexcept:
    cdef int r = _orig_snap_traverse(o, visit, arg)      # _fam (and _gc)
    if r:
        return r
    return fm_visit_own((<Snapshot>o).v.eroot, visit, arg)


cdef int _snap_clear(PyObject* o) noexcept:
    cdef Snapshot s = <Snapshot>o
    _fam_leave(s)
    fm_ver_clear(&s.v)          # (empties s.v before it drops any reference)
    return _orig_snap_clear(o)


cdef int _fam_traverse(PyObject* o, visitproc visit, void* arg) noexcept:
    return fm_family_visit(&(<_Family>o).f, visit, arg)


cdef int _map_traverse(PyObject* o, visitproc visit, void* arg) noexcept:
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


cdef extern from *:
    """
    #define fm_type_traverse(t) (((PyTypeObject *)(t))->tp_traverse)
    #define fm_type_clear(t) (((PyTypeObject *)(t))->tp_clear)
    """
    traverseproc fm_type_traverse(object)
    inquiry fm_type_clear(object)


_orig_snap_traverse = fm_type_traverse(Snapshot)
_orig_snap_clear = fm_type_clear(Snapshot)
_orig_map_traverse = fm_type_traverse(SnapshotMap)
_orig_map_clear = fm_type_clear(SnapshotMap)
fm_set_gc_slots(<PyTypeObject*>Snapshot, _snap_traverse, _snap_clear)
fm_set_gc_slots(<PyTypeObject*>SnapshotMap, _map_traverse, _map_clear)
fm_set_gc_slots(<PyTypeObject*>_Family, _fam_traverse, fm_type_clear(_Family))
fm_set_mapping_flag(<PyTypeObject*>Snapshot)
fm_set_mapping_flag(<PyTypeObject*>SnapshotMap)

_abc.Mapping.register(Snapshot)
_abc.MutableMapping.register(SnapshotMap)
_abc.MutableMapping.register(Batch)

FREE_THREADED_BUILD = bool(FM_FREE_THREADED)
