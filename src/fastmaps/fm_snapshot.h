/* fm_snapshot.h: SnapshotMap's engine (the paged persistent log and index, versions, publication, bulk writes); the protocol is written down in _snapshot.pyx's docstring */
#ifndef FM_SNAPSHOT_H
#define FM_SNAPSHOT_H

#include <Python.h>
#include <stdint.h>
#include <string.h>
#include "fm_common.h"

#define FM_EBITS 5                    /* log entries per leaf page: 32 */
#define FM_ECAP (1 << FM_EBITS)
#define FM_IBITS 8                    /* index slots per leaf page: 256 */
#define FM_ICAP (1 << FM_IBITS)
#define FM_FBITS 5                    /* children per inner node: 32 */
#define FM_FAN (1 << FM_FBITS)
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

/* The names are HashMap's (_hashmap.pyx) where the concept is the same. */
typedef struct fm_ver {
    fm_node *log;          /* entry log tree (NULL: no page) */
    fm_node *idx;          /* index tree: during a migration the new one (NULL: no
                              index, live == 0) */
    Py_ssize_t n;          /* log end: positions [0, n) are in use (live, holes, or
                              the gap) */
    Py_ssize_t live;       /* live entries: len() */
    Py_ssize_t fill;       /* slots of idx that are not EMPTY */
    size_t mask;           /* slots of idx - 1 */
    uint32_t idmask;       /* idx's position field: slot = tag | (pos + 1), pos + 1 <=
                              idmask (fm_common.h) */
    int log_depth, idx_depth;   /* inner levels above the leaf pages */
    /* incremental migration (see "Migration" in the module docstring); old_idx == NULL:
       none running.  Log positions [0, mig_w): compacted, indexed in the new index
       (idx); [mig_w, mig_r): the gap, holes only, indexed nowhere; [mig_r, old_end):
       not yet visited, live ones indexed in the old index (old_idx); [old_end, n):
       appended during the migration, indexed in the new index.  The cursor mig_r
       visits those too (to re-point their slots), so mig_w <= mig_r <= n and
       old_end <= n, while mig_r may pass old_end. */
    fm_node *old_idx;
    size_t old_mask;
    uint32_t old_idmask;
    int old_depth;
    Py_ssize_t mig_w, mig_r, old_end;
} fm_ver;

static inline fm_node **fm_kids(fm_node *n) { return (fm_node **)(n + 1); }
static inline fm_entry *fm_ents(fm_node *n) { return (fm_entry *)(n + 1); }
static inline int32_t *fm_slots(fm_node *n) { return (int32_t *)(n + 1); }
/* Index slots are fm_common.h's, as HashMap's: FM_SLOT_EMPTY (0), FM_SLOT_DUMMY (-1),
   or fm_slot(h, idmask, pos) = fm_tag(h, idmask) | (pos + 1) for the live record at log
   position pos (int hashes are the identity, so their high bits are often zero and
   their low bits chose the slot: the tag mixes them).  A probe computes
   x = (slot ^ fm_tag(h, idmask)) - 1: x < idmask exactly when the slot is live and its
   tag matches, and x is then the position (EMPTY, DUMMY and other tags give
   x >= idmask: see fm_probe).  The record is read only then: a miss usually reads no record and a hit
   only its own, with no second array to read (the tag travels in the slot).  Index
   pages start zero-filled: all EMPTY. */

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
#endif


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
    memset((void *)(n + 1), 0, sz);     /* no children, no records, index slots EMPTY */
    return n;
}
static void fm_node_free(fm_node *n);
static inline void fm_node_decref(fm_node *n) {
    FM_ASSERT(n == NULL || fm_node_refcnt(n) > 0);
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
    fm_node *n = v->log;
    int d;
    FM_ASSERT(p >= 0 && n != NULL);
    for (d = v->log_depth; d > 0; d--) {
        FM_ASSERT(n->kind == FM_INNER);
        n = fm_kids(n)[((size_t)p >> (FM_EBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
    }
    FM_ASSERT(n != NULL && n->kind == FM_ELEAF && ((size_t)p & (FM_ECAP - 1)) < n->cap);
    return fm_ents(n) + ((size_t)p & (FM_ECAP - 1));
}
FM_HOT int32_t *fm_islot_at(fm_node *n, int depth, size_t i) {
    int d;
    for (d = depth; d > 0; d--) {
        FM_ASSERT(n->kind == FM_INNER);
        n = fm_kids(n)[(i >> (FM_IBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
    }
    FM_ASSERT(n->kind == FM_ILEAF && (i & (FM_ICAP - 1)) < n->cap);
    return fm_slots(n) + (i & (FM_ICAP - 1));
}
FM_HOT int32_t *fm_slot_at(const fm_ver *v, size_t i) {
    return fm_islot_at(v->idx, v->idx_depth, i);
}
/* The leaf page of an index holding slot i. */
FM_HOT fm_node *fm_ileaf_at(fm_node *n, int depth, size_t i) {
    int d;
    for (d = depth; d > 0; d--)
        n = fm_kids(n)[(i >> (FM_IBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
    return n;
}
/* The migration cursors' order (fm_ver): mig_w <= mig_r <= n and old_end <= n during
   a migration, all 0 otherwise; live <= n; fill <= slots. */
#define FM_ASSERT_VER(v) FM_ASSERT((v)->live >= 0 && (v)->live <= (v)->n && \
    (v)->fill >= 0 && (size_t)(v)->fill <= ((v)->idx != NULL ? (v)->mask + 1 : 0) && \
    ((v)->old_idx == NULL \
        ? ((v)->mig_w == 0 && (v)->mig_r == 0 && (v)->old_end == 0) \
        : (0 <= (v)->mig_w && (v)->mig_w <= (v)->mig_r && (v)->mig_r <= (v)->n && \
           (v)->old_end <= (v)->n)))
/* During a migration: is log position p indexed by the old index? */
static inline int fm_in_old(const fm_ver *v, Py_ssize_t p) {
    return v->old_idx != NULL && p >= v->mig_r && p < v->old_end;
}
/* The old-index half of fm_probe (the key is not in the new index).  Slots of the old
   index pointing outside [mig_r, old_end) are stale (their records moved) and are skipped
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
    size_t mask = v->old_mask, perturb = (size_t)h, i = (size_t)h & mask;
    uint32_t idmask = v->old_idmask, tag = fm_tag(h, idmask), x;
    Py_ssize_t p;
    int32_t ix;
    FM_ASSERT(v->old_idx != NULL);
    for (;;) {
        ix = *fm_islot_at(v->old_idx, v->old_depth, i);
        x = ((uint32_t)ix ^ tag) - 1u;          /* see fm_probe */
        if (x < idmask) {
            p = (Py_ssize_t)x;
            if (p >= v->mig_r && p < v->old_end) {
                fm_entry *e = fm_entry_at(v, p);
                FM_ASSERT(ix > 0 && e->key != NULL);
                if (e->key == key) goto found;
                if (e->hash == h) {
                    int r = PyObject_RichCompareBool(e->key, key, Py_EQ);
                    if (r < 0) return -1;
                    if (r > 0) goto found;
                }
            }
        } else if (ix == FM_SLOT_EMPTY) return 0;
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
        continue;
    found:
        *pos = p;
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
    Py_ssize_t fs = -1, p;
    uint32_t idmask, tag, x;
    int32_t ix;
    if (v->idx == NULL) { if (freeslot) *freeslot = -1; return 0; }
    mask = v->mask; perturb = (size_t)h; i = (size_t)h & mask;
    idmask = v->idmask; tag = fm_tag(h, idmask);
    for (;;) {
        /* the slot's tag first: a live slot whose tag differs is skipped without
           reading its log record (a miss usually reads no record at all).  With
           x = (slot ^ tag) - 1, x < idmask exactly when the slot is live and its tag
           matches, and x is then the position: a live slot holds tag' | (pos + 1)
           with 1 <= pos + 1 <= idmask, so x >= idmask when tag' != tag; DUMMY gives
           slot ^ tag >= 2^31 > idmask; EMPTY gives slot ^ tag = tag, whose bits are
           all above idmask (x >= idmask) or none (x wraps to 2^32 - 1).  So EMPTY
           need not be tested before the tag (one compare less on a hit). */
        ix = *fm_islot_at(v->idx, v->idx_depth, i);
        x = ((uint32_t)ix ^ tag) - 1u;
        if (x < idmask) {
            fm_entry *e;
            p = (Py_ssize_t)x;
            FM_ASSERT(ix > 0 && p < v->n && !fm_in_old(v, p));
            e = fm_entry_at(v, p);
            FM_ASSERT(e->key != NULL);
            if (e->key == key) goto found;
            if (e->hash == h) {
                int r = PyObject_RichCompareBool(e->key, key, Py_EQ);
                if (r < 0) return -1;
                if (r > 0) goto found;
            }
        } else if (ix == FM_SLOT_EMPTY) {
            if (freeslot) *freeslot = fs >= 0 ? fs : (Py_ssize_t)i;
            if (v->old_idx != NULL) return fm_probe_old(v, h, key, pos, slot);
            return 0;
        } else if (ix == FM_SLOT_DUMMY && fs < 0) fs = (Py_ssize_t)i;
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
        continue;
    found:
        *pos = p;
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
static Py_ssize_t fm_islot_of(fm_node *n, int depth, size_t mask, uint32_t idmask,
                              Py_hash_t h, Py_ssize_t pos) {
    size_t perturb = (size_t)h, i = (size_t)h & mask;
    int32_t want = fm_slot(h, idmask, pos);
    FM_ASSERT(pos >= 0 && (size_t)pos < idmask);
    for (;;) {
        int32_t ix = *fm_islot_at(n, depth, i);
        if (ix == want) return (Py_ssize_t)i;
        if (ix == FM_SLOT_EMPTY) return -1;
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
    }
}
/* The slot holding live log position pos, encoded as fm_probe reports it. */
static Py_ssize_t fm_slot_of(const fm_ver *v, Py_hash_t h, Py_ssize_t pos) {
    if (fm_in_old(v, pos))
        return -2 - fm_islot_of(v->old_idx, v->old_depth, v->old_mask, v->old_idmask, h, pos);
    return fm_islot_of(v->idx, v->idx_depth, v->mask, v->idmask, h, pos);
}
/* First EMPTY or DUMMY slot of the (new) index on h's probe sequence (the key is known
   to be absent from it). */
static Py_ssize_t fm_free_slot(const fm_ver *v, Py_hash_t h) {
    size_t mask = v->mask, perturb = (size_t)h, i = (size_t)h & mask;
    for (;;) {
        if (*fm_slot_at(v, i) <= 0) return (Py_ssize_t)i;     /* EMPTY or DUMMY */
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
    if (dst->log) fm_node_incref(dst->log);
    if (dst->idx) fm_node_incref(dst->idx);
    if (dst->old_idx) fm_node_incref(dst->old_idx);
}
/* Hand v's pages to pend (released after the lock) and make v empty. */
static int fm_ver_release(fm_ver *v, fm_pending *pend) {
    if (fm_pending_reserve(pend, 3) < 0) return -1;
    fm_pending_push_node(pend, v->log);
    fm_pending_push_node(pend, v->idx);
    fm_pending_push_node(pend, v->old_idx);
    fm_ver_init(v);
    return 0;
}
static void fm_sf_release(fm_node *n);
/* Drop v's pages now (may run user code: only outside the lock).  An old index goes
   through the incremental teardown (below): a version that dies during a migration
   may hold the last reference to it (always so on free-threaded builds, where the
   write that ends a migration changes a copy, never the published version). */
static void fm_ver_clear(fm_ver *v) {
    fm_node *e = v->log, *i = v->idx, *o = v->old_idx;
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
    if (v->log == NULL) return 0;
    if (v->log_depth == 0) return v->log->cap;
    return (Py_ssize_t)FM_ECAP << (FM_FBITS * v->log_depth);
}
/* The record at log position p, writable; creates pages and grows the tree as needed.
   The version's content is unchanged (only copied/created pages).  NULL on error. */
static Py_NO_INLINE fm_entry *fm_entry_writable_slow(fm_ver *v, Py_ssize_t p, fm_pending *pend);
FM_HOT fm_entry *fm_entry_writable(fm_ver *v, Py_ssize_t p, fm_pending *pend) {
    /* inlined common case: the page exists and its path is already private */
    if (p < fm_ecapacity(v)) {
        fm_node *n = v->log;
        int d;
        for (d = v->log_depth; ; d--) {
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
        if (v->log == NULL || (v->log_depth == 0 && v->log->cap < FM_ECAP)) {
            uint32_t cap = v->log ? v->log->cap : 1;
            while ((Py_ssize_t)cap <= p && cap < FM_ECAP) cap <<= 1;
            if (v->log == NULL) {
                n = fm_node_new(FM_ELEAF, cap);
                if (n == NULL) return NULL;
            } else if (fm_node_refcnt(v->log) == 1) {
                n = (fm_node *)PyMem_Realloc(v->log, sizeof(fm_node) + fm_payload(FM_ELEAF, cap));
                if (n == NULL) { PyErr_NoMemory(); return NULL; }
                memset(fm_ents(n) + n->cap, 0, (cap - n->cap) * sizeof(fm_entry));
                n->cap = (uint16_t)cap;
            } else {
                if (fm_pending_reserve(pend, 1) < 0) return NULL;
                n = fm_node_clone(v->log, cap);
                if (n == NULL) return NULL;
                fm_pending_push_node(pend, v->log);
            }
            v->log = n;
        } else {
            n = fm_node_new(FM_INNER, FM_FAN);
            if (n == NULL) return NULL;
            fm_kids(n)[0] = v->log;       /* the version's reference moves down */
            n->live = v->log->live;
            v->log = n;
            v->log_depth++;
        }
    }
    slot = &v->log;
    for (d = v->log_depth; ; d--) {
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
    if (slot >= 0) return fm_islot_writable(&v->idx, v->idx_depth, (size_t)slot, pend);
    return fm_islot_writable(&v->old_idx, v->old_depth, (size_t)(-2 - slot), pend);
}

/* ---- writing records and slots (the caller made them writable) ---- */
/* Point slot *s of the (new) index at log position pos, whose key hashes to h: a free
   slot (EMPTY or DUMMY) for a record it does not index yet, or the record's own slot
   when a migration moves it. */
FM_HOT void fm_index_put(fm_ver *v, int32_t *s, Py_hash_t h, Py_ssize_t pos) {
    FM_ASSERT(pos >= 0 && pos <= v->n && (size_t)pos < v->idmask);
    if (*s == FM_SLOT_EMPTY) v->fill++;
    *s = fm_slot(h, v->idmask, pos);
}
/* Append the record {h, key, value} at log position v->n: e is that position's
   writable record (a hole), s the free slot of the (new) index it goes to.  The
   record takes the caller's references to key and value; the log tree's live counts
   on its path are the caller's (fm_live_add, at once or for a page of appends). */
FM_HOT void fm_append(fm_ver *v, fm_entry *e, int32_t *s, Py_hash_t h, PyObject *key,
                      PyObject *value) {
    Py_ssize_t pos = v->n;
    FM_ASSERT(e->key == NULL && e->value == NULL);
    FM_ASSERT(*s == FM_SLOT_EMPTY || *s == FM_SLOT_DUMMY);
    e->hash = h; e->key = key; e->value = value;
    fm_index_put(v, s, h, pos);
    v->n = pos + 1;
    v->live++;
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
    fm_node **slot = &v->log, *n;
    int d;
    if (v->log_depth == 0) return 0;
    for (d = v->log_depth; d > 0; d--) {
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
    fm_node *n = v->log;
    int d;
    for (d = v->log_depth; ; d--) {
        FM_ASSERT(fm_node_refcnt(n) == 1 && n->kind == (d ? FM_INNER : FM_ELEAF));
        FM_ASSERT(delta >= 0 || n->live >= (uint32_t)-delta);
        n->live += (uint32_t)delta;
        if (d == 0) return;
        n = fm_kids(n)[((size_t)p >> (FM_EBITS + FM_FBITS * (d - 1))) & (FM_FAN - 1)];
    }
}
/* The position of the last live record (v->live > 0): one descent guided by the live
   counts, at most FM_FAN children or records read per level. */
static Py_ssize_t fm_last_live(const fm_ver *v) {
    fm_node *n = v->log;
    size_t base = 0;
    int d, c;
    for (d = v->log_depth; d > 0; d--) {
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
    if (v->n > 0 && fm_entry_at(v, v->n - 1)->key == NULL)
        v->n = (v->log != NULL && v->log->live > 0) ? fm_last_live(v) + 1 : 0;
    if (v->old_idx != NULL) {
        if (v->mig_r > v->n) v->mig_r = v->n;
        if (v->mig_w > v->mig_r) v->mig_w = v->mig_r;
        if (v->old_end > v->n) v->old_end = v->n;
    }
    FM_ASSERT_VER(v);
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
    while (v->old_idx != NULL) {
        Py_ssize_t r = v->mig_r, w = v->mig_w, si;
        fm_entry *e, *src, *dst = NULL;
        int32_t *s;
        if (r >= v->n || (r >= v->old_end && w == r)) {
            /* done: [w, n) is the gap (or empty) */
            fm_sf_release(v->old_idx);        /* torn down over later writes */
            if (w < r) v->n = w;
            v->old_idx = NULL; v->old_mask = 0; v->old_depth = 0; v->old_idmask = 0;
            v->mig_w = v->mig_r = v->old_end = 0;
            fm_trim(v);
            return 0;
        }
        if (budget-- <= 0) return 0;
        FM_ASSERT(0 <= w && w <= r && r < v->n && v->old_end <= v->n);
        e = fm_entry_at(v, r);
        if (e->key != NULL) {
            if (w < r) {
                dst = fm_entry_writable(v, w, pend);
                if (dst == NULL) return -1;
                src = fm_entry_writable(v, r, pend);
                if (src == NULL) return -1;
            } else src = e;
            if (r < v->old_end) si = fm_free_slot(v, src->hash);
            else {
                si = fm_islot_of(v->idx, v->idx_depth, v->mask, v->idmask, src->hash, r);
                if (si < 0) {
                    PyErr_SetString(PyExc_SystemError, "SnapshotMap: migration lost a record");
                    return -1;
                }
            }
            s = fm_islot_writable(&v->idx, v->idx_depth, (size_t)si, pend);
            if (s == NULL) return -1;
            if (dst != NULL) {
                *dst = *src;
                src->key = NULL; src->value = NULL; src->hash = 0;
                fm_live_add(v, w, 1);
                fm_live_add(v, r, -1);
            }
            fm_index_put(v, s, dst != NULL ? dst->hash : src->hash, w);
            v->mig_w = w + 1;
        }
        v->mig_r = r + 1;
        if ((v->mig_r & (FM_ECAP - 1)) == 0 && v->mig_r - FM_ECAP >= v->mig_w &&
                fm_drop_page(v, v->mig_r - FM_ECAP, pend) < 0)
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
    Py_ssize_t during = (v->n + 2) / (fm_t_step - 1) + 2;
    size_t a = fm_nslots_for(v->live + during + 1, 3);
    if (grow) {
        size_t b = fm_nslots_for(v->live + 1, 6);
        if (b > a) a = b;
    }
    return a;
}
/* The position field (idmask, fm_common.h) of a new index of nslots slots for a log
   of n positions: room for positions up to max(2 * nslots - 2, 2 * n + 62, 254), so
   idmask + 1 >= max(2 * nslots, 2 * n + 64, 256).  At rest the log holds at most
   2 * live + 32 positions (compaction starts beyond) and live <= 2/3 of the slots; a
   migration appends at most one position per write it lasts, and fm_nslots_mig sizes
   its index for those writes too.  So the positions never reach the field's limit
   (fm_insert's safety valve would finish the migration if they did), and the rest of
   the 31 bits carry the tag: 9 bits at 10^6 entries, more in smaller maps. */
static inline uint32_t fm_idmask_for(size_t nslots, Py_ssize_t n) {
    Py_ssize_t max_pos = (Py_ssize_t)nslots * 2 - 2;
    if (n * 2 + 62 > max_pos) max_pos = n * 2 + 62;
    if (max_pos < 254) max_pos = 254;
    return fm_posmask_for(max_pos);
}
/* Start a migration to a new index of nslots slots (no migration running).  Logs of
   at most fm_t_sync_below positions are migrated at once. */
static int fm_mig_start(fm_ver *v, size_t nslots, fm_pending *pend) {
    fm_node *root;
    int depth;
    if (fm_index_new(nslots, &root, &depth) < 0) return -1;
    if (v->idx == NULL) {             /* empty version: nothing to migrate */
        v->idx = root; v->idx_depth = depth; v->mask = nslots - 1; v->fill = 0;
        v->idmask = fm_idmask_for(nslots, v->n);
        return 0;
    }
    v->old_idx = v->idx; v->old_depth = v->idx_depth; v->old_mask = v->mask;
    v->old_idmask = v->idmask;
    v->idx = root; v->idx_depth = depth; v->mask = nslots - 1; v->fill = 0;
    v->idmask = fm_idmask_for(nslots, v->n);
    v->mig_w = v->mig_r = 0; v->old_end = v->n;
    if (v->n <= fm_t_sync_below) return fm_migrate(v, PY_SSIZE_T_MAX, pend);
    return 0;
}
/* A whole rebuild now, compacting the log (bulk operations only: their cost is
   proportional to their own size, see fm_reserve). */
static int fm_rebuild(fm_ver *v, size_t nslots, fm_pending *pend) {
    if (v->old_idx != NULL && fm_migrate(v, PY_SSIZE_T_MAX, pend) < 0) return -1;
    if (fm_mig_start(v, nslots, pend) < 0) return -1;
    return fm_migrate(v, PY_SSIZE_T_MAX, pend);
}
static inline int fm_needs_compaction(const fm_ver *v) {
    return v->n - v->live > 32 && v->n - v->live > v->live;
}
/* After every write: advance the running migration; start a compacting one when holes
   outnumber live records.  An optimisation only: errors are swallowed (retried by the
   next write), v stays consistent. */
static void fm_maintain(fm_ver *v, fm_pending *pend) {
    FM_ASSERT_VER(v);
    fm_sf_run();
    if (v->old_idx != NULL && fm_migrate(v, fm_t_step, pend) < 0) { PyErr_Clear(); return; }
    if (v->old_idx == NULL && v->live > 0 && fm_needs_compaction(v) &&
            fm_mig_start(v, fm_nslots_mig(v, 0), pend) < 0)
        PyErr_Clear();
    FM_ASSERT_VER(v);
}
/* Make room for k more inserts (bulk operations).  A rebuild here costs O(live + k),
   so it is done only when k is at least half the live count; smaller bulk writes
   insert one by one and migrate incrementally like single-key writes. */
static int fm_reserve(fm_ver *v, Py_ssize_t k, fm_pending *pend) {
    if (v->idx != NULL && (size_t)(v->fill + k) * 3 <= (v->mask + 1) * 2) return 0;
    if (v->idx != NULL && k * 2 < v->live) return 0;
    return fm_rebuild(v, fm_nslots_for(v->live + k, 3), pend);
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
/* Append key (absent; freeslot from fm_probe) at the end of the log.  The record goes
   to position n, whose slot holds n + 1: the index's position field must exceed n. */
static int fm_insert(fm_ver *v, Py_hash_t h, PyObject *key, PyObject *value,
                     Py_ssize_t freeslot, fm_pending *pend) {
    fm_entry *e;
    int32_t *s;
    if (v->n >= FM_MAX_LEN) {
        PyErr_SetString(PyExc_OverflowError, "SnapshotMap: too many entries");
        return -1;
    }
    if (v->idx == NULL || freeslot < 0 ||
            (*fm_slot_at(v, (size_t)freeslot) == FM_SLOT_EMPTY &&
             (size_t)(v->fill + 1) * 3 > (v->mask + 1) * 2) ||
            (size_t)v->n >= v->idmask) {
        int tripped = v->old_idx != NULL || (v->idx != NULL && (size_t)v->n >= v->idmask);
        if (tripped) fm_forced++;     /* counted once per insert */
        if (v->old_idx != NULL) {
            /* the new index filled up, or the log outgrew its position field, before
               the migration ended: cannot happen with fm_nslots_mig's and
               fm_idmask_for's sizing; finish it now rather than fail */
            if (fm_migrate(v, PY_SSIZE_T_MAX, pend) < 0) return -1;
        }
        if (v->idx == NULL || (size_t)(v->fill + 1) * 3 > (v->mask + 1) * 2) {
            if (fm_mig_start(v, fm_nslots_mig(v, 1), pend) < 0) return -1;
        } else if ((size_t)v->n >= v->idmask) {
            /* at rest, the log outgrew the position field (compaction sizing makes
               this impossible): a compacting migration to an index sized for it */
            if (fm_mig_start(v, fm_nslots_mig(v, 0), pend) < 0) return -1;
        }
        freeslot = fm_free_slot(v, h);
    }
    FM_ASSERT(freeslot >= 0 && (size_t)v->n < v->idmask);
    e = fm_entry_writable(v, v->n, pend);
    if (e == NULL) return -1;
    s = fm_islot_writable(&v->idx, v->idx_depth, (size_t)freeslot, pend);
    if (s == NULL) return -1;
    fm_live_add(v, v->n, 1);
    Py_INCREF(key); Py_INCREF(value);
    fm_append(v, e, s, h, key, value);
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
    FM_ASSERT(*s > 0);
    *s = FM_SLOT_DUMMY;
    v->live--;
    if (v->live == 0) return fm_ver_release(v, pend);     /* reserved above */
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
/* ---- cyclic GC (see "Cyclic GC" at the end of the module) ---- */
/* Visit the key and value of every live record of one log page. */
static int fm_visit_records(fm_node *n, visitproc visit, void *arg) {
    fm_entry *e = fm_ents(n);
    uint32_t i;
    int r;
    for (i = 0; i < n->cap; i++)
        if (e[i].key != NULL) {
            if ((r = visit(e[i].key, arg)) != 0) return r;
            if ((r = visit(e[i].value, arg)) != 0) return r;
        }
    return 0;
}
/* Records a version alone holds: those of the log pages reached from its root through
   nodes of reference count 1 (only this version can reach them). */
static int fm_visit_own(fm_node *n, visitproc visit, void *arg) {
    uint32_t i;
    int r;
    if (n == NULL || n == fm_hole_page || fm_node_refcnt(n) != 1) return 0;
    if (n->kind == FM_ELEAF) {
        return fm_visit_records(n, visit, arg);
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
        return shared ? fm_visit_records(n, visit, arg) : 0;
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
        r = fm_visit_shared(m->ver->log, 0, visit, arg);
    for (m = f->head; m != NULL; m = m->next)
        fm_unmark_shared(m->ver->log, 0);
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
   from its storage as dict.update reads it.  Each key's hash comes from fm_dict_next
   (fm_common.h: the dict's stored hash on 3.10-3.12 GIL builds, as dict.update uses it,
   or an exact str's or int's) when no user code is needed; otherwise the key is hashed
   here (its __hash__ may change the dict: a size change raises RuntimeError, like dict
   iteration).  Returns 1 when no user code ran (the items are distinct keys), 0 when
   some did, -1 on error. */
static int fm_buf_from_dict(fm_buf *b, PyObject *d) {
    Py_ssize_t pos = 0, size = PyDict_GET_SIZE(d);
    PyObject *k, *v;
    Py_hash_t h;
    int r = 1;
    if (fm_buf_reserve(b, size) < 0) return -1;
#ifdef Py_GIL_DISABLED
    Py_BEGIN_CRITICAL_SECTION(d);
#endif
    while (fm_dict_next(d, &pos, &k, &v, &h)) {
        if (h != -1) {                   /* no user code: the dict cannot change here */
            if (fm_buf_push(b, h, k, v) < 0) { r = -1; break; }
            continue;
        }
        r = 0;
        Py_INCREF(k); Py_INCREF(v);      /* a key's __hash__ may drop the dict's */
        h = PyObject_Hash(k);
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
    return r;
}
/* Can fm_bulk_store take k items into v in one pass: no migration running, and room
   in the index (load <= 2/3) and in its position field for k appends (the last at
   position n + k - 1, whose slot holds n + k)? */
static inline int fm_bulk_fits(const fm_ver *v, Py_ssize_t k) {
    return v->old_idx == NULL && v->idx != NULL &&
           (size_t)(v->fill + k) * 3 <= (v->mask + 1) * 2 &&
           (size_t)(v->n + k) <= (size_t)v->idmask;
}
/* Store items[0..k) into the private version v (fm_bulk_fits(v, k) holds), in order.
   The first `distinct` items are known to be absent from v and distinct from one
   another (v was empty and they came from one dict or version with no user code
   run since): they are appended without a lookup.  The others are looked up (a
   key's __eq__ may run: v is private, nobody can reach it).  Appends fill the log
   page by page (one descent per page, the live counts added once per page); no
   migration can start (fm_bulk_fits).  On error (-1: __eq__ raised, or memory) v is
   a valid version holding the items before the failing one.  *changed is set when
   anything was stored.  The references of the items stored move from the array to
   v (the array's slot is cleared: no incref now, no decref later). */
#define FM_BULK_AHEAD 8               /* a power of two */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((noinline))
#endif
static void fm_bulk_prefetch(const fm_ver *v, const fm_entry *items, Py_ssize_t from,
                             Py_ssize_t k) {
    Py_ssize_t j;
    for (j = from; j < from + FM_BULK_AHEAD && j < k; j++)
        FM_PREFETCH_W(fm_slot_at(v, (size_t)items[j].hash & v->mask));
}
static int fm_bulk_store(fm_ver *v, fm_entry *items, Py_ssize_t k,
                         Py_ssize_t distinct, fm_pending *pend, int *changed) {
    fm_entry *leaf = NULL;
    Py_ssize_t i, base = 0, end = 0, unlive = 0, lpos = 0;
    int r = 0;
    FM_ASSERT(fm_bulk_fits(v, k));
    for (i = 0; i < k; i++) {
        fm_entry *it = items + i;
        Py_ssize_t pos, slot, fs, p;
        fm_entry *e;
        int32_t *s;
        /* an index of more than one page is read at random: at the start of each run
           of FM_BULK_AHEAD items, the first slots that the next run will probe are
           fetched (out of line, so that the loop's code is the same for small maps) */
        if ((i & (FM_BULK_AHEAD - 1)) == 0 && v->idx_depth > 0)
            fm_bulk_prefetch(v, items, i + FM_BULK_AHEAD, k);
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
        p = v->n;
        if (leaf == NULL || p >= end) {
            if (unlive) { fm_live_add(v, lpos, (int)unlive); unlive = 0; }
            e = fm_entry_writable(v, p, pend);
            if (e == NULL) { r = -1; break; }
            leaf = e - (p & (FM_ECAP - 1));
            base = p - (p & (FM_ECAP - 1));
            end = base + (Py_ssize_t)(((fm_node *)leaf) - 1)->cap;
        }
        s = fm_islot_writable(&v->idx, v->idx_depth, (size_t)fs, pend);
        if (s == NULL) { r = -1; break; }
        fm_append(v, leaf + (p - base), s, it->hash, it->key, it->value);
        it->key = NULL; it->value = NULL;           /* the references moved */
        lpos = p;
        unlive++;
        *changed = 1;
    }
    if (unlive) fm_live_add(v, lpos, (int)unlive);
    if (r == 0) fm_maintain(v, pend);
    return r;
}

#endif /* FM_SNAPSHOT_H */
