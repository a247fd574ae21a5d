"""SnapshotMap: a mapping whose readers never take a lock.

Structure
---------
Every published version of the map is an immutable persistent hash trie (a CHAMP-style
HAMT: 32-way bitmap nodes that keep their key/value entries in one compact array in front
of their child pointers, plus collision nodes for keys whose full 64-bit hashes are equal).
Nodes are plain C structs (not Python objects) with their own reference count, so several
versions share every subtree a write did not touch.  An entry stores the key's hash, so a
lookup uses the hash bits directly, compares stored hashes before calling ``__eq__`` and
never hashes a stored key again (splitting a slot reuses the stored hash).

* A single-key write copies only the path from the root to the key (O(log32 n) nodes).
* Bulk writes (``update``, ``batch()``, ``replace``, the constructor) are *transient*:
  they take a fresh, never reused, 64-bit edit id and mutate in place every node tagged
  with it.  Such nodes were created by the same bulk operation, are referenced exactly
  once (by their parent in the private tree) and are not reachable from any published
  version.  Nodes of published versions carry older ids and are path-copied first.  When
  the result is published the id is simply never used again, which freezes those nodes.

Publication protocol (what is published, how readers load it, how versions are reclaimed)
------------------------------------------------------------------------------------------
* What is published: ``SnapshotMap._cur``, a raw ``PyObject*`` to a fully built, immutable
  ``Snapshot`` object (the root node, the entry count and the version number).  The map
  owns one strong reference to it.  Nothing reachable from a published Snapshot is ever
  written again (transient ids are never reused, see above).
* Writers are serialized by one mutex (``cython.pymutex``: a ``PyMutex`` on 3.13+, a
  ``PyThread_type_lock`` before).  A writer builds the new version privately and
  publishes it with one atomic exchange of ``_cur`` (sequentially consistent on
  free-threaded builds, so every store that built the tree happens-before any reader
  that loads the new pointer).  Keys are hashed before the lock is taken; the new Snapshot
  object is allocated before the lock is taken; every reference that might be the last
  one (replaced values, the previous version, retired versions) is released after the
  lock is released, so no user ``__del__`` runs while the lock is held.
* How readers load it: a reader takes no lock.  It announces itself in the map's
  ``_readers`` counter (atomic increment), loads ``_cur`` (acquire), increments the
  Snapshot's reference count, and leaves the counter (atomic decrement).  From then on it
  owns a reference to an immutable version: every lookup, ``len``, iterator and view
  works on that one version for its whole life and may call ``__eq__``/``__hash__``
  freely.  On GIL builds the load-and-incref window contains no point where the GIL can be
  released, so the counter operations compile to nothing.
* How old versions are reclaimed: after the exchange the writer (still under the lock)
  reads ``_readers``.  If it is zero, no reader can be between loading the old pointer and
  taking its reference (seq_cst: any reader that has not yet announced itself will load
  the new pointer), so the old Snapshot, and every version retired earlier, is released
  after the lock is dropped.  Otherwise the old Snapshot goes on the map's retired list
  and is released by the next writer that observes zero readers.  Writers never wait for
  readers.  After that, ordinary reference counting frees a version (and the nodes only it
  uses) as soon as the last reader, iterator, view or user-held Snapshot lets go; node
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
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.pythread cimport PyThread_get_thread_ident
from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t

import collections.abc as _abc
from types import GenericAlias as _GenericAlias

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    typedef struct fm_node {
        Py_ssize_t refcnt;     /* node reference count (atomic on free-threaded builds) */
        uint32_t datamap;      /* bitmap node: slots holding an entry */
        uint32_t nodemap;      /* bitmap node: slots holding a child node */
        uint64_t edit;         /* transient owner id; nodes of published versions are frozen */
        uint8_t kind;          /* FM_BITMAP or FM_COLLISION */
        uint8_t nchild;        /* number of child pointers */
        uint16_t _pad;
        uint32_t ndata;        /* number of entries */
        /* followed by: fm_node *children[nchild]; fm_entry data[ndata]; */
    } fm_node;

    typedef struct fm_entry {
        Py_hash_t hash;
        PyObject *key;
        PyObject *value;
    } fm_entry;

    #define FM_BITMAP 0
    #define FM_COLLISION 1
    #define FM_HASH_BITS ((int)(8 * sizeof(Py_hash_t)))
    #define FM_MAX_DEPTH 16

    static inline fm_node **fm_children(fm_node *n) { return (fm_node **)(n + 1); }
    static inline fm_entry *fm_data(fm_node *n) { return (fm_entry *)(fm_children(n) + n->nchild); }

    static inline int fm_popcount(uint32_t x) {
    #if defined(__POPCNT__) || (defined(_MSC_VER) && defined(__AVX__))
        return __builtin_popcount(x);
    #else
        x = x - ((x >> 1) & 0x55555555u);
        x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
        return (int)((((x + (x >> 4)) & 0x0F0F0F0Fu) * 0x01010101u) >> 24);
    #endif
    }
    static inline uint32_t fm_bitpos(Py_hash_t h, int shift) {
        return (uint32_t)1 << (((size_t)h >> shift) & 31);
    }
    static inline int fm_chunk(Py_hash_t h, int shift) { return (int)(((size_t)h >> shift) & 31); }
    static inline int fm_prefix_eq(Py_hash_t a, Py_hash_t b, int shift) {
        /* equal in the lowest `shift` bits */
        if (shift >= FM_HASH_BITS) return a == b;
        return ((((size_t)a) ^ ((size_t)b)) & ((((size_t)1) << shift) - 1)) == 0;
    }

    #define fm_eq(a, b) PyObject_RichCompareBool((a), (b), Py_EQ)

    /* ---- atomics: real ones on free-threaded builds, plain code under the GIL ---- */
    #ifdef Py_GIL_DISABLED
    static uint64_t fm_edit_counter = 0;
    static inline void fm_node_incref(fm_node *n) { _Py_atomic_add_ssize(&n->refcnt, 1); }
    static inline int fm_node_decref_is_zero(fm_node *n) { return _Py_atomic_add_ssize(&n->refcnt, -1) == 1; }
    static inline Py_ssize_t fm_node_refcnt(fm_node *n) { return _Py_atomic_load_ssize(&n->refcnt); }
    static inline uint64_t fm_next_edit(void) { return _Py_atomic_add_uint64(&fm_edit_counter, 1) + 1; }
    static inline PyObject *fm_load_published(PyObject **p) { return (PyObject *)_Py_atomic_load_ptr_acquire(p); }
    static inline PyObject *fm_exchange_published(PyObject **p, PyObject *v) { return (PyObject *)_Py_atomic_exchange_ptr(p, v); }
    static inline void fm_readers_enter(Py_ssize_t *c) { _Py_atomic_add_ssize(c, 1); }
    static inline void fm_readers_exit(Py_ssize_t *c) { _Py_atomic_add_ssize(c, -1); }
    static inline Py_ssize_t fm_readers_load(Py_ssize_t *c) { return _Py_atomic_load_ssize(c); }
    static inline void fm_readers_add(Py_ssize_t *c, Py_ssize_t d) { _Py_atomic_add_ssize(c, d); }
    static inline uintptr_t fm_owner_load(uintptr_t *p) { return _Py_atomic_load_uintptr_relaxed(p); }
    static inline void fm_owner_store(uintptr_t *p, uintptr_t v) { _Py_atomic_store_uintptr_relaxed(p, v); }
    #define FM_FREE_THREADED 1
    #else
    static uint64_t fm_edit_counter = 0;
    static inline void fm_node_incref(fm_node *n) { n->refcnt++; }
    static inline int fm_node_decref_is_zero(fm_node *n) { return --n->refcnt == 0; }
    static inline Py_ssize_t fm_node_refcnt(fm_node *n) { return n->refcnt; }
    static inline uint64_t fm_next_edit(void) { return ++fm_edit_counter; }
    static inline PyObject *fm_load_published(PyObject **p) { return *p; }
    static inline PyObject *fm_exchange_published(PyObject **p, PyObject *v) { PyObject *o = *p; *p = v; return o; }
    static inline void fm_readers_enter(Py_ssize_t *c) { (void)c; }
    static inline void fm_readers_exit(Py_ssize_t *c) { (void)c; }
    static inline Py_ssize_t fm_readers_load(Py_ssize_t *c) { return *c; }
    static inline void fm_readers_add(Py_ssize_t *c, Py_ssize_t d) { *c += d; }
    static inline uintptr_t fm_owner_load(uintptr_t *p) { return *p; }
    static inline void fm_owner_store(uintptr_t *p, uintptr_t v) { *p = v; }
    #define FM_FREE_THREADED 0
    #endif

    /* ---- node allocation and release ---- */
    static fm_node *fm_node_alloc(int kind, Py_ssize_t nchild, Py_ssize_t ndata, uint64_t edit) {
        fm_node *n = (fm_node *)PyMem_Malloc(sizeof(fm_node) + nchild * sizeof(fm_node *)
                                             + ndata * sizeof(fm_entry));
        if (n == NULL) { PyErr_NoMemory(); return NULL; }
        n->refcnt = 1; n->datamap = 0; n->nodemap = 0; n->edit = edit;
        n->kind = (uint8_t)kind; n->nchild = (uint8_t)nchild; n->_pad = 0; n->ndata = (uint32_t)ndata;
        return n;
    }
    static void fm_node_free(fm_node *n);
    static inline void fm_node_decref(fm_node *n) {
        if (n != NULL && fm_node_decref_is_zero(n)) fm_node_free(n);
    }
    static void fm_node_free(fm_node *n) {
        fm_node **c = fm_children(n);
        fm_entry *d = fm_data(n);
        uint32_t i;
        for (i = 0; i < n->nchild; i++) fm_node_decref(c[i]);
        for (i = 0; i < n->ndata; i++) { Py_DECREF(d[i].key); Py_DECREF(d[i].value); }
        PyMem_Free(n);
    }

    /* ---- references to drop later (after the writer lock is released) ---- */
    typedef struct fm_pending { void **items; Py_ssize_t n, cap; } fm_pending;
    static inline void fm_pending_init(fm_pending *p) { p->items = NULL; p->n = 0; p->cap = 0; }
    static int fm_pending_push(fm_pending *p, void *item) {
        if (p->n == p->cap) {
            Py_ssize_t cap = p->cap ? p->cap * 2 : 8;
            void **items = (void **)PyMem_Realloc(p->items, cap * sizeof(void *));
            if (items == NULL) { PyErr_NoMemory(); return -1; }
            p->items = items; p->cap = cap;
        }
        p->items[p->n++] = item;
        return 0;
    }
    /* objects are pushed as-is, nodes with the low bit set */
    static inline int fm_pending_push_obj(fm_pending *p, PyObject *o) { return fm_pending_push(p, (void *)o); }
    static inline int fm_pending_push_node(fm_pending *p, fm_node *n) {
        return fm_pending_push(p, (void *)((uintptr_t)n | 1));
    }
    /* Release everything; safe to run user code (__del__) from here. */
    static void fm_pending_flush(fm_pending *p) {
        while (p->n > 0 || p->items != NULL) {
            void **items = p->items;
            Py_ssize_t i, n = p->n;
            p->items = NULL; p->n = 0; p->cap = 0;
            for (i = 0; i < n; i++) {
                uintptr_t v = (uintptr_t)items[i];
                if (v & 1) fm_node_decref((fm_node *)(v & ~(uintptr_t)1));
                else Py_DECREF((PyObject *)v);
            }
            PyMem_Free(items);
        }
    }

    /* ---- depth-first iteration over a (frozen) tree: entries first, then children ---- */
    typedef struct fm_iter {
        fm_node *stack[FM_MAX_DEPTH];
        uint32_t pos[FM_MAX_DEPTH];
        int depth;
        int want_values;   /* prefetch values too (values/items iteration) */
    } fm_iter;
    #if defined(__GNUC__) || defined(__clang__)
    #define FM_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define FM_PREFETCH(p) ((void)(p))
    #endif
    /* Entering a node: start loading the key (and value) objects of all its entries and
       its children's headers.  Iteration is in hash order, so these objects are scattered
       in memory; issuing the loads together overlaps the cache misses. */
    static inline void fm_iter_prefetch(fm_iter *it, fm_node *n) {
        fm_entry *d = fm_data(n);
        fm_node **c = fm_children(n);
        uint32_t i;
        for (i = 0; i < n->ndata; i++) {
            FM_PREFETCH(d[i].key);
            if (it->want_values) FM_PREFETCH(d[i].value);
        }
        for (i = 0; i < n->nchild; i++) FM_PREFETCH(c[i]);
    }
    static inline void fm_iter_init(fm_iter *it, fm_node *root) {
        it->want_values = 0;
        if (root != NULL) { it->stack[0] = root; it->pos[0] = 0; it->depth = 0; }
        else it->depth = -1;
    }
    static inline fm_entry *fm_iter_next(fm_iter *it) {
        while (it->depth >= 0) {
            fm_node *n = it->stack[it->depth];
            uint32_t p = it->pos[it->depth];
            if (p == 0) fm_iter_prefetch(it, n);
            if (p < n->ndata) { it->pos[it->depth] = p + 1; return fm_data(n) + p; }
            p -= n->ndata;
            if (p < n->nchild) {
                it->pos[it->depth]++;
                it->depth++;
                it->stack[it->depth] = fm_children(n)[p];
                it->pos[it->depth] = 0;
                continue;
            }
            it->depth--;
        }
        return NULL;
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

    /* GC slots: patched onto the types at import (see _install_gc_slots). */
    static void fm_set_gc_slots(PyTypeObject *t, traverseproc tr, inquiry cl) {
        t->tp_traverse = tr; t->tp_clear = cl;
    }
    """
    ctypedef struct fm_node:
        Py_ssize_t refcnt
        uint32_t datamap
        uint32_t nodemap
        uint64_t edit
        uint8_t kind
        uint8_t nchild
        uint32_t ndata
    ctypedef struct fm_entry:
        Py_hash_t hash
        PyObject* key
        PyObject* value
    ctypedef struct fm_pending:
        Py_ssize_t n
    ctypedef struct fm_iter:
        int depth
        int want_values
    ctypedef int (*visitproc)(PyObject*, void*)
    ctypedef int (*traverseproc)(PyObject*, visitproc, void*)
    ctypedef int (*inquiry)(PyObject*)
    ctypedef struct PyTypeObject:
        pass

    int FM_BITMAP
    int FM_COLLISION
    int FM_HASH_BITS
    int FM_MAX_DEPTH
    int FM_FREE_THREADED
    fm_node** fm_children(fm_node*) nogil
    fm_entry* fm_data(fm_node*) nogil
    int fm_popcount(uint32_t) nogil
    uint32_t fm_bitpos(Py_hash_t, int) nogil
    int fm_chunk(Py_hash_t, int) nogil
    bint fm_prefix_eq(Py_hash_t, Py_hash_t, int) nogil
    int fm_eq(PyObject*, PyObject*) except -1
    void fm_node_incref(fm_node*) nogil
    Py_ssize_t fm_node_refcnt(fm_node*) nogil
    void fm_node_decref(fm_node*)
    fm_node* fm_node_alloc(int kind, Py_ssize_t nchild, Py_ssize_t ndata, uint64_t edit) except NULL
    uint64_t fm_next_edit() nogil
    PyObject* fm_load_published(PyObject**) nogil
    PyObject* fm_exchange_published(PyObject**, PyObject*) nogil
    void fm_readers_enter(Py_ssize_t*) nogil
    void fm_readers_exit(Py_ssize_t*) nogil
    Py_ssize_t fm_readers_load(Py_ssize_t*) nogil
    void fm_readers_add(Py_ssize_t*, Py_ssize_t) nogil
    uintptr_t fm_owner_load(uintptr_t*) nogil
    void fm_owner_store(uintptr_t*, uintptr_t) nogil
    void fm_pending_init(fm_pending*) nogil
    int fm_pending_push_obj(fm_pending*, PyObject*) except -1
    int fm_pending_push_node(fm_pending*, fm_node*) except -1
    void fm_pending_flush(fm_pending*)
    void fm_iter_init(fm_iter*, fm_node*) nogil
    fm_entry* fm_iter_next(fm_iter*) nogil
    object fm_item_tuple(PyObject** cache, PyObject* k, PyObject* v)
    void fm_set_gc_slots(PyTypeObject*, traverseproc, inquiry)

    void fm_incref "Py_INCREF"(PyObject*)
    void fm_decref "Py_DECREF"(PyObject*)
    void fm_xdecref "Py_XDECREF"(PyObject*)
    Py_hash_t fm_hash "PyObject_Hash"(object) except -1
    int Py_ReprEnter(object) except -1
    void Py_ReprLeave(object)


cdef enum:
    ST_UNCHANGED = 0
    ST_REPLACED = 1
    ST_ADDED = 2

cdef enum:
    OP_NONE = 0
    OP_INSERT = 1
    OP_REMOVE = 2
    OP_REPLACE = 3


# ---------------------------------------------------------------------------------------
# Persistent / transient trie operations.  A node is *editable* by an operation with edit
# id ``edit`` when ``edit != 0 and node.edit == edit``: it then has exactly one reference
# (its parent in the private tree) and is changed in place or "consumed" (its references
# move to the node returned).  Any other node is left untouched and copied.
# ---------------------------------------------------------------------------------------

cdef inline fm_entry* _find(fm_node* n, Py_hash_t h, PyObject* key) except? NULL:
    """The entry for key (hash h) in the tree rooted at n, or NULL (an error is set if
    __eq__ raised).  The caller must own a reference keeping the tree alive."""
    cdef int shift = 0
    cdef uint32_t bit
    cdef fm_entry* e
    cdef uint32_t i
    while n != NULL:
        if n.kind == FM_BITMAP:
            bit = fm_bitpos(h, shift)
            if n.datamap & bit:
                e = fm_data(n) + fm_popcount(n.datamap & (bit - 1))
                if e.hash == h and (e.key == key or fm_eq(e.key, key)):
                    return e
                return NULL
            if n.nodemap & bit:
                n = fm_children(n)[fm_popcount(n.nodemap & (bit - 1))]
                shift += 5
                continue
            return NULL
        e = fm_data(n)
        if e[0].hash != h:
            return NULL
        for i in range(n.ndata):
            if e[i].key == key or fm_eq(e[i].key, key):
                return e + i
        return NULL
    return NULL


cdef fm_node* _rebuild(fm_node* n, uint32_t datamap, uint32_t nodemap,
                       int dop, Py_ssize_t didx, fm_entry* dnew,
                       int cop, Py_ssize_t cidx, fm_node* cnew,
                       bint steal, uint64_t edit) except NULL:
    """A node like n with one entry inserted/removed and one child inserted/removed/
    replaced.  Inserted items are passed with their references.  With steal, n's
    references move to the result and n's memory is freed (removed/replaced items are the
    caller's to release); otherwise every kept item is increfed and n is left alone."""
    cdef Py_ssize_t nd = n.ndata, nc = n.nchild, i, j
    cdef Py_ssize_t new_nd = nd + (1 if dop == OP_INSERT else (-1 if dop == OP_REMOVE else 0))
    cdef Py_ssize_t new_nc = nc + (1 if cop == OP_INSERT else (-1 if cop == OP_REMOVE else 0))
    cdef fm_node* m = fm_node_alloc(n.kind, new_nc, new_nd, edit)
    cdef fm_node** sc = fm_children(n)
    cdef fm_node** dc = fm_children(m)
    cdef fm_entry* sd = fm_data(n)
    cdef fm_entry* dd = fm_data(m)
    m.datamap = datamap
    m.nodemap = nodemap
    # children
    j = 0
    for i in range(nc):
        if cop == OP_INSERT and i == cidx:
            dc[j] = cnew
            j += 1
        if cop == OP_REMOVE and i == cidx:
            continue
        if cop == OP_REPLACE and i == cidx:
            dc[j] = cnew
        else:
            dc[j] = sc[i]
            if not steal:
                fm_node_incref(sc[i])
        j += 1
    if cop == OP_INSERT and cidx == nc:
        dc[j] = cnew
    # entries
    j = 0
    for i in range(nd):
        if dop == OP_INSERT and i == didx:
            dd[j] = dnew[0]
            j += 1
        if dop == OP_REMOVE and i == didx:
            continue
        dd[j] = sd[i]
        if not steal:
            fm_incref(sd[i].key)
            fm_incref(sd[i].value)
        j += 1
    if dop == OP_INSERT and didx == nd:
        dd[j] = dnew[0]
    if steal:
        PyMem_Free(n)
    return m


cdef fm_node* _with_value(fm_node* n, Py_ssize_t idx, PyObject* value, bint steal,
                          uint64_t edit, fm_pending* pend) except NULL:
    cdef fm_node* m
    cdef fm_entry* d
    if steal:
        d = fm_data(n)
        fm_pending_push_obj(pend, d[idx].value)
        fm_incref(value)
        d[idx].value = value
        return n
    m = _rebuild(n, n.datamap, n.nodemap, OP_NONE, 0, NULL, OP_NONE, 0, NULL, False, edit)
    d = fm_data(m)
    fm_decref(d[idx].value)      # never the last reference: n still holds it
    fm_incref(value)
    d[idx].value = value
    return m


cdef fm_node* _make_pair(int shift, Py_hash_t h1, PyObject* k1, PyObject* v1,
                         Py_hash_t h2, PyObject* k2, PyObject* v2, uint64_t edit) except NULL:
    """A new subtree (at depth `shift`) holding both entries (takes new references)."""
    cdef fm_node* m
    cdef fm_node* child
    cdef fm_entry* d
    cdef uint32_t b1, b2
    if h1 == h2 or shift >= FM_HASH_BITS:
        m = fm_node_alloc(FM_COLLISION, 0, 2, edit)
        d = fm_data(m)
        d[0].hash = h1; d[0].key = k1; d[0].value = v1
        d[1].hash = h2; d[1].key = k2; d[1].value = v2
    else:
        b1 = fm_bitpos(h1, shift)
        b2 = fm_bitpos(h2, shift)
        if b1 == b2:
            child = _make_pair(shift + 5, h1, k1, v1, h2, k2, v2, edit)
            try:
                m = fm_node_alloc(FM_BITMAP, 1, 0, edit)
            except BaseException:
                fm_node_decref(child)
                raise
            m.nodemap = b1
            fm_children(m)[0] = child
            return m
        m = fm_node_alloc(FM_BITMAP, 0, 2, edit)
        m.datamap = b1 | b2
        d = fm_data(m)
        if b1 > b2:
            d += 1
        d[0].hash = h1; d[0].key = k1; d[0].value = v1
        d = fm_data(m) + (0 if b1 > b2 else 1)
        d[0].hash = h2; d[0].key = k2; d[0].value = v2
    fm_incref(k1); fm_incref(v1); fm_incref(k2); fm_incref(v2)
    return m


cdef fm_node* _wrap(fm_node* n, bint steal, int shift, Py_hash_t h, PyObject* key,
                    PyObject* value, uint64_t edit) except NULL:
    """Subtree at depth `shift` holding collision node n (whose hash differs from h in some
    chunk >= shift) and the new entry."""
    cdef Py_hash_t ch = fm_data(n)[0].hash
    cdef uint32_t bc = fm_bitpos(ch, shift), bn = fm_bitpos(h, shift)
    cdef fm_node* m
    cdef fm_node* child
    cdef fm_entry* d
    if bc == bn:
        child = _wrap(n, steal, shift + 5, h, key, value, edit)
        try:
            m = fm_node_alloc(FM_BITMAP, 1, 0, edit)
        except BaseException:
            fm_node_decref(child)
            raise
        m.nodemap = bc
        fm_children(m)[0] = child
        return m
    m = fm_node_alloc(FM_BITMAP, 1, 1, edit)
    m.nodemap = bc
    m.datamap = bn
    fm_children(m)[0] = n
    if not steal:
        fm_node_incref(n)
    d = fm_data(m)
    d[0].hash = h; d[0].key = key; d[0].value = value
    fm_incref(key); fm_incref(value)
    return m


cdef fm_node* _replace_child(fm_node* n, Py_ssize_t cidx, fm_node* old, bint old_consumed,
                             fm_node* new, bint steal, uint64_t edit,
                             fm_pending* pend) except NULL:
    if steal:
        if not old_consumed:
            fm_pending_push_node(pend, old)
        fm_children(n)[cidx] = new
        return n
    try:
        return _rebuild(n, n.datamap, n.nodemap, OP_NONE, 0, NULL, OP_REPLACE, cidx, new,
                        False, edit)
    except BaseException:
        fm_node_decref(new)
        raise


cdef fm_node* _assoc(fm_node* n, int shift, Py_hash_t h, PyObject* key, PyObject* value,
                     uint64_t edit, fm_pending* pend, int* status, PyObject** existing,
                     bint only_if_absent) except NULL:
    """Tree n with key -> value.  Returns n itself when nothing changed (status
    ST_UNCHANGED: the key holds `value` already, or only_if_absent and the key exists) or
    when n was edited in place.  *existing receives the previous value (borrowed) if any."""
    cdef bint steal = edit != 0 and n.edit == edit
    cdef bint child_steal
    cdef uint32_t bit
    cdef Py_ssize_t idx, cidx
    cdef uint32_t i
    cdef fm_entry* e
    cdef fm_entry ne
    cdef fm_node* child
    cdef fm_node* newchild
    cdef fm_node* m
    cdef PyObject* okey
    cdef PyObject* oval
    if n.kind == FM_COLLISION:
        e = fm_data(n)
        if e[0].hash != h:
            status[0] = ST_ADDED
            return _wrap(n, steal, shift, h, key, value, edit)
        for i in range(n.ndata):
            if e[i].key == key or fm_eq(e[i].key, key):
                existing[0] = e[i].value
                if only_if_absent or e[i].value == value:
                    status[0] = ST_UNCHANGED
                    return n
                status[0] = ST_REPLACED
                return _with_value(n, i, value, steal, edit, pend)
        ne.hash = h; ne.key = key; ne.value = value
        fm_incref(key); fm_incref(value)
        try:
            m = _rebuild(n, 0, 0, OP_INSERT, n.ndata, &ne, OP_NONE, 0, NULL, steal, edit)
        except BaseException:
            fm_decref(key); fm_decref(value)
            raise
        status[0] = ST_ADDED
        return m
    bit = fm_bitpos(h, shift)
    if n.datamap & bit:
        idx = fm_popcount(n.datamap & (bit - 1))
        e = fm_data(n) + idx
        if e.hash == h and (e.key == key or fm_eq(e.key, key)):
            existing[0] = e.value
            if only_if_absent or e.value == value:
                status[0] = ST_UNCHANGED
                return n
            status[0] = ST_REPLACED
            return _with_value(n, idx, value, steal, edit, pend)
        okey = e.key
        oval = e.value
        child = _make_pair(shift + 5, e.hash, okey, oval, h, key, value, edit)
        cidx = fm_popcount(n.nodemap & (bit - 1))
        try:
            m = _rebuild(n, n.datamap & ~bit, n.nodemap | bit, OP_REMOVE, idx, NULL,
                         OP_INSERT, cidx, child, steal, edit)
        except BaseException:
            fm_node_decref(child)
            raise
        if steal:
            fm_decref(okey)      # never the last references: the new child holds them
            fm_decref(oval)
        status[0] = ST_ADDED
        return m
    if n.nodemap & bit:
        cidx = fm_popcount(n.nodemap & (bit - 1))
        child = fm_children(n)[cidx]
        child_steal = edit != 0 and child.edit == edit
        newchild = _assoc(child, shift + 5, h, key, value, edit, pend, status, existing,
                          only_if_absent)
        if newchild == child:
            return n
        return _replace_child(n, cidx, child, child_steal, newchild, steal, edit, pend)
    idx = fm_popcount(n.datamap & (bit - 1))
    ne.hash = h; ne.key = key; ne.value = value
    fm_incref(key); fm_incref(value)
    try:
        m = _rebuild(n, n.datamap | bit, n.nodemap, OP_INSERT, idx, &ne, OP_NONE, 0, NULL,
                     steal, edit)
    except BaseException:
        fm_decref(key); fm_decref(value)
        raise
    status[0] = ST_ADDED
    return m


cdef fm_node* _assoc_root(fm_node* root, Py_hash_t h, PyObject* key, PyObject* value,
                          uint64_t edit, fm_pending* pend, int* status, PyObject** existing,
                          bint only_if_absent) except NULL:
    cdef fm_node* m
    cdef fm_entry* d
    if root == NULL:
        m = fm_node_alloc(FM_BITMAP, 0, 1, edit)
        m.datamap = fm_bitpos(h, 0)
        d = fm_data(m)
        d[0].hash = h; d[0].key = key; d[0].value = value
        fm_incref(key); fm_incref(value)
        status[0] = ST_ADDED
        return m
    return _assoc(root, 0, h, key, value, edit, pend, status, existing, only_if_absent)


cdef fm_node* _without(fm_node* n, int shift, Py_hash_t h, PyObject* key, uint64_t edit,
                       fm_pending* pend, int* found, PyObject** okey,
                       PyObject** oval) except? NULL:
    """Tree n without key.  Returns n when the key is absent (*found == 0), NULL (with no
    error set) when the subtree became empty.  *okey/*oval receive the removed entry
    (borrowed: kept alive by the old version or by pend until after the lock)."""
    cdef bint steal = edit != 0 and n.edit == edit
    cdef bint child_steal
    cdef uint32_t bit
    cdef Py_ssize_t idx, cidx
    cdef uint32_t i
    cdef fm_entry* e
    cdef fm_entry ne
    cdef fm_node* child
    cdef fm_node* newchild
    cdef fm_node* m
    if n.kind == FM_COLLISION:
        e = fm_data(n)
        if e[0].hash != h:
            return n
        for i in range(n.ndata):
            if e[i].key == key or fm_eq(e[i].key, key):
                found[0] = 1
                okey[0] = e[i].key
                oval[0] = e[i].value
                if steal:
                    fm_pending_push_obj(pend, e[i].key)
                    fm_pending_push_obj(pend, e[i].value)
                return _rebuild(n, 0, 0, OP_REMOVE, i, NULL, OP_NONE, 0, NULL, steal, edit)
        return n
    bit = fm_bitpos(h, shift)
    if n.datamap & bit:
        idx = fm_popcount(n.datamap & (bit - 1))
        e = fm_data(n) + idx
        if not (e.hash == h and (e.key == key or fm_eq(e.key, key))):
            return n
        found[0] = 1
        okey[0] = e.key
        oval[0] = e.value
        if steal:
            fm_pending_push_obj(pend, e.key)
            fm_pending_push_obj(pend, e.value)
        if n.ndata == 1 and n.nchild == 0:
            if steal:
                PyMem_Free(n)
            return NULL
        return _rebuild(n, n.datamap & ~bit, n.nodemap, OP_REMOVE, idx, NULL, OP_NONE, 0,
                        NULL, steal, edit)
    if n.nodemap & bit:
        cidx = fm_popcount(n.nodemap & (bit - 1))
        child = fm_children(n)[cidx]
        child_steal = edit != 0 and child.edit == edit
        newchild = _without(child, shift + 5, h, key, edit, pend, found, okey, oval)
        if not found[0]:
            return n
        if newchild == NULL:
            # only reachable for a non-canonical child; handled for robustness
            if steal and not child_steal:
                fm_pending_push_node(pend, child)
            if n.nchild == 1 and n.ndata == 0:
                if steal:
                    PyMem_Free(n)
                return NULL
            return _rebuild(n, n.datamap, n.nodemap & ~bit, OP_NONE, 0, NULL, OP_REMOVE,
                            cidx, NULL, steal, edit)
        if newchild.nchild == 0 and newchild.ndata == 1:
            # canonical form: a subtree holding one entry is inlined into its parent
            ne = fm_data(newchild)[0]
            fm_incref(ne.key); fm_incref(ne.value)
            if steal and not child_steal:
                fm_pending_push_node(pend, child)
            try:
                m = _rebuild(n, n.datamap | bit, n.nodemap & ~bit, OP_INSERT,
                             fm_popcount(n.datamap & (bit - 1)), &ne, OP_REMOVE, cidx, NULL,
                             steal, edit)
            finally:
                fm_node_decref(newchild)   # frees it; its entry is held by us (or m)
            return m
        return _replace_child(n, cidx, child, child_steal, newchild, steal, edit, pend)
    return n


cdef fm_entry* _first_entry(fm_node* n) noexcept:
    while n != NULL:
        if n.ndata:
            return fm_data(n)
        n = fm_children(n)[0]
    return NULL


# ---------------------------------------------------------------------------------------
# Snapshot
# ---------------------------------------------------------------------------------------

cdef PyObject* _NO_ITEM = NULL

@cython.final
@cython.freelist(32)
@cython.trashcan(True)
cdef class Snapshot:
    """An immutable, read-only mapping: one version of a SnapshotMap (or built directly
    from a mapping or an iterable of pairs).  It never changes and stays valid forever.

    Supports the Mapping API, ``==`` with any mapping, hashing (when all values are
    hashable) and pickling.  Iteration order is hash order, not insertion order.
    ``version`` is the map version it was published as (0 if it was built directly).
    """
    cdef fm_node* root
    cdef Py_ssize_t count
    cdef uint64_t _version
    cdef Py_hash_t _hash
    cdef bint _frozen
    cdef object _gc   # present so that the type takes part in cyclic GC (see _install_gc_slots)

    def __init__(self, mapping=(), /, **kwargs):
        cdef fm_pending pend
        cdef uint64_t edit
        if self._frozen:
            raise TypeError("Snapshot is immutable")
        self._frozen = True
        self._hash = -1
        fm_pending_init(&pend)
        items = _collect(mapping, kwargs)
        try:
            _build(&self.root, &self.count, items, fm_next_edit(), &pend)
        finally:
            fm_pending_flush(&pend)

    def __dealloc__(self):
        cdef fm_node* r = self.root
        self.root = NULL
        fm_node_decref(r)

    # -- reading -------------------------------------------------------------------------
    def __len__(self):
        return self.count

    def __getitem__(self, key):
        cdef fm_entry* e = _find(self.root, fm_hash(key), <PyObject*>key)
        if e == NULL:
            raise KeyError(key)
        return <object>e.value

    def __contains__(self, key):
        return _find(self.root, fm_hash(key), <PyObject*>key) != NULL

    def get(self, key, default=None):
        """Return the value for key if key is present, else default."""
        cdef fm_entry* e = _find(self.root, fm_hash(key), <PyObject*>key)
        if e == NULL:
            return default
        return <object>e.value

    def __iter__(self):
        return _make_iter(self, 0)

    def keys(self):
        """A set-like view of the keys (of this immutable snapshot)."""
        return _KeysView(self)

    def values(self):
        """A view of the values."""
        return _ValuesView(self)

    def items(self):
        """A set-like view of the (key, value) pairs."""
        return _ItemsView(self)

    @property
    def version(self):
        """The version number this snapshot was published as (0 if built directly)."""
        return self._version

    def to_dict(self):
        """A new dict with the same items."""
        cdef fm_iter it
        cdef fm_entry* e
        cdef dict d = {}
        fm_iter_init(&it, self.root)
        while True:
            e = fm_iter_next(&it)
            if e == NULL:
                break
            d[<object>e.key] = <object>e.value
        return d

    def copy(self):
        """Snapshots are immutable: returns self."""
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
        cdef Py_hash_t h = self._hash
        if h == -1:
            h = hash(frozenset(self.items()))
            if h == -1:
                h = -2
            self._hash = h
        return h

    def __repr__(self):
        return _repr("Snapshot", self)

    __class_getitem__ = classmethod(_GenericAlias)

    def _check(self, rehash=False):
        """Verify the trie invariants (tests); raises AssertionError, returns True."""
        _check_tree(self.root, self.count, rehash)
        return True


cdef Snapshot _snap_alloc():
    cdef Snapshot s = Snapshot.__new__(Snapshot)
    s._frozen = True
    s._hash = -1
    return s


cdef int _snap_eq(Snapshot a, object other) except -2:
    """1 equal, 0 different, -1 not comparable."""
    cdef Snapshot b
    cdef fm_iter it
    cdef fm_entry* e
    cdef fm_entry* f
    if isinstance(other, SnapshotMap):
        other = _load(<SnapshotMap>other)
    if isinstance(other, Snapshot):
        b = <Snapshot>other
        if a.root == b.root:
            return 1
        if a.count != b.count:
            return 0
        fm_iter_init(&it, a.root)
        while True:
            e = fm_iter_next(&it)
            if e == NULL:
                return 1
            f = _find(b.root, e.hash, e.key)
            if f == NULL:
                return 0
            if not (f.value == e.value or fm_eq(e.value, f.value)):
                return 0
    if isinstance(other, (dict, _abc.Mapping)):
        if len(other) != a.count:
            return 0
        for k, v in other.items():
            e = _find(a.root, fm_hash(k), <PyObject*>k)
            if e == NULL:
                return 0
            if not (e.value == <PyObject*>v or fm_eq(e.value, <PyObject*>v)):
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
        if (<Snapshot>s).count == 0:
            return f"{name}()"
        return f"{name}({{" + ", ".join([f"{k!r}: {v!r}" for k, v in _make_iter(s, 2)]) + "})"
    finally:
        Py_ReprLeave(obj)


# -- bulk building -------------------------------------------------------------------------

cdef list _collect(object mapping, dict kwargs):
    """(hash, key, value) triples of a mapping / iterable of pairs plus keyword arguments,
    computed without holding any lock (this runs the keys' __hash__)."""
    cdef list out = []
    cdef fm_iter it
    cdef fm_entry* e
    cdef Snapshot s
    if isinstance(mapping, SnapshotMap):
        mapping = _load(<SnapshotMap>mapping)
    if isinstance(mapping, Snapshot):
        s = <Snapshot>mapping
        fm_iter_init(&it, s.root)
        while True:
            e = fm_iter_next(&it)
            if e == NULL:
                break
            out.append((e.hash, <object>e.key, <object>e.value))
    elif isinstance(mapping, dict):
        for k, v in (<dict>mapping).items():
            out.append((fm_hash(k), k, v))
    elif hasattr(mapping, "keys"):
        for k in mapping.keys():
            out.append((fm_hash(k), k, mapping[k]))
    else:
        for i, pair in enumerate(mapping):
            try:
                k, v = pair
            except (TypeError, ValueError) as exc:
                raise type(exc)(
                    f"SnapshotMap update sequence element #{i} must be a (key, value) pair"
                ) from exc
            out.append((fm_hash(k), k, v))
    if kwargs:
        for k, v in kwargs.items():
            out.append((fm_hash(k), k, v))
    return out


cdef int _build(fm_node** rootp, Py_ssize_t* count, list items, uint64_t edit,
                fm_pending* pend) except -1:
    """Insert (hash, key, value) triples into the tree *rootp (an owned reference)
    transiently, with edit id `edit`.  *rootp is updated after every insert, so when an
    insert raises (a key's __eq__) it still holds a valid tree with the earlier items."""
    cdef int status
    cdef PyObject* existing
    cdef fm_node* root
    cdef fm_node* newroot
    cdef bint root_editable
    cdef tuple t
    for t in items:
        root = rootp[0]
        root_editable = root != NULL and root.edit == edit
        status = ST_UNCHANGED
        existing = NULL
        newroot = _assoc_root(root, <Py_hash_t>t[0], <PyObject*>t[1], <PyObject*>t[2], edit,
                              pend, &status, &existing, False)
        if newroot != root:
            if root != NULL and not root_editable:
                fm_pending_push_node(pend, root)
            rootp[0] = newroot
        if status == ST_ADDED:
            count[0] += 1
    return 0


# ---------------------------------------------------------------------------------------
# iterators and views
# ---------------------------------------------------------------------------------------

@cython.final
cdef class _SnapshotIterator:
    """Iterator over one immutable version (keys, values or items)."""
    cdef Snapshot _snap
    cdef fm_iter _it
    cdef Py_ssize_t _remaining
    cdef int _kind
    cdef PyObject* _result

    def __dealloc__(self):
        fm_xdecref(self._result)
        self._result = NULL

    def __iter__(self):
        return self

    def __next__(self):
        cdef fm_entry* e = fm_iter_next(&self._it)
        if e == NULL:
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
        return (iter, (list(self),))


cdef _SnapshotIterator _make_iter(Snapshot s, int kind):
    cdef _SnapshotIterator it = _SnapshotIterator.__new__(_SnapshotIterator)
    it._snap = s
    it._kind = kind
    it._remaining = s.count
    fm_iter_init(&it._it, s.root)
    it._it.want_values = kind != 0
    return it


class _KeysView(_abc.KeysView):
    """Keys of one immutable version (the snapshot current when the view was made)."""
    __slots__ = ()

    def __iter__(self):
        return _make_iter(self._mapping, 0)

    def __contains__(self, key):
        return key in self._mapping

    def __len__(self):
        return len(self._mapping)

    def __repr__(self):
        return f"snapshot_keys({list(self)!r})"


class _ValuesView(_abc.ValuesView):
    """Values of one immutable version."""
    __slots__ = ()

    def __iter__(self):
        return _make_iter(self._mapping, 1)

    def __len__(self):
        return len(self._mapping)

    def __repr__(self):
        return f"snapshot_values({list(self)!r})"


class _ItemsView(_abc.ItemsView):
    """(key, value) pairs of one immutable version."""
    __slots__ = ()

    def __iter__(self):
        return _make_iter(self._mapping, 2)

    def __contains__(self, item):
        try:
            key, value = item
        except (TypeError, ValueError):
            return False
        m = self._mapping
        v = m.get(key, _MISSING)
        return v is not _MISSING and (v is value or v == value)

    def __len__(self):
        return len(self._mapping)

    def __repr__(self):
        return f"snapshot_items({list(self)!r})"


_MISSING = object()


# ---------------------------------------------------------------------------------------
# SnapshotMap
# ---------------------------------------------------------------------------------------

cdef class SnapshotMap:
    """A mapping whose readers never take a lock.

    Every read (``m[k]``, ``get``, ``in``, ``len``, ``==``) and every iterator or view, for
    its whole life, works on exactly one published immutable version.  Writes are
    serialized by a lock and each publishes a new version (single-key writes copy only
    one trie path; bulk writes publish once).  ``snapshot()`` is O(1).

    Key semantics are dict's (hash once per operation, ``1 == 1.0 == True`` is one key,
    the first-inserted key object is kept, NaN found by identity, ``KeyError(key)``,
    ``TypeError`` for unhashable keys).  Iteration order is hash order, not insertion
    order; ``popitem()`` removes an arbitrary item.
    """
    cdef PyObject* _cur          # published Snapshot (owned reference); see module docstring
    cdef Py_ssize_t _readers     # readers inside the load window (free-threaded builds)
    cdef uintptr_t _owner        # thread id holding the writer lock, 0 if none
    cdef uint64_t _version       # last published version (writer lock)
    cdef fm_pending _retired     # Snapshots retired while readers were in the window
    cdef cython.pymutex _lock
    cdef object _gc              # present so that the type takes part in cyclic GC
    cdef object __weakref__

    def __cinit__(self, *args, **kwargs):
        fm_pending_init(&self._retired)
        fm_incref(<PyObject*>_EMPTY)
        self._cur = <PyObject*>_EMPTY

    def __init__(self, mapping=(), /, **kwargs):
        cdef Snapshot cur
        cdef Snapshot s
        cdef fm_pending pend
        if self._version == 0 and (<Snapshot>self._cur).count == 0:
            # fresh map: the initial contents are version 0
            s = Snapshot(mapping, **kwargs)
            if s.count:
                fm_pending_init(&pend)
                _acquire(self)
                try:
                    s._version = 0
                    _publish_locked(self, s, &pend)
                finally:
                    _release(self)
                    fm_pending_flush(&pend)
        else:
            self.update(mapping, **kwargs)

    def __dealloc__(self):
        cdef PyObject* cur = self._cur
        self._cur = NULL
        fm_xdecref(cur)
        fm_pending_flush(&self._retired)

    # -- reading (lock-free) --------------------------------------------------------------
    def __getitem__(self, key):
        cdef Py_hash_t h = fm_hash(key)
        cdef Snapshot s = _load(self)
        cdef fm_entry* e = _find(s.root, h, <PyObject*>key)
        if e == NULL:
            raise KeyError(key)
        return <object>e.value

    def __contains__(self, key):
        cdef Py_hash_t h = fm_hash(key)
        cdef Snapshot s = _load(self)
        return _find(s.root, h, <PyObject*>key) != NULL

    def get(self, key, default=None):
        """Return the value for key if key is present, else default."""
        cdef Py_hash_t h = fm_hash(key)
        cdef Snapshot s = _load(self)
        cdef fm_entry* e = _find(s.root, h, <PyObject*>key)
        if e == NULL:
            return default
        return <object>e.value

    def __len__(self):
        return _load(self).count

    def __iter__(self):
        """Iterate the keys of the version published when iter() was called."""
        return _make_iter(_load(self), 0)

    def keys(self):
        """A set-like view of the keys of the version current now (it never changes)."""
        return _KeysView(_load(self))

    def values(self):
        """A view of the values of the version current now."""
        return _ValuesView(_load(self))

    def items(self):
        """A set-like view of the items of the version current now."""
        return _ItemsView(_load(self))

    def snapshot(self):
        """The current version as an immutable Snapshot.  O(1): no copy is made."""
        return _load(self)

    @property
    def version(self):
        """A counter that increases with every publish (every write that changes the map).
        The initial contents are version 0."""
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

    def __reduce__(self):
        return (type(self), (_load(self).to_dict(),))

    def copy(self):
        """A new SnapshotMap with the same contents.  O(1): the trie is shared."""
        cdef SnapshotMap m = type(self)()
        cdef Snapshot s = _load(self)
        cdef fm_pending pend
        cdef Snapshot c
        if s.count:
            c = _snap_alloc()
            c.root = s.root
            fm_node_incref(s.root)
            c.count = s.count
            fm_pending_init(&pend)
            _acquire(m)
            try:
                _publish_locked(m, c, &pend)
            finally:
                _release(m)
                fm_pending_flush(&pend)
        return m

    def __copy__(self):
        return self.copy()

    __class_getitem__ = classmethod(_GenericAlias)

    # -- single-key writes ---------------------------------------------------------------
    def __setitem__(self, key, value):
        cdef Py_hash_t h = fm_hash(key)
        cdef PyObject* existing = NULL
        _write_assoc(self, h, key, value, False, &existing)

    def __delitem__(self, key):
        cdef Py_hash_t h = fm_hash(key)
        cdef object value = _write_without(self, h, key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)

    def pop(self, key, default=_MISSING):
        """Remove key and return its value; default (or KeyError) if absent."""
        cdef Py_hash_t h = fm_hash(key)
        value = _write_without(self, h, key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return value

    def popitem(self):
        """Remove and return an arbitrary (key, value) pair; KeyError if empty."""
        return _write_popitem(self)

    def setdefault(self, key, default=None):
        """Return the value for key, inserting default first if key is absent."""
        return self.load_or_store(key, default)[0]

    def update(self, other=(), /, **kwargs):
        """Add all items of a mapping or iterable of pairs (and keyword arguments),
        published as one version (readers see all of them or none)."""
        cdef list items = _collect(other, kwargs)
        cdef Snapshot s
        cdef Snapshot cur
        cdef fm_pending pend
        cdef fm_node* root
        cdef uint64_t edit
        if not items:
            return
        s = _snap_alloc()
        fm_pending_init(&pend)
        _acquire(self)
        try:
            cur = <Snapshot>self._cur
            root = cur.root
            if root != NULL:
                fm_node_incref(root)
            s.count = cur.count
            edit = fm_next_edit()
            try:
                _build(&root, &s.count, items, edit, &pend)
            except BaseException:
                if root != NULL:
                    fm_pending_push_node(&pend, root)   # the partial tree (or our extra ref)
                raise
            if root != cur.root:
                s.root = root
                self._version += 1
                s._version = self._version
                _publish_locked(self, s, &pend)
            elif root != NULL:
                fm_pending_push_node(&pend, root)       # our extra reference
        finally:
            _release(self)
            fm_pending_flush(&pend)

    def __ior__(self, other):
        self.update(other)
        return self

    def clear(self):
        """Remove every item: one O(1) atomic publish of an empty version."""
        cdef Snapshot s = _snap_alloc()
        cdef fm_pending pend
        fm_pending_init(&pend)
        _acquire(self)
        try:
            if (<Snapshot>self._cur).count:
                self._version += 1
                s._version = self._version
                _publish_locked(self, s, &pend)
        finally:
            _release(self)
            fm_pending_flush(&pend)

    def replace(self, mapping=(), /, **kwargs):
        """Atomically replace the whole content with mapping's; returns the previous
        version as a Snapshot.  The new version is built before the lock is taken; a
        Snapshot (or SnapshotMap) argument is adopted in O(1)."""
        cdef Snapshot src
        cdef Snapshot s = _snap_alloc()
        cdef Snapshot prev
        cdef fm_pending pend
        if isinstance(mapping, SnapshotMap):
            mapping = _load(<SnapshotMap>mapping)
        if isinstance(mapping, Snapshot) and not kwargs:
            src = <Snapshot>mapping
        else:
            src = Snapshot(mapping, **kwargs)
        s.root = src.root
        if s.root != NULL:
            fm_node_incref(s.root)
        s.count = src.count
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
        """A context manager for an atomic group of writes::

            with m.batch() as b:
                b["x"] = 1; del b["y"]; b.update(z=3)

        The block holds the map's writer lock (other writers wait; readers do not).  The
        batch's reads (b[k], get, in, len, iteration) see its own writes; the map's reads
        keep showing the published version.  On a clean exit all writes are published as
        one version; if the block raises, they are discarded.  Writing to the map itself
        (not through b) from inside the block raises RuntimeError.
        """
        cdef Batch b = Batch.__new__(Batch)
        b._map = self
        return b

    # -- Go sync.Map style per-key atomics -----------------------------------------------
    def load_or_store(self, key, value):
        """Return (existing value, True) if key is present; otherwise store value and
        return (value, False)."""
        cdef Py_hash_t h = fm_hash(key)
        cdef PyObject* existing = NULL
        r = _write_assoc(self, h, key, value, True, &existing)
        if r is _MISSING:
            return (value, False)
        return (r, True)

    def load_and_delete(self, key):
        """Delete key; return (its value, True), or (None, False) if it was absent."""
        cdef Py_hash_t h = fm_hash(key)
        value = _write_without(self, h, key, _MISSING)
        if value is _MISSING:
            return (None, False)
        return (value, True)

    def swap(self, key, value):
        """Store value; return (previous value, True), or (None, False) if key was
        absent."""
        cdef Py_hash_t h = fm_hash(key)
        cdef PyObject* existing = NULL
        r = _write_assoc(self, h, key, value, False, &existing)
        if r is _MISSING:
            return (None, False)
        return (r, True)

    def compare_and_swap(self, key, old, new):
        """If key is present and its value is old (identity, then ==), store new and
        return True; otherwise return False (an absent key is never swapped)."""
        cdef Py_hash_t h = fm_hash(key)
        return _write_cas(self, h, key, old, new, False)

    def compare_and_delete(self, key, old):
        """If key is present and its value is old (identity, then ==), delete it and
        return True; otherwise return False."""
        cdef Py_hash_t h = fm_hash(key)
        return _write_cas(self, h, key, old, None, True)

    # -- tests / debugging ---------------------------------------------------------------
    def _check(self, rehash=False):
        """Verify invariants of the published version (tests); raises AssertionError."""
        cdef Snapshot s = _load(self)
        assert s._version <= self._version or fm_owner_load(&self._owner) != 0, "version"
        _check_tree(s.root, s.count, rehash)
        return True

    def _debug_hold_readers(self, Py_ssize_t delta):
        """Tests only: pretend `delta` readers are inside the load window (negative to
        leave), so that writers retire old versions instead of releasing them."""
        fm_readers_add(&self._readers, delta)

    def _debug_retired(self):
        """Tests only: number of versions waiting on the retired list."""
        return self._retired.n


cdef Snapshot _EMPTY = _snap_alloc()


cdef inline Snapshot _load(SnapshotMap m):
    """Lock-free load of the published version, returned as an owned reference."""
    cdef Snapshot s
    fm_readers_enter(&m._readers)
    s = <Snapshot>fm_load_published(&m._cur)     # the cast-assignment takes the reference
    fm_readers_exit(&m._readers)
    return s


cdef int _acquire(SnapshotMap m) except -1:
    cdef uintptr_t me = <uintptr_t>PyThread_get_thread_ident()
    if fm_owner_load(&m._owner) == me:
        raise RuntimeError(
            "SnapshotMap: re-entrant write (this thread already holds the map's writer "
            "lock: a key's __hash__/__eq__ or a value's __eq__ wrote to the map during a "
            "write, or the map was written directly inside its own batch() block)")
    m._lock.acquire()
    fm_owner_store(&m._owner, me)
    return 0


cdef inline void _release(SnapshotMap m) noexcept:
    fm_owner_store(&m._owner, 0)
    m._lock.release()


cdef int _publish_locked(SnapshotMap m, Snapshot s, fm_pending* pend) except -1:
    """Publish s (writer lock held).  The previous version, and earlier retired ones when
    no reader is inside the load window, go to pend (released after the lock)."""
    cdef PyObject* old
    cdef Py_ssize_t i
    fm_incref(<PyObject*>s)
    old = fm_exchange_published(&m._cur, <PyObject*>s)
    if fm_readers_load(&m._readers) == 0:
        fm_pending_push_obj(pend, old)
        if m._retired.n:
            # hand the whole retired list over to pend
            while m._retired.n:
                _move_last(&m._retired, pend)
    else:
        fm_pending_push_obj(&m._retired, old)
    return 0


cdef extern from *:
    """
    static int fm_pending_move_last(fm_pending *src, fm_pending *dst) {
        void *item = src->items[src->n - 1];
        if (fm_pending_push(dst, item) < 0) return -1;
        src->n--;
        return 0;
    }
    """
    int fm_pending_move_last(fm_pending*, fm_pending*) except -1


cdef inline int _move_last(fm_pending* src, fm_pending* dst) except -1:
    return fm_pending_move_last(src, dst)


cdef object _write_assoc(SnapshotMap m, Py_hash_t h, object key, object value,
                         bint only_if_absent, PyObject** existing):
    """Single-key store.  Returns the previous value, or _MISSING if key was absent."""
    cdef Snapshot s = _snap_alloc()
    cdef Snapshot cur
    cdef fm_pending pend
    cdef int status = ST_UNCHANGED
    cdef fm_node* newroot
    cdef object result = _MISSING
    fm_pending_init(&pend)
    _acquire(m)
    try:
        cur = <Snapshot>m._cur
        newroot = _assoc_root(cur.root, h, <PyObject*>key, <PyObject*>value, 0, &pend,
                              &status, existing, only_if_absent)
        if existing[0] != NULL:
            result = <object>existing[0]
        if newroot != cur.root:
            s.root = newroot
            s.count = cur.count + (1 if status == ST_ADDED else 0)
            m._version += 1
            s._version = m._version
            _publish_locked(m, s, &pend)
    finally:
        _release(m)
        fm_pending_flush(&pend)
    return result


cdef object _write_without(SnapshotMap m, Py_hash_t h, object key, object missing):
    """Single-key delete.  Returns the removed value, or `missing`."""
    cdef Snapshot s = _snap_alloc()
    cdef Snapshot cur
    cdef fm_pending pend
    cdef int found = 0
    cdef PyObject* okey = NULL
    cdef PyObject* oval = NULL
    cdef fm_node* newroot
    cdef object result = missing
    fm_pending_init(&pend)
    _acquire(m)
    try:
        cur = <Snapshot>m._cur
        if cur.root != NULL:
            newroot = _without(cur.root, 0, h, <PyObject*>key, 0, &pend, &found, &okey, &oval)
            if found:
                result = <object>oval
                s.root = newroot
                s.count = cur.count - 1
                m._version += 1
                s._version = m._version
                _publish_locked(m, s, &pend)
    finally:
        _release(m)
        fm_pending_flush(&pend)
    return result


cdef object _write_popitem(SnapshotMap m):
    cdef Snapshot s = _snap_alloc()
    cdef Snapshot cur
    cdef fm_pending pend
    cdef int found = 0
    cdef PyObject* okey = NULL
    cdef PyObject* oval = NULL
    cdef fm_entry* e
    cdef object result = None
    fm_pending_init(&pend)
    _acquire(m)
    try:
        cur = <Snapshot>m._cur
        e = _first_entry(cur.root)
        if e != NULL:
            # identity match on the stored key: no user code runs
            s.root = _without(cur.root, 0, e.hash, e.key, 0, &pend, &found, &okey, &oval)
            result = (<object>okey, <object>oval)
            s.count = cur.count - 1
            m._version += 1
            s._version = m._version
            _publish_locked(m, s, &pend)
    finally:
        _release(m)
        fm_pending_flush(&pend)
    if result is None:
        raise KeyError("popitem(): SnapshotMap is empty")
    return result


cdef bint _write_cas(SnapshotMap m, Py_hash_t h, object key, object old, object new,
                     bint delete) except -1:
    cdef Snapshot s = _snap_alloc()
    cdef Snapshot cur
    cdef fm_pending pend
    cdef fm_entry* e
    cdef int status = ST_UNCHANGED
    cdef int found = 0
    cdef PyObject* existing = NULL
    cdef PyObject* okey = NULL
    cdef PyObject* oval = NULL
    cdef fm_node* newroot
    cdef bint ok = False
    fm_pending_init(&pend)
    _acquire(m)
    try:
        cur = <Snapshot>m._cur
        e = _find(cur.root, h, <PyObject*>key)
        if e != NULL:
            # the version cannot change while we hold the lock; cur keeps e alive
            ok = e.value == <PyObject*>old or fm_eq(e.value, <PyObject*>old)
        if ok:
            if delete:
                newroot = _without(cur.root, 0, h, <PyObject*>key, 0, &pend, &found, &okey,
                                   &oval)
                s.count = cur.count - 1
            else:
                newroot = _assoc(cur.root, 0, h, <PyObject*>key, <PyObject*>new, 0, &pend,
                                 &status, &existing, False)
                s.count = cur.count
            if newroot != cur.root:
                s.root = newroot
                m._version += 1
                s._version = m._version
                _publish_locked(m, s, &pend)
    finally:
        _release(m)
        fm_pending_flush(&pend)
    return ok


# ---------------------------------------------------------------------------------------
# Batch
# ---------------------------------------------------------------------------------------

@cython.final
@cython.no_gc_clear
cdef class Batch:
    """The builder of ``SnapshotMap.batch()``; usable only inside its ``with`` block, from
    the thread that entered it.  Supports the mutable mapping API; reads see the batch's
    own writes."""
    cdef SnapshotMap _map
    cdef Snapshot _base
    cdef fm_node* _root
    cdef Py_ssize_t _count
    cdef uint64_t _edit
    cdef fm_pending _pend
    cdef int _state            # 0 new, 1 active, 2 finished
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
            if self._root != NULL:
                fm_pending_push_node(&self._pend, self._root)
                self._root = NULL
            _release(self._map)
        elif self._root != NULL:
            fm_node_decref(self._root)
            self._root = NULL
        fm_pending_flush(&self._pend)

    def __enter__(self):
        if self._state != 0:
            raise RuntimeError("a SnapshotMap batch can be entered only once")
        _acquire(self._map)
        self._base = <Snapshot>self._map._cur
        self._root = self._base.root
        if self._root != NULL:
            fm_node_incref(self._root)
        self._count = self._base.count
        self._edit = fm_next_edit()
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
            if exc_type is None and self._root != self._base.root:
                s = _snap_alloc()
                s.root = self._root
                s.count = self._count
                self._root = NULL
                self._map._version += 1
                s._version = self._map._version
                _publish_locked(self._map, s, &self._pend)
            elif self._root != NULL:
                fm_pending_push_node(&self._pend, self._root)
                self._root = NULL
        finally:
            self._base = None
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
        cdef int status = ST_UNCHANGED
        cdef PyObject* existing = NULL
        cdef object result = _MISSING
        cdef fm_node* root
        cdef fm_node* newroot
        cdef bint root_editable
        self._enter_write()
        try:
            h = fm_hash(key)
            root = self._root
            root_editable = root != NULL and root.edit == self._edit
            newroot = _assoc_root(root, h, <PyObject*>key, <PyObject*>value, self._edit,
                                  &self._pend, &status, &existing, only_if_absent)
            if existing != NULL:
                result = <object>existing
            if newroot != root:
                if root != NULL and not root_editable:
                    fm_pending_push_node(&self._pend, root)
                self._root = newroot
            if status == ST_ADDED:
                self._count += 1
        finally:
            self._leave()
        return result

    cdef object _without(self, object key):
        cdef Py_hash_t h
        cdef int found = 0
        cdef PyObject* okey = NULL
        cdef PyObject* oval = NULL
        cdef fm_node* root
        cdef fm_node* newroot
        cdef bint root_editable
        cdef object result = _MISSING
        self._enter_write()
        try:
            h = fm_hash(key)
            root = self._root
            if root != NULL:
                root_editable = root.edit == self._edit
                newroot = _without(root, 0, h, <PyObject*>key, self._edit, &self._pend,
                                   &found, &okey, &oval)
                if found:
                    result = <object>oval
                    if newroot != root:
                        if not root_editable:
                            fm_pending_push_node(&self._pend, root)
                        self._root = newroot
                    self._count -= 1
        finally:
            self._leave()
        return result

    cdef Snapshot _freeze(self):
        """An immutable Snapshot of the batch's current state; later batch writes copy."""
        cdef Snapshot s = _snap_alloc()
        s.root = self._root
        if s.root != NULL:
            fm_node_incref(s.root)
        s.count = self._count
        s._version = self._base._version
        self._edit = fm_next_edit()
        return s

    # -- mapping API -----------------------------------------------------------------
    def __setitem__(self, key, value):
        self._assoc(key, value, False)

    def __delitem__(self, key):
        if self._without(key) is _MISSING:
            raise KeyError(key)

    def __getitem__(self, key):
        cdef fm_entry* e
        self._enter_read()
        try:
            e = _find(self._root, fm_hash(key), <PyObject*>key)
            if e == NULL:
                raise KeyError(key)
            return <object>e.value
        finally:
            self._leave()

    def get(self, key, default=None):
        cdef fm_entry* e
        self._enter_read()
        try:
            e = _find(self._root, fm_hash(key), <PyObject*>key)
            if e == NULL:
                return default
            return <object>e.value
        finally:
            self._leave()

    def __contains__(self, key):
        self._enter_read()
        try:
            return _find(self._root, fm_hash(key), <PyObject*>key) != NULL
        finally:
            self._leave()

    def __len__(self):
        self._enter_read()
        self._leave()
        return self._count

    def snapshot(self):
        """The batch's current state as an immutable Snapshot (not published)."""
        self._enter_read()
        self._leave()
        return self._freeze()

    def __iter__(self):
        return iter(self.snapshot())

    def keys(self):
        return self.snapshot().keys()

    def values(self):
        return self.snapshot().values()

    def items(self):
        return self.snapshot().items()

    def pop(self, key, default=_MISSING):
        value = self._without(key)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return value

    def popitem(self):
        cdef fm_entry* e
        self._enter_read()
        try:
            e = _first_entry(self._root)
            if e == NULL:
                raise KeyError("popitem(): batch is empty")
            key = <object>e.key
        finally:
            self._leave()
        return (key, self._without(key))

    def setdefault(self, key, default=None):
        r = self._assoc(key, default, True)
        return default if r is _MISSING else r

    def update(self, other=(), /, **kwargs):
        cdef list items
        self._enter_read()
        self._leave()
        items = _collect(other, kwargs)
        self._enter_write()
        try:
            _build(&self._root, &self._count, items, self._edit, &self._pend)
        finally:
            self._leave()

    def clear(self):
        self._enter_write()
        try:
            if self._root != NULL:
                fm_pending_push_node(&self._pend, self._root)
                self._root = NULL
            self._count = 0
        finally:
            self._leave()

    def __repr__(self):
        state = ("active" if self._state == 1 else "finished" if self._state == 2 else "new")
        return f"<SnapshotMap batch ({state}, {self._count} items)>"


# ---------------------------------------------------------------------------------------
# invariant checker
# ---------------------------------------------------------------------------------------

cdef Py_ssize_t _check_node(fm_node* n, int shift, Py_hash_t prefix, bint is_root,
                            bint rehash) except -1:
    cdef Py_ssize_t total = 0, sub
    cdef uint32_t i, j
    cdef int k
    cdef fm_entry* d = fm_data(n)
    cdef fm_node** c = fm_children(n)
    cdef uint32_t bits
    assert fm_node_refcnt(n) >= 1, "node refcount < 1"
    if n.kind == FM_COLLISION:
        assert not is_root, "collision node at the root"
        assert n.nchild == 0, "collision node with children"
        assert n.ndata >= 2, "collision node with fewer than 2 entries"
        for i in range(n.ndata):
            assert d[i].hash == d[0].hash, "collision node entries with different hashes"
            assert fm_prefix_eq(d[i].hash, prefix, shift), "collision entry under wrong prefix"
            for j in range(i):
                assert d[i].key != d[j].key, "duplicate key object in collision node"
            if rehash:
                assert hash(<object>d[i].key) == d[i].hash, "stored hash differs from hash(key)"
        return n.ndata
    assert n.kind == FM_BITMAP, "unknown node kind"
    assert (n.datamap & n.nodemap) == 0, "slot is both entry and child"
    assert fm_popcount(n.datamap) == <int>n.ndata, "datamap/ndata mismatch"
    assert fm_popcount(n.nodemap) == <int>n.nchild, "nodemap/nchild mismatch"
    assert n.ndata + n.nchild >= 1, "empty node"
    if not is_root:
        assert not (n.ndata == 1 and n.nchild == 0), "non-canonical single-entry subtree"
    i = 0
    bits = n.datamap
    for k in range(32):
        if bits & (<uint32_t>1 << k):
            assert fm_chunk(d[i].hash, shift) == k, "entry in the wrong slot"
            assert fm_prefix_eq(d[i].hash, prefix, shift), "entry under the wrong prefix"
            if rehash:
                assert hash(<object>d[i].key) == d[i].hash, "stored hash differs from hash(key)"
            i += 1
    i = 0
    bits = n.nodemap
    for k in range(32):
        if bits & (<uint32_t>1 << k):
            assert c[i] != NULL, "NULL child"
            sub = _check_node(c[i], shift + 5,
                              <Py_hash_t>(<size_t>prefix | (<size_t>k << shift)), False, rehash)
            assert sub >= 2, "child subtree with fewer than 2 entries"
            total += sub
            i += 1
    return total + n.ndata


cdef int _check_tree(fm_node* root, Py_ssize_t count, bint rehash) except -1:
    cdef Py_ssize_t n = 0
    if root == NULL:
        assert count == 0, "empty tree with nonzero count"
        return 0
    n = _check_node(root, 0, 0, True, rehash)
    assert n == count, f"count {count} != {n} entries in the trie"
    return 0


# ---------------------------------------------------------------------------------------
# cyclic GC support.  Trie nodes are not Python objects and can be shared by several
# versions, so a container may only report the references it owns alone: a Snapshot
# visits the keys and values of the nodes reachable from its root through nodes whose
# reference count is 1.  Entries in shared nodes are not visited (conservative: a cycle
# through them is collected once the sharing versions are gone).
# ---------------------------------------------------------------------------------------

cdef int _visit_node(fm_node* n, visitproc visit, void* arg) noexcept:
    cdef uint32_t i
    cdef int r
    cdef fm_entry* d
    cdef fm_node** c
    if n == NULL or fm_node_refcnt(n) != 1:
        return 0
    d = fm_data(n)
    for i in range(n.ndata):
        r = visit(d[i].key, arg)
        if r:
            return r
        r = visit(d[i].value, arg)
        if r:
            return r
    c = fm_children(n)
    for i in range(n.nchild):
        r = _visit_node(c[i], visit, arg)
        if r:
            return r
    return 0


cdef traverseproc _orig_snap_traverse
cdef inquiry _orig_snap_clear
cdef traverseproc _orig_map_traverse
cdef inquiry _orig_map_clear


cdef int _snap_traverse(PyObject* o, visitproc visit, void* arg) noexcept:
    cdef int r = _orig_snap_traverse(o, visit, arg)
    if r:
        return r
    return _visit_node((<Snapshot>o).root, visit, arg)


cdef int _snap_clear(PyObject* o) noexcept:
    cdef Snapshot s = <Snapshot>o
    cdef fm_node* r = s.root
    s.root = NULL
    s.count = 0
    fm_node_decref(r)
    return _orig_snap_clear(o)


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

_abc.Mapping.register(Snapshot)
_abc.MutableMapping.register(SnapshotMap)
_abc.MutableMapping.register(Batch)

FREE_THREADED_BUILD = bool(FM_FREE_THREADED)
