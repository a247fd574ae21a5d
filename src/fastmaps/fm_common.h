/* fm_common.h: what HashMap (_hashmap.pyx), SnapshotMap (_snapshot.pyx, fm_snapshot.h) and
   ObjectPool (_pool.pyx) share at C level, defined once:

     FM_FREE_THREADED     1 on free-threaded builds (Py_GIL_DISABLED), else 0
     FM_ASSERT(cond)      a C assert in FASTMAPS_DEBUG=1 builds, nothing otherwise
     fm_dbg_due(cost)     debug builds: whether to run the invariant checker after this
                          mutating call (below; always 0 otherwise)
     FM_STR_HASH(o)       an exact str's cached hash (-1: not computed yet)
     fm_hash_of(o)        hash(o), reading an exact str's cached hash as dict does
     fm_hash_is_builtin   whether hash(o) runs no user code (builtin atoms, tuples of them)
     fm_tag / fm_slot     the index slot encoding both maps use (below)
     fm_set_gc_slots      patch a type's tp_traverse / tp_clear at import
     fm_set_mapping_flag  flag a type as a mapping for the match statement
     FM_PREFETCH_W(p)     hint that *p is about to be written (a bulk loop issues it a
                          batch ahead, so the random index slots of one batch are
                          fetched from memory together rather than one after another)

   Index slots (HashMap's index and SnapshotMap's index pages alike) are int32:
     FM_SLOT_EMPTY (0)    never used: a probe stops here (zeroed memory is an empty index)
     FM_SLOT_DUMMY (-1)   a deleted slot: a probe steps over it
     tag | (pos + 1)      a live entry at log position pos; `posmask` (2^b - 1) is the
                          position field, fixed when the index is allocated, and the bits
                          from b to 30 hold the tag: high bits of a multiplicative mix of
                          the hash, so that every bit of the hash feeds it even when the
                          low bits chose the slot.
   A probe computes x = slot ^ fm_tag(h, posmask): for a live slot whose tag matches,
   1 <= x <= posmask and x - 1 is the position; DUMMY (bit 31 set) gives x > posmask;
   EMPTY gives x = the tag, so either EMPTY is tested first (HashMap's _probe) or the
   test is (x - 1) < posmask in unsigned arithmetic, which EMPTY, DUMMY and other tags
   all fail (SnapshotMap's fm_probe: one compare per slot). The entry is read only on a
   match: a miss rarely reads any entry, a hit reads only its own. */
#ifndef FM_COMMON_H
#define FM_COMMON_H

#include <Python.h>
#include <stdint.h>
#include <assert.h>

#ifdef Py_GIL_DISABLED
#define FM_FREE_THREADED 1
#else
#define FM_FREE_THREADED 0
#endif

/* setup.py defines FASTMAPS_DEBUG=1 (and leaves NDEBUG undefined) in debug builds */
#if defined(FASTMAPS_DEBUG) && FASTMAPS_DEBUG
#define FM_DEBUG 1
#define FM_ASSERT(cond) assert(cond)
#else
#define FM_DEBUG 0
#define FM_ASSERT(cond) ((void)0)
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FM_PREFETCH_W(p) __builtin_prefetch((const void *)(p), 1, 3)
#else
#define FM_PREFETCH_W(p) ((void)(p))
#endif

/* The checker schedule of debug builds. Every public mutating call of HashMap,
   SnapshotMap (and its batches) and ObjectPool ends with `if FM_DEBUG: <check>`, where the
   check asks fm_dbg_due(cost) whether to run the structure's full invariant checker;
   `cost` is the checker's work (log positions + index slots it reads, or the like):
     cost <= FM_DBG_ALWAYS   after every call;
     larger                  after one call in 2^k, 2^k the smallest power of two
                             >= cost / FM_DBG_BUDGET, so checking adds about
                             FM_DBG_BUDGET..2*FM_DBG_BUDGET units per call on average
                             (a full check after every call would make a test that
                             builds 10^6 keys one at a time quadratic). The calls are
                             picked by the top bits of a Weyl sequence of the thread's
                             call count: evenly spread, and structures written in
                             lockstep are all sampled;
     after fm_dbg_event()    always (HashMap calls it when a migration starts or ends).
   A call that raises is not followed by a check; the next one that is covers it.
   The counters are per thread (and per module: each module compiles its own copy). */
#define FM_DBG_ALWAYS 2048
#define FM_DBG_BUDGET 32
#if FM_DEBUG
#if defined(_MSC_VER) && !defined(__clang__)
#define FM_TLS __declspec(thread)
#else
#define FM_TLS _Thread_local
#endif
typedef struct { uint64_t calls, checks; int event; } fm_dbg_state_t;
static FM_TLS fm_dbg_state_t fm_dbg_state;
static inline int fm_dbg_due(Py_ssize_t cost) {
    fm_dbg_state_t *st = &fm_dbg_state;
    int k = 0;
    st->calls++;
    if (st->event || cost <= FM_DBG_ALWAYS) {
        st->event = 0;
        st->checks++;
        return 1;
    }
    while (((uint64_t)FM_DBG_BUDGET << k) < (uint64_t)cost) k++;
    /* the top k bits of calls * 2^64/phi are 0 for one call in 2^k */
    if (((st->calls * 0x9E3779B97F4A7C15ull) >> (64 - k)) == 0) {
        st->checks++;
        return 1;
    }
    return 0;
}
static inline void fm_dbg_event(void) { fm_dbg_state.event = 1; }
static inline uint64_t fm_dbg_checks(void) { return fm_dbg_state.checks; }
#else
static inline int fm_dbg_due(Py_ssize_t cost) { (void)cost; return 0; }
static inline void fm_dbg_event(void) {}
static inline uint64_t fm_dbg_checks(void) { return 0; }
#endif

#define FM_IS_STR(o) (Py_TYPE(o) == &PyUnicode_Type)
#if FM_FREE_THREADED
/* another thread may be caching this str's hash right now (-1 -> hash) */
#define FM_STR_HASH(o) _Py_atomic_load_ssize_relaxed(&((PyASCIIObject *)(o))->hash)
#else
#define FM_STR_HASH(o) (((PyASCIIObject *)(o))->hash)
#endif
#define FM_TYPE_IS_GC(o) PyType_HasFeature(Py_TYPE(o), Py_TPFLAGS_HAVE_GC)

/* hash(key); for an exact str, its cached hash is read directly (as dict does) */
static inline Py_hash_t fm_hash_of(PyObject *k) {
    if (FM_IS_STR(k)) {
        Py_hash_t h = FM_STR_HASH(k);
        if (h != -1) return h;
    }
    return PyObject_Hash(k);
}

/* The next item of a dict (borrowed references, as PyDict_Next) and its key's hash when
   that is known without running user code: the dict's stored hash where the C API gives
   it (3.10-3.12, GIL builds), else an exact str's cached hash or an exact int's hash;
   *h = -1 when only the key's __hash__ can tell.  On free-threaded builds the caller holds
   the dict's critical section, as for PyDict_Next. */
static inline int fm_dict_next(PyObject *d, Py_ssize_t *pos, PyObject **k, PyObject **v,
                               Py_hash_t *h) {
#if PY_VERSION_HEX < 0x030D0000 && !FM_FREE_THREADED
    return _PyDict_Next(d, pos, k, v, h);
#else
    if (!PyDict_Next(d, pos, k, v)) return 0;
    if (FM_IS_STR(*k)) *h = FM_STR_HASH(*k);
    else if (PyLong_CheckExact(*k)) *h = PyObject_Hash(*k);   /* never user code, never -1 */
    else *h = -1;
    return 1;
#endif
}

/* Whether hash(o) runs no code of a user's (so it cannot change any object): an exact
   str, int, float, complex, bytes, bool or None, or an exact tuple of such, nested at
   most FM_PURE_DEPTH deep. */
#define FM_PURE_DEPTH 4
static inline int fm_hash_is_builtin(PyObject *o, int depth) {
    PyTypeObject *t = Py_TYPE(o);
    Py_ssize_t i;
    if (t == &PyUnicode_Type || t == &PyLong_Type || t == &PyFloat_Type ||
            t == &PyBytes_Type || t == &PyBool_Type || t == &PyComplex_Type || o == Py_None)
        return 1;
    if (t != &PyTuple_Type || depth >= FM_PURE_DEPTH) return 0;
    for (i = 0; i < PyTuple_GET_SIZE(o); i++)
        if (!fm_hash_is_builtin(PyTuple_GET_ITEM(o, i), depth + 1)) return 0;
    return 1;
}

#define FM_SLOT_EMPTY 0
#define FM_SLOT_DUMMY (-1)

static inline uint32_t fm_tag(Py_hash_t h, uint32_t posmask) {
    return (uint32_t)(((uint64_t)h * 0x9E3779B97F4A7C15ull) >> 33) & ~posmask;
}
/* what a slot holds for the entry at log position pos, whose key hashes to h */
static inline int32_t fm_slot(Py_hash_t h, uint32_t posmask, Py_ssize_t pos) {
    return (int32_t)(fm_tag(h, posmask) | (uint32_t)(pos + 1));
}
/* the position field for an index whose slots hold positions up to max_pos: the
   smallest 2^b - 1 greater than max_pos (so pos + 1 fits), at most 2^31 - 1 */
static inline uint32_t fm_posmask_for(Py_ssize_t max_pos) {
    uint32_t m = 1;
    while (m <= (size_t)max_pos && m < 0x7FFFFFFFu) m = (m << 1) | 1;
    return m;
}

/* The GC slots of a Cython type are patched at import: each module saves the slot Cython
   generated (which visits / clears the type's object attributes) and installs its own,
   which visits / clears the C storage and then calls the saved one (NULL: keep that slot). */
static inline void fm_set_gc_slots(PyTypeObject *t, traverseproc tr, inquiry cl,
                                   traverseproc *old_tr, inquiry *old_cl) {
    if (old_tr) *old_tr = t->tp_traverse;
    if (old_cl) *old_cl = t->tp_clear;
    if (tr) t->tp_traverse = tr;
    if (cl) t->tp_clear = cl;
    PyType_Modified(t);
}

/* Install an iterator type's tp_iternext (Cython's PyTypeObject declaration has no field
   for it) */
static inline void fm_set_iternext(PyTypeObject *t, iternextfunc f) {
    t->tp_iternext = f;
    PyType_Modified(t);
}

/* Py_TPFLAGS_MAPPING: registering a static type with collections.abc.Mapping cannot set
   it, and the match statement reads it */
static inline void fm_set_mapping_flag(PyTypeObject *t) {
    t->tp_flags |= Py_TPFLAGS_MAPPING;
    PyType_Modified(t);
}

#endif /* FM_COMMON_H */
