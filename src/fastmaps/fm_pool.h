/* fm_pool.h: ObjectPool's C helpers: moving references in and out of lists, the
   per-thread slot of the calling thread, and the fast entries of the hottest methods
   (see "Fast path" in _pool.pyx's docstring). */
#ifndef FM_POOL_H
#define FM_POOL_H

#include <Python.h>
#include <stdint.h>
#include <string.h>
#include "fm_common.h"
#include "pythread.h"
#define __Pyx_NewRef_Steal(p) (p)
/* Move the reference held by list[i] to the caller, leaving None behind. */
static inline PyObject* fm_list_take(PyObject* list, Py_ssize_t i) {
    PyObject* o = PyList_GET_ITEM(list, i);
    Py_INCREF(Py_None);
    PyList_SET_ITEM(list, i, Py_None);
    return o;
}
/* Store a new reference to o at list[i], which must hold None. */
static inline void fm_list_store(PyObject* list, Py_ssize_t i, PyObject* o) {
    PyObject* old = PyList_GET_ITEM(list, i);
    Py_INCREF(o);
    PyList_SET_ITEM(list, i, o);
    Py_DECREF(old);
}
#define FM_SLOT_BITS 6
#define FM_NSLOTS (1 << FM_SLOT_BITS)
static inline Py_ssize_t fm_ptr_home(uintptr_t p, int shift) {
    return (Py_ssize_t)(((uint64_t)p * 0x9E3779B97F4A7C15ULL) >> shift);
}
/* A per-thread key: the thread pointer (one instruction) where GCC provides it,
   else the C-level thread id. Only hashed, never dereferenced. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && \
    (defined(__x86_64__) || defined(__aarch64__))
#define FM_THREAD_KEY() ((uint64_t)(uintptr_t)__builtin_thread_pointer())
#else
#define FM_THREAD_KEY() ((uint64_t)PyThread_get_thread_ident())
#endif
static inline Py_ssize_t fm_thread_slot(void) {
    return (Py_ssize_t)((FM_THREAD_KEY() * 0x9E3779B97F4A7C15ULL) >> (64 - FM_SLOT_BITS));
}

/* Free-threaded fast path (see "Locking" in _pool.pyx's docstring).
   The idle set is split into FM_NSHARDS shards by object address (one shard on GIL
   builds); the shard is chosen by a second mix of the address, independent of the
   bits that choose the home slot inside the shard's table. */
#if FM_FREE_THREADED
#define FM_SHARD_BITS 6
#else
#define FM_SHARD_BITS 0
#endif
#define FM_NSHARDS (1 << FM_SHARD_BITS)
static inline Py_ssize_t fm_ptr_shard(uintptr_t p) {
#if FM_SHARD_BITS
    return (Py_ssize_t)((((uint64_t)p >> 4) * 0xC2B2AE3D27D4EB4FULL) >> (64 - FM_SHARD_BITS));
#else
    (void)p;
    return 0;
#endif
}
/* A tiny spin lock for the per-slot and per-shard locks: held only for a few dozen
   instructions that call no Python code, allocate nothing and never block, so that it
   can be taken inside the pool's critical section without suspending it (a PyMutex that
   has to wait detaches the thread state, which suspends the thread's critical sections).
   After 64 failed tries it yields the CPU (the holder may have been preempted).
   No-ops on GIL builds. */
#if FM_FREE_THREADED
#include <sched.h>
static inline void fm_spin_lock(int* l) {
    int spins = 0;
    for (;;) {
        int expected = 0;
        if (_Py_atomic_load_int_relaxed(l) == 0 &&
                _Py_atomic_compare_exchange_int(l, &expected, 1))
            return;
        if (++spins >= 64) {
            spins = 0;
            sched_yield();
        }
    }
}
static inline void fm_spin_unlock(int* l) { _Py_atomic_store_int_release(l, 0); }
#define fm_ld(p) _Py_atomic_load_ssize_relaxed(p)
#define fm_st(p, v) _Py_atomic_store_ssize_relaxed((p), (v))
#define fm_ld_int(p) _Py_atomic_load_int_relaxed(p)
#define fm_st_int(p, v) _Py_atomic_store_int_relaxed((p), (v))
#else
static inline void fm_spin_lock(int* l) { (void)l; }
static inline void fm_spin_unlock(int* l) { (void)l; }
#define fm_ld(p) (*(p))
#define fm_st(p, v) (*(p) = (v))
#define fm_ld_int(p) (*(p))
#define fm_st_int(p, v) (*(p) = (v))
#endif
/* n bytes aligned to 128 (two cache lines: adjacent-line prefetch), zeroed; *raw gets
   the pointer to free. NULL on failure. */
static inline void* fm_alloc_lines(size_t n, void** raw) {
    char* r = (char*)PyMem_Malloc(n + 127);
    char* a;
    *raw = r;
    if (r == NULL) return NULL;
    a = (char*)(((uintptr_t)r + 127) & ~(uintptr_t)127);
    memset(a, 0, n);
    return a;
}
/* Fast entries for hot METH_FASTCALL|METH_KEYWORDS methods (GIL builds only).
   fm_install_entry() points the method's PyMethodDef at an entry function that
   sends the common call shape (no arguments, or exactly three positional ones)
   straight to a C-level implementation with the same contract as the method, and
   every other call (keywords, other counts) to the method's own Cython-generated
   wrapper, which parses the arguments and reports errors as before. Both are tail
   calls; the Python-visible method (name, doc, flags, descriptor) is unchanged. The
   free-threaded build keeps the generated wrappers (their critical sections), and so
   does any build where the method is not a METH_FASTCALL|METH_KEYWORDS method
   descriptor (the entry is only an optimisation). Returns 1 if installed, else 0. */
typedef PyObject* (*fm_fastcall_kw)(PyObject*, PyObject* const*, Py_ssize_t, PyObject*);
typedef PyObject* (*fm_args0_fn)(PyObject*);
typedef PyObject* (*fm_args3_fn)(PyObject*, PyObject*, PyObject*, PyObject*);
#define FM_DEFINE_ENTRY(NAME, NARGS, CALL)                                            \
    static fm_fastcall_kw NAME##_full = NULL;                                        \
    static fm_args##NARGS##_fn NAME##_fast = NULL;                                   \
    static PyObject* NAME##_entry(PyObject* self, PyObject* const* args,             \
                                 Py_ssize_t nargs, PyObject* kwnames) {              \
        if (nargs == NARGS && kwnames == NULL)                                       \
            return CALL;                                                             \
        return NAME##_full(self, args, nargs, kwnames);                              \
    }                                                                                \
    static int NAME##_install(PyObject* descr, void* fast) {                         \
        return fm_install_entry(descr, NAME##_entry, &NAME##_full,                   \
                                (void**)&NAME##_fast, fast);                         \
    }
static int fm_install_entry(PyObject* descr, fm_fastcall_kw entry,
                            fm_fastcall_kw* full, void** fast_slot, void* fast) {
#if !FM_FREE_THREADED
    PyMethodDef* def;
    if (!PyObject_TypeCheck(descr, &PyMethodDescr_Type))
        return 0;
    def = ((PyMethodDescrObject*)descr)->d_method;
    if (def->ml_meth == (PyCFunction)(void(*)(void))entry)
        return 1;  /* already installed (module initialised again) */
    if (def->ml_flags != (METH_FASTCALL | METH_KEYWORDS))
        return 0;
    *fast_slot = fast;
    *full = (fm_fastcall_kw)(void(*)(void))def->ml_meth;
    def->ml_meth = (PyCFunction)(void(*)(void))entry;
    return 1;
#else
    (void)descr; (void)entry; (void)full; (void)fast_slot; (void)fast;
    return 0;
#endif
}
FM_DEFINE_ENTRY(fm_pool_get, 0, fm_pool_get_fast(self))
FM_DEFINE_ENTRY(fm_pool_borrow, 0, fm_pool_borrow_fast(self))
FM_DEFINE_ENTRY(fm_lease_exit, 3, fm_lease_exit_fast(self, args[0], args[1], args[2]))

#endif /* FM_POOL_H */
