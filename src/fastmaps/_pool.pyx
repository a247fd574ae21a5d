"""fastmaps.ObjectPool: reuse expensive objects, in the spirit of Go's sync.Pool.

Design
======

Purpose and model
-----------------
A pool keeps *idle* objects (made by ``factory``) so that ``get()`` can hand one out
again instead of building a new one. Every object the pool knows about is in exactly one
of these states:

* **idle**: held (strong reference) by the pool, in one of three tiers below;
* **checking**: taken out of the idle tiers by a ``get()`` that is running ``validate``;
* **in use**: handed out by ``get()`` and not yet given back by ``put()``/``discard()``;
  while ``put()`` runs ``reset`` on it, it is still in use but also *being returned*
  (its address is in ``_returning``): a ``put()``/``discard()`` of it meanwhile (from
  ``reset`` itself, say) is rejected as a double put, so it is counted returned once;
* **gone**: discarded (dropped by the pool) -- the pool holds no reference to it any more.

Capacity reservations that do not hold an object yet are counted in ``creating``
(``factory`` running for a ``get()`` miss or for ``prefill()``).

Data structures
---------------
* **Per-thread cache.** ``_slot_items`` is one C array of object pointers (strong
  references): 64 cache slots of ``local_cache`` entries each (the slot stride is rounded up
  to a power of two, so indexing is a shift), with the fill level of each slot in the C
  array ``_slot_n``. A thread uses the slot chosen by a multiplicative hash of a C-level
  per-thread key: the thread pointer (``__builtin_thread_pointer()``, one instruction, GCC
  on x86-64/aarch64), else ``PyThread_get_thread_ident()``; no ``threading.local`` lookup. ``get()`` pops from, and ``put()`` pushes to, the calling
  thread's slot: that is the fast path. Two threads whose ids collide simply share a slot
  (correct, only less local). Slots are not tied to thread lifetime: objects left in the
  slot of a thread that has exited are found by stealing (below), by the GC victim rotation
  and by ``clear()``, so nothing is stranded.
* **Shared stack.** ``_shared`` (a list used as a LIFO stack; its first ``_n_shared``
  entries are live, the rest ``None``, so it never shrinks in steady state) takes objects
  when the caller's slot is full, objects made by ``prefill()``, and every ``put()`` while some
  ``get()`` is waiting (so the waiter can find it).
* **Victim tier.** ``_victim`` (LIFO list) holds the objects that were idle at the last
  garbage-collection cycle (see below).
* **Idle set.** ``_idle`` is an open-addressing hash set (linear probing, backward-shift
  deletion, load <= 1/2) of the *addresses* of all idle objects. It holds no references:
  an idle object is kept alive by its tier, so its address cannot be reused while it
  is in the set. It makes the double-put check O(1) (``put`` of an object that is already
  idle raises ``ValueError``), and it is what guarantees that the pool never holds the same
  object twice and therefore never hands one object to two borrowers. On free-threaded
  builds it is split into 64 shards by address, each under its own lock (``_shards``;
  ``_idle`` is then unused): see "Locking".

The cache slots are raw C storage for speed (no list indirection, no ``None`` placeholders
to reference-count), so the module patches the type's ``tp_traverse`` (Cython's generated
one, then every cached object) and ``tp_clear`` (drops the cached objects) at import: the
cyclic GC sees every idle object, and a pool in a reference cycle with its objects is
collected. The class is ``no_gc_clear`` so that Cython's own clear never sets the list
attributes to ``None`` under a running method.

get() order
-----------
own slot -> shared stack -> other threads' slots (steal) -> victim tier -> ``factory()``
(if ``max_size`` allows) -> wait (bounded pools only). Idle tiers are LIFO so the most
recently used (cache-warm) object is reused first. ``validate``, when given, runs on an
object taken from an idle tier before it is handed out; an invalid object is discarded and
the search goes on.

Victim tier protocol (GC release)
---------------------------------
One module-level callback in ``gc.callbacks`` walks a registry of pools: a dict whose keys
are weak references (weak, so the registry never keeps a pool alive -- Go's ``allPools``
lesson), walked through an atomic ``dict.copy()`` so that pools created or dropped by
other threads during a collection cannot break the walk. At the *start* of every
collection of generation >= ``gc_generation`` (default 2: full collections, the analogue
of a Go GC cycle; ``gc.collect()`` is one) each pool:

1. removes the victim tier's objects from the idle set (they were not reused since the
   previous cycle) and counts them in ``gc_released``/``discarded``;
2. moves the shared stack and all per-thread slots into a new victim tier;
3. only then, with the pool consistent again, drops its references to the old victims.

So an object that stays idle is released at the second cycle, an object reused in between
is not. Step 3 runs object finalizers inside the GC callback; since the pool is already
consistent they may even use the pool again. ``gc_release=False`` turns the tier off. On
free-threaded builds automatic collections are reported as generation 0, so there every
collection counts.

Bounds and waiting
------------------
``max_idle`` bounds the idle count (a ``put()`` beyond it drops the oldest victim if there
is one, otherwise the returned object). ``max_size`` bounds ``idle + in use + checking +
creating``. A ``get()`` that finds nothing idle and no capacity waits on a
``threading.Condition``. A timeout longer than a lock can wait (``threading.TIMEOUT_MAX``,
about 292 years, and ``inf``) waits forever, as ``None`` does. Lost wake-ups are
impossible because a waiter registers itself
(``_waiters += 1``) and re-checks the pool while holding the condition's lock, and every
event that frees an object or capacity (``put``, discard, a failing callback, GC release,
``close``) looks at ``_waiters`` afterwards and, if non-zero, notifies under that same lock.
A waiter that leaves abnormally (timeout, interrupt) passes the notification on. Waiting is
not strictly FIFO-fair: a ``get()`` that arrives while a woken waiter is being scheduled can
take the object first; the waiter then waits again for the rest of its timeout.

Locking
-------
* GIL builds (3.10-3.13): every state transition below is a short run of C code that calls
  no Python code, so the GIL makes it atomic. The common ``get()``/``put()`` pair touches
  the caller's slot, the idle set and some counters and takes **no lock at all**; the
  condition's lock is only used when a bounded pool has waiters.
* Free-threaded builds (3.13t+): the ``get()``/``put()`` fast path takes **no pool-wide
  lock** and writes no pool-wide field, so threads on different cache slots share no
  cache line in the common case:

  - each cache slot has a state (``_SlotState``, 128 bytes of its own: a spin lock, the
    fill level ``n``, ``out`` = fast gets minus fast puts through the slot, and the slot's
    fast hit / put counts), and its item storage is 128-byte aligned and strided;
  - the idle set is split into 64 shards by object address (``_Shard``: a spin lock and
    a ``_PtrSet``, 128 bytes each), so a double put -- even two threads racing to put the
    same object -- is decided by the object's shard: one insert wins;
  - the fast get pops the caller's slot under the slot's lock and removes the address
    from its shard; the fast put pushes under the slot's lock if the slot has room and
    ``out > 0`` (an object was checked out through this slot; units are fungible, as the
    pool counts loans without tracking them), after inserting into the shard (which keeps
    one free entry below its load bound for the slow path, below).

  Every other transition (the slow paths, GC rotation, clear, close, prefill) still runs
  inside ``cython.critical_section(self)`` (the pool's own mutex; a no-op on GIL builds)
  and takes slot and shard locks *inside* it (order: critical section, slot, shard). The
  slot and shard locks are spin locks (``fm_spin_lock``, yielding after 64 tries) held
  for a few dozen instructions that run no Python code, allocate nothing and never block:
  a ``PyMutex`` that has to wait detaches the thread state, which would suspend the
  critical section held around it. Pool-wide counters the slow paths keep under the
  critical section: ``_in_use`` (loans not counted in any slot's ``out``), ``_slot_live``
  (the sum of ``n + out`` over the slots, which the fast paths never change, so
  ``max_size`` is checked exactly: live = shared + victim + ``_slot_live`` + ``_in_use``
  + checking + creating) and ``_hw_gen``. A slow ``put()``/``discard()`` that finds no loan in
  ``_in_use`` moves one unit from a slot's ``out`` (its own slot first; none anywhere: no
  object is checked out, ``ValueError``). Readers sum the slots: ``len()`` (the shards'
  counts), ``stats()`` (gets, puts, hits, in_use) -- exact when no ``get()``/``put()``
  runs meanwhile, otherwise each sum is a value between its values at the start and the
  end of the call. ``high_water``: a fast get that raises its slot's ``out`` past a
  ceiling, or after ``_hw_gen`` changed (in_use grew outside the slots), enters the
  critical section to recompute in_use and raise the peak (``_st_high_water``), so a pool
  used by one thread at a time has the exact peak; fast gets on different slots at once
  use headroom computed without each other and may miss a peak they reach together, and
  ``stats()`` raises ``high_water`` to the in_use it reports. Gates: the fast paths read
  ``_fast_get_ok``/``_put_room`` under their slot's lock; a ``get()`` registering as a
  waiter closes ``_put_room`` and then takes and releases every slot's lock before it
  looks for idle objects, and ``close()`` closes both gates before sweeping the slots, so a
  fast put either finished before (its object is found) or sees the gate closed and
  takes the slow path (which notifies / drops): no lost wake-up, nothing cached after
  close. A pool with ``max_idle`` puts through the slow path (the bound needs the
  pool-wide idle count; its gets stay fast); so does a pool with ``reset``.
  The module is declared ``freethreading_compatible`` (setup.py), so importing it on 3.13t
  leaves the GIL off; the suite runs there.
* A state transition allocates no garbage-collected object: on 3.10/3.11 such an
  allocation can start a collection, and the pool's victim rotation (a GC callback) would
  run on a half-changed pool and count objects twice. The lists that ``clear()``,
  ``close()`` and the rotation install as new tiers are allocated before the transition.
* User callbacks (``factory``, ``reset``, ``validate``) and the dropping of the last
  reference to a discarded object (which can run ``__del__``) always happen **outside**
  every critical section and outside the condition's lock. While a callback runs, its object
  is accounted as in use / checking / creating, so other threads see a consistent pool, and
  callbacks may re-enter the pool.

Callback error policy
---------------------
* ``factory`` raises (``get``/``prefill``): the capacity reservation is released (a waiter
  is woken), ``callback_errors`` is counted, the exception propagates.
* ``validate`` raises: the object is discarded, ``callback_errors`` counted, the exception
  propagates from ``get()``. ``validate`` returning a false value: the object is discarded
  (``invalid``) and ``get()`` goes on with the next idle object or the factory.
* ``reset`` raises: the object is discarded (it counts as returned, so the capacity is freed
  and a waiter woken), the exception propagates from ``put()``/the ``with`` block (chained
  to the block's own exception, if any). ``reset`` returning exactly ``False``: the object is
  discarded quietly (e.g. "buffer grew too large to keep").
No callback error is ever swallowed; none leaves the pool inconsistent.

Invariants (checked by ``_check()``)
-----------------------------------
* idle set size == ``len(pool)`` == shared + sum(slots) + victim; every idle object appears
  once, in exactly one tier; each slot holds <= ``local_cache`` objects; free-threaded:
  each address is in its own shard, every ``out`` >= 0, ``_slot_live`` == sum(n + out);
* in use, checking, creating, waiters >= 0; ``high_water`` >= in use; objects being
  returned <= in use;
* ``idle <= max_idle``; ``idle + in_use + checking + creating <= max_size``;
* ``created == idle + in_use + checking + discarded`` (every object made is accounted for,
  given that only objects handed out by this pool are ``put`` back);
* a closed pool holds no idle object.

Debug builds (``FASTMAPS_DEBUG=1``, ``DEBUG_BUILD``) run the checker at the end of every
``get``/``put``/``discard``/``prefill``/``clear``/``close``, lease entry and exit and GC
rotation, on fm_dbg_due's schedule (fm_common.h: every call while its cost, the idle set's
capacity + the cache slots + the tiers, is at most 2048, else a sample of calls). It runs
no user code and allocates no GC-tracked object (see ``_verify``).

Fast path and its cost
----------------------
``get()``/``put()`` first try ``_fast_get``/``_fast_put``. Two precomputed gates decide
whether the caller's slot can be used: ``_fast_get_ok`` (open, no ``validate``, cache on)
and ``_put_room`` -- the fast ``put()`` runs while ``_idle.used < _put_room``, which is 0
when the pool is closed, has ``reset``, has waiters or no cache, and otherwise
``min(max_idle, half the idle set's capacity)``, so that one compare covers the flags, the
``max_idle`` bound and the set's load bound (``_update_fast_flags()`` recomputes it whenever
one of those changes, including when the set grows or shrinks). The object's reference is
then moved between the slot and the caller without touching its refcount on ``get()``,
and the idle set is updated. Everything else (callbacks, bounds, waiting, double-put
errors, set growth) goes to the slow paths. The number of objects in the cache slots is
not counted separately: it is ``idle - shared - victim``, needed only when stealing.
This paragraph describes GIL builds; the free-threaded fast path (``_fast_get_ft`` /
``_fast_put_ft``) is described under "Locking".

Call overhead. CPython 3.11 specialises a call of a ``METH_FASTCALL|METH_KEYWORDS`` method
descriptor (``PRECALL_METHOD_DESCRIPTOR_FAST_WITH_KEYWORDS``), so ``get(timeout=None)`` is
not slow to *dispatch*; what costs is Cython's argument parsing in the generated wrapper
(~35 instructions for a call without arguments, measured against a ``METH_NOARGS``
method). ``put(obj)`` is ``METH_O`` (``always_allow_keywords(False)``: ``put(obj=x)`` is a
``TypeError``, as for ``list.append``), ``Lease.__enter__`` is ``METH_NOARGS``. ``get``,
``borrow`` and ``Lease.__exit__`` keep their signatures (keywords allowed), and at import
the module points their ``PyMethodDef`` at small C entries (``FM_DEFINE_ENTRY``) that send
the common call shape -- no arguments, or exactly three positional ones for ``__exit__``
-- straight to a C function with the method's semantics for that shape, and every other
call to the generated wrapper (same parsing, same errors). The descriptors themselves are
unchanged; GIL builds only (the free-threaded build keeps the wrappers and their critical
sections), and an entry is skipped, never an error, if a method has another shape
(``_FAST_ENTRIES`` lists the installed ones; a test checks all three are there).

The measured cost of the pair and of ``with pool.borrow()`` is in docs/design.md
("ObjectPool", Performance).

Limits: the pool counts checked-out objects but does not track them (that would need a
reference or a weakref per loan), so a ``put()`` of an object someone else currently holds
cannot be detected; a ``put()`` when nothing is checked out is rejected.

Operation -> function
---------------------
C helpers: ``fm_pool.h`` (declared in ``fm_pool.pxd``); shared C: ``fm_common.h``.

=====================================  ==================================================
``get()`` (fast entry: ``_pool_get0``)  ``_get_impl``: own slot (``_st_slot_pop_ft`` on
                                       free-threaded builds), then ``_get_slow``:
                                       ``_st_take_idle`` (shared, steal, victim),
                                       ``_create_for_get``, ``_validated``, ``_wait``
``put(obj)``                           ``_fast_put`` / ``_fast_put_ft``, else ``_put_slow``
                                       (``_st_check_returnable``, reset, tiers)
``borrow()``, ``with``                 ``Lease.__enter__`` / ``Lease.__exit__``
``discard``                            ``_discard_impl``
``prefill``, ``clear``, ``close``      ``prefill``, ``clear``, ``close``
                                       (``_st_detach_all``)
waking waiters                         ``_notify``
GC victim tier                         ``_gc_callback`` -> ``_gc_rotate``
                                       (``_st_detach_primary``)
idle set (double-put detection)        ``_ps_*``; ``_idle_has``/``_idle_del``/
                                       ``_idle_add_reserved`` (sharded on free-threaded)
``stats()``, ``len()``                 ``stats``, ``_fast_totals``, ``_idle_n``
GC of cached objects                   ``_pool_traverse``, ``_pool_clear``
invariants (debug builds: after calls)  ``_check`` -> ``_verify``, ``_dbg_check``
=====================================  ==================================================
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from libc.stdint cimport uint64_t, uintptr_t
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.string cimport memset

import gc as _gc
import threading as _threading
import types as _types
import weakref as _weakref
from time import monotonic as _monotonic

from fastmaps.fm_common cimport *
from fastmaps.fm_pool cimport *

cdef extern from "Python.h":
    Py_ssize_t _refcnt "Py_REFCNT"(PyObject* o) noexcept nogil

cdef enum:
    _NSLOTS_C = 64  # must equal FM_NSLOTS (checked at import)

__all__ = ["ObjectPool", "Lease", "PoolClosedError"]

if FM_NSLOTS != _NSLOTS_C:
    raise ImportError("fastmaps._pool: slot count mismatch")
_FREE_THREADED = bool(FM_FREE_THREADED)
# True in a FASTMAPS_DEBUG=1 build (see _hashmap.DEBUG_BUILD)
DEBUG_BUILD = bool(FM_DEBUG)


def _debug_checks():
    """How many invariant checks this thread has run after mutating calls of ObjectPool
    (debug builds; always 0 otherwise). For tests."""
    return fm_dbg_checks()

_NSLOTS = FM_NSLOTS
_MAX_LOCAL_CACHE = 64


class PoolClosedError(RuntimeError):
    """Raised by ``get()``, ``borrow()`` and ``prefill()`` on a closed :class:`ObjectPool`."""


# ---------------------------------------------------------------------------------------
# A set of object addresses (no references held): open addressing, linear probing,
# backward-shift deletion, capacity a power of two, load factor <= 1/2.
# ---------------------------------------------------------------------------------------
cdef struct _PtrSet:
    uintptr_t* slots
    Py_ssize_t mask
    Py_ssize_t used
    int shift

cdef enum:
    _PS_MIN_BITS = 4


cdef int _ps_init(_PtrSet* s, int bits) except -1:
    cdef Py_ssize_t cap = (<Py_ssize_t>1) << bits
    cdef uintptr_t* slots = <uintptr_t*>PyMem_Malloc(cap * sizeof(uintptr_t))
    if slots == NULL:
        raise MemoryError()
    memset(slots, 0, cap * sizeof(uintptr_t))
    PyMem_Free(s.slots)
    s.slots = slots
    s.mask = cap - 1
    fm_st(&s.used, 0)
    s.shift = 64 - bits
    return 0


cdef void _ps_clear(_PtrSet* s) noexcept:
    """Empty the set. A large table is replaced by a minimal one, or, if that allocation
    fails, kept and zeroed (so clearing cannot fail half-way through a state change)."""
    cdef Py_ssize_t cap = (<Py_ssize_t>1) << _PS_MIN_BITS
    cdef uintptr_t* slots = NULL
    if s.mask + 1 > (1 << 10):
        slots = <uintptr_t*>PyMem_Malloc(cap * sizeof(uintptr_t))
    if slots == NULL:
        memset(s.slots, 0, (s.mask + 1) * sizeof(uintptr_t))
    else:
        memset(slots, 0, cap * sizeof(uintptr_t))
        PyMem_Free(s.slots)
        s.slots = slots
        s.mask = cap - 1
        s.shift = 64 - _PS_MIN_BITS
    fm_st(&s.used, 0)


cdef inline Py_ssize_t _ps_find(_PtrSet* s, uintptr_t p) noexcept:
    cdef Py_ssize_t i = fm_ptr_home(p, s.shift)
    cdef uintptr_t v
    while True:
        v = s.slots[i]
        if v == p:
            return i
        if v == 0:
            return -1
        i = (i + 1) & s.mask


cdef int _ps_grow(_PtrSet* s) except -1:
    cdef uintptr_t* old = s.slots
    cdef Py_ssize_t oldcap = s.mask + 1, i, j
    cdef int bits = 64 - s.shift + 1
    cdef Py_ssize_t cap = (<Py_ssize_t>1) << bits
    cdef uintptr_t* slots = <uintptr_t*>PyMem_Malloc(cap * sizeof(uintptr_t))
    if slots == NULL:
        raise MemoryError()
    memset(slots, 0, cap * sizeof(uintptr_t))
    s.slots = slots
    s.mask = cap - 1
    s.shift = 64 - bits
    for i in range(oldcap):
        if old[i] != 0:
            j = fm_ptr_home(old[i], s.shift)
            while slots[j] != 0:
                j = (j + 1) & s.mask
            slots[j] = old[i]
    PyMem_Free(old)
    return 0


cdef inline int _ps_reserve(_PtrSet* s) except -1:
    """Make room for one more entry, so that the next _ps_add cannot fail."""
    if (s.used + 1) * 2 > s.mask + 1:
        _ps_grow(s)
    return 0


cdef inline int _ps_add(_PtrSet* s, uintptr_t p) except -1:
    """1 if added, 0 if already present. Grows *before* inserting, so a MemoryError
    leaves the set unchanged."""
    cdef Py_ssize_t i
    cdef uintptr_t v
    if (s.used + 1) * 2 > s.mask + 1:
        if _ps_find(s, p) >= 0:
            return 0
        _ps_grow(s)
    i = fm_ptr_home(p, s.shift)
    while True:
        v = s.slots[i]
        if v == p:
            return 0
        if v == 0:
            break
        i = (i + 1) & s.mask
    s.slots[i] = p
    fm_st(&s.used, s.used + 1)
    return 1


cdef inline bint _ps_add_nogrow(_PtrSet* s, uintptr_t p) noexcept:
    """Insert p (the caller has checked there is room). False if already present."""
    cdef Py_ssize_t i = fm_ptr_home(p, s.shift)
    cdef uintptr_t v
    while True:
        v = s.slots[i]
        if v == p:
            return False
        if v == 0:
            break
        i = (i + 1) & s.mask
    s.slots[i] = p
    fm_st(&s.used, s.used + 1)
    return True


cdef inline bint _ps_remove(_PtrSet* s, uintptr_t p) noexcept:
    cdef Py_ssize_t i = _ps_find(s, p), j, k
    cdef uintptr_t v
    if i < 0:
        return False
    j = i
    while True:
        j = (j + 1) & s.mask
        v = s.slots[j]
        if v == 0:
            break
        k = fm_ptr_home(v, s.shift)
        # v may move back to the hole at i unless its home lies cyclically in (i, j]
        if (k <= i or k > j) if i <= j else (k <= i and k > j):
            s.slots[i] = v
            i = j
    s.slots[i] = 0
    fm_st(&s.used, s.used - 1)
    return True


cdef inline uintptr_t _addr(object o) noexcept:
    return <uintptr_t><void*>o


# Free-threaded builds only (see "Locking" in the module docstring): one shard of the
# idle set, and one cache slot's state, each on its own 128 bytes so that threads on
# different slots / shards share no cache line.
cdef struct _Shard:
    int lock                # fm_spin_lock
    _PtrSet set
    char pad[88]

cdef struct _SlotState:
    int lock                # fm_spin_lock: guards this struct and the slot's items
    Py_ssize_t n            # idle objects in the slot
    Py_ssize_t out          # fast gets minus fast puts through this slot (>= 0)
    Py_ssize_t ceiling      # fast gets may raise `out` up to this without a high_water
    Py_ssize_t gen          # update while gen == the pool's _hw_gen (_st_high_water)
    Py_ssize_t hits         # fast gets (each one a get and a hit)
    Py_ssize_t puts         # fast puts
    char pad[72]

cdef str _DOUBLE_PUT = "put() of an object that is already idle in this pool (double put)"


# ---------------------------------------------------------------------------------------
# GC victim rotation: one gc.callbacks entry for every pool, pools held weakly.
# ---------------------------------------------------------------------------------------
# {weakref.ref(pool): None}. A plain dict, not a WeakSet: the callback walks a copy made
# by dict.copy(), one C call that is atomic with respect to other threads (under the GIL,
# or the dict's own critical section on free-threaded builds), so pools created, closed
# or collected by other threads meanwhile cannot break the walk. (Iterating a WeakSet
# runs Python code between items, and raised "Set changed size during iteration" when
# another thread registered a pool.)
_registry = {}


def _registry_drop(ref):
    _registry.pop(ref, None)


cdef void _register(ObjectPool pool):
    _registry[_weakref.ref(pool, _registry_drop)] = None


cdef void _unregister(ObjectPool pool):
    _registry.pop(_weakref.ref(pool), None)


def _gc_callback(phase, info):
    if phase != "start" or not _registry:
        return
    gen = info.get("generation", 2) if FM_FREE_THREADED == 0 else 2
    for ref in _registry.copy():
        pool = ref()
        if pool is not None:
            (<ObjectPool>pool)._gc_rotate(gen)


def _install_gc_callback():
    # Idempotent across module re-imports: drop a callback left by an earlier copy.
    _gc.callbacks[:] = [cb for cb in _gc.callbacks
                        if getattr(cb, "__qualname__", None) != "_gc_callback"
                        or getattr(cb, "__module__", None) != __name__]
    _gc.callbacks.append(_gc_callback)


_install_gc_callback()

cdef object _EMPTY = object()


cdef Py_ssize_t _opt_count(object value, str name, Py_ssize_t minimum) except -2:
    """None -> -1 (unbounded); otherwise an int >= minimum."""
    if value is None:
        return -1
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
    v = value.__index__()
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum} or None, got {v}")
    return v


cdef double _TIMEOUT_MAX = _threading.TIMEOUT_MAX


cdef double _check_timeout(object timeout) except -2.0:
    """None -> -1.0 (wait forever); otherwise a float >= 0. A timeout longer than a lock
    can wait (threading.TIMEOUT_MAX, about 292 years; also inf) means forever too, as
    None does: Condition.wait would raise OverflowError for it."""
    if timeout is None:
        return -1.0
    if isinstance(timeout, bool) or not (hasattr(type(timeout), "__float__") or
                                         hasattr(type(timeout), "__index__")):
        raise TypeError(f"timeout must be a number of seconds or None, "
                        f"not {type(timeout).__name__}")
    t = float(timeout)
    if not t >= 0.0:  # also rejects NaN
        raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
    if t > _TIMEOUT_MAX:
        return -1.0
    return t


@cython.no_gc_clear
@cython.final
cdef class ObjectPool:
    """ObjectPool(factory, *, reset=None, validate=None, max_idle=None, max_size=None,
    local_cache=4, gc_release=True, gc_generation=2)

    A thread-safe pool of reusable objects made by ``factory()``.

    * ``get(timeout=None)`` returns an idle object (LIFO, the calling thread's own cache
      first) or a new one from ``factory``; ``put(obj)`` gives it back; ``with
      pool.borrow() as obj:`` does both (see :class:`Lease`).
    * ``reset(obj)`` runs in ``put()``, before the object can be handed out again; if it
      returns ``False`` the object is discarded. ``validate(obj)`` runs before an idle
      object is handed out; a false result discards it. If a callback raises, the object
      involved is discarded, the pool stays consistent and the exception propagates.
    * ``max_idle``: at most this many idle objects are kept (``None``: no limit).
      ``max_size``: at most this many objects exist at once (idle + in use); ``get()``
      then waits up to ``timeout`` seconds (``None``: forever) for one to come back and
      raises ``TimeoutError``.
    * ``local_cache``: idle objects kept in each per-thread cache slot (0 disables it).
    * ``gc_release``: objects left idle across two garbage-collection cycles of generation
      >= ``gc_generation`` are released (Go's victim cache). ``False`` keeps them.

    ``len(pool)`` is the number of idle objects; ``stats()`` returns counters; ``close()``
    (or leaving ``with pool:``) drops idle objects and wakes every waiter.

    Costs: ``get()``/``put()`` are O(1) expected (a per-thread cache slot and a hash set
    of idle addresses) plus the callbacks they run; ``clear()``/``close()`` are O(idle).

    The examples pass ``gc_release=False`` where they count idle objects: with the
    default, two full garbage collections between two lines would release them.

    >>> pool = ObjectPool(bytearray, reset=lambda buf: buf.clear(), gc_release=False)
    >>> buf = pool.get()              # nothing idle: factory() makes one
    >>> buf += b"data"
    >>> pool.put(buf)                 # reset() empties it; it is idle again
    >>> len(pool)
    1
    >>> with pool.borrow() as b:      # get() on entry, put() on exit
    ...     b is buf
    True
    >>> pool.stats()["created"], pool.stats()["hits"], buf
    (1, 1, bytearray(b''))
    >>> small = ObjectPool(object, max_size=1, gc_release=False)
    >>> held = small.get()
    >>> small.get(timeout=0)          # all max_size objects are in use
    Traceback (most recent call last):
        ...
    TimeoutError: ObjectPool.get() timed out after 0 s: all 1 objects (max_size) are in use
    >>> small.max_size, small.max_idle, small.closed
    (1, None, False)
    >>> small.close(); small.closed
    True
    """

    cdef object _factory
    cdef object _reset
    cdef object _validate
    cdef list _shared
    cdef list _victim
    cdef PyObject** _slot_items
    cdef int _slot_shift
    cdef Py_ssize_t _slot_n[_NSLOTS_C]
    cdef object _cond
    cdef object __weakref__
    cdef _PtrSet _idle
    cdef _PtrSet _returning         # objects whose put() is running reset (still in use)
    # Hot counters are interleaved with read-mostly fields on purpose: when two counters
    # that one method updates sit side by side, GCC fuses the updates into one 16-byte
    # load/store, which stalls on store-forwarding against the other method's 8-byte
    # stores (measured: ~40% of the get/put pair).
    cdef Py_ssize_t _in_use
    cdef Py_ssize_t _put_room       # the put() fast path may run while _idle.used < this
    cdef bint _fast_get_ok          # not closed, no validate, local cache on
    cdef Py_ssize_t _max_idle
    cdef Py_ssize_t _max_size
    cdef unsigned long long _gets
    cdef Py_ssize_t _local_cache
    cdef unsigned long long _puts
    cdef Py_ssize_t _n_shared
    cdef unsigned long long _hits
    cdef unsigned long long _fast_hits
    cdef Py_ssize_t _waiters
    cdef Py_ssize_t _high_water
    cdef Py_ssize_t _checking
    cdef Py_ssize_t _creating
    cdef unsigned long long _misses, _created, _discarded
    cdef unsigned long long _invalid, _cb_errors, _gc_released, _waits, _timeouts
    cdef int _gc_generation
    cdef bint _gc_release
    cdef bint _closed
    cdef bint _initialized
    cdef Py_ssize_t _idle_cap       # max_idle, or PY_SSIZE_T_MAX when unbounded
    cdef void* _slot_items_raw      # what to free (_slot_items is aligned on 3.13t)
    # Free-threaded builds only (NULL / unused on GIL builds): the idle set's shards (the
    # addresses live there, not in _idle), the per-slot states, and two counters kept
    # under the critical section: _slot_live is the sum over slots of (n + out), which
    # the fast paths never change; _hw_gen is bumped whenever in_use grows outside the
    # slots' out counts (see _st_high_water).
    cdef _Shard* _shards
    cdef void* _shards_raw
    cdef _SlotState* _fslots
    cdef void* _fslots_raw
    cdef Py_ssize_t _slot_live
    cdef Py_ssize_t _hw_gen

    def __cinit__(self, *args, **kwargs):
        cdef Py_ssize_t i
        self._shared = []
        self._victim = []
        self._slot_items = NULL
        memset(self._slot_n, 0, sizeof(self._slot_n))
        self._idle.slots = NULL
        _ps_init(&self._idle, _PS_MIN_BITS)
        self._returning.slots = NULL
        _ps_init(&self._returning, _PS_MIN_BITS)
        self._max_idle = -1
        self._max_size = -1
        if FM_FREE_THREADED:
            self._shards = <_Shard*>fm_alloc_lines(FM_NSHARDS * sizeof(_Shard),
                                                   &self._shards_raw)
            if self._shards == NULL:
                raise MemoryError()
            for i in range(FM_NSHARDS):
                _ps_init(&self._shards[i].set, _PS_MIN_BITS)
            self._fslots = <_SlotState*>fm_alloc_lines(FM_NSLOTS * sizeof(_SlotState),
                                                      &self._fslots_raw)
            if self._fslots == NULL:
                raise MemoryError()

    def __dealloc__(self):
        cdef Py_ssize_t i
        self._drop_slot_items()
        PyMem_Free(self._slot_items_raw)
        self._slot_items = NULL
        self._slot_items_raw = NULL
        PyMem_Free(self._idle.slots)
        self._idle.slots = NULL
        PyMem_Free(self._returning.slots)
        self._returning.slots = NULL
        if self._shards != NULL:
            for i in range(FM_NSHARDS):
                PyMem_Free(self._shards[i].set.slots)
            self._shards = NULL
        PyMem_Free(self._shards_raw)
        self._shards_raw = NULL
        self._fslots = NULL
        PyMem_Free(self._fslots_raw)
        self._fslots_raw = NULL

    cdef void _drop_slot_items(self) noexcept:
        """Release every cached object (dealloc / tp_clear only)."""
        cdef Py_ssize_t i, j, lc = self._local_cache
        cdef PyObject* o
        cdef _SlotState* st
        if self._slot_items == NULL:
            return
        if FM_FREE_THREADED:
            if self._fslots == NULL:
                return
            for i in range(FM_NSLOTS):
                st = &self._fslots[i]
                while fm_ld(&st.n):
                    fm_spin_lock(&st.lock)
                    j = st.n - 1
                    if j < 0:
                        fm_spin_unlock(&st.lock)
                        break
                    o = self._slot_items[(i << self._slot_shift) + j]
                    self._slot_items[(i << self._slot_shift) + j] = NULL
                    fm_st(&st.n, j)
                    self._slot_live -= 1
                    self._idle_del(<uintptr_t>o)
                    fm_spin_unlock(&st.lock)
                    self._discarded += 1
                    Py_XDECREF(o)
            return
        for i in range(FM_NSLOTS):
            while self._slot_n[i]:
                # one object at a time, the pool consistent before each DECREF (which
                # can run a finalizer)
                j = self._slot_n[i] - 1
                o = self._slot_items[(i << self._slot_shift) + j]
                self._slot_items[(i << self._slot_shift) + j] = NULL
                self._slot_n[i] = j
                _ps_remove(&self._idle, <uintptr_t>o)
                self._discarded += 1
                Py_XDECREF(o)

    def __init__(self, factory, *, reset=None, validate=None, max_idle=None,
                 max_size=None, local_cache=4, gc_release=True, gc_generation=2):
        if self._initialized:
            raise TypeError("ObjectPool.__init__() cannot be called twice")
        if not callable(factory):
            raise TypeError(f"factory must be callable, not {type(factory).__name__}")
        if reset is not None and not callable(reset):
            raise TypeError(f"reset must be callable or None, not {type(reset).__name__}")
        if validate is not None and not callable(validate):
            raise TypeError(f"validate must be callable or None, "
                            f"not {type(validate).__name__}")
        self._max_idle = _opt_count(max_idle, "max_idle", 0)
        self._max_size = _opt_count(max_size, "max_size", 1)
        lc = _opt_count(local_cache, "local_cache", 0)
        if lc < 0:
            raise TypeError("local_cache must be an int (0 disables the per-thread cache)")
        if lc > _MAX_LOCAL_CACHE:
            raise ValueError(f"local_cache must be <= {_MAX_LOCAL_CACHE}, got {lc}")
        if not isinstance(gc_release, bool):
            raise TypeError(f"gc_release must be a bool, not {type(gc_release).__name__}")
        if isinstance(gc_generation, bool) or gc_generation not in (0, 1, 2):
            raise ValueError(f"gc_generation must be 0, 1 or 2, got {gc_generation!r}")
        self._factory = factory
        self._reset = reset
        self._validate = validate
        self._local_cache = lc
        if lc:
            sh = 0
            # slot stride: a power of two >= local_cache; on free-threaded builds at
            # least 16 pointers (128 bytes, the allocation aligned to that), so that two
            # threads' slots never share a cache line
            while (1 << sh) < lc or (FM_FREE_THREADED and sh < 4):
                sh += 1
            self._slot_shift = sh
            PyMem_Free(self._slot_items_raw)  # (an earlier __init__ that failed later on)
            self._slot_items = <PyObject**>fm_alloc_lines(
                (FM_NSLOTS << sh) * sizeof(PyObject*), &self._slot_items_raw)
            if self._slot_items == NULL:
                raise MemoryError()
        self._gc_release = gc_release
        self._gc_generation = gc_generation
        if self._max_size >= 0:
            self._cond = _threading.Condition(_threading.Lock())
        self._idle_cap = self._max_idle if self._max_idle >= 0 else PY_SSIZE_T_MAX
        self._update_fast_flags()
        self._initialized = True
        if gc_release:
            _register(self)

    @classmethod
    def __class_getitem__(cls, item):
        return _types.GenericAlias(cls, item)

    # ----------------------------------------------------------------- state helpers
    # All helpers named _st_* must be called inside `with cython.critical_section(self)`
    # (a no-op on GIL builds). They call no Python code and drop no last reference.

    cdef void _update_fast_flags(self) noexcept:
        """Recompute the fast-path gates. Call after any change of: closed, waiters, the
        idle set's capacity (it grows in the slow put()/prefill(), shrinks in clear())."""
        cdef Py_ssize_t room
        # (atomic stores on free-threaded builds: the fast paths read these under their
        # slot's lock, not under the critical section)
        fm_st_int(<int*>&self._fast_get_ok, not self._closed and self._validate is None and
                  self._local_cache > 0)
        if (self._closed or self._reset is not None or self._waiters != 0 or
                self._local_cache == 0):
            room = 0
        elif FM_FREE_THREADED:
            # a flag there: each shard checks its own load bound; a max_idle pool puts
            # through the slow path (the bound needs the pool-wide idle count)
            room = self._max_idle < 0
        else:
            # below both max_idle and half the idle set's capacity (its load bound), so
            # the fast path can insert without growing the set
            room = (self._idle.mask + 1) >> 1
            if self._idle_cap < room:
                room = self._idle_cap
        fm_st(&self._put_room, room)

    # The idle set: one _PtrSet (_idle) on GIL builds; on free-threaded builds FM_NSHARDS
    # shards chosen by address, each under its own spin lock. These helpers compile to the
    # plain _ps_* calls on GIL builds (FM_FREE_THREADED is a C constant).
    cdef inline bint _idle_has(self, uintptr_t p) noexcept:
        cdef _Shard* sh
        cdef bint r
        if FM_FREE_THREADED:
            sh = &self._shards[fm_ptr_shard(p)]
            fm_spin_lock(&sh.lock)
            r = _ps_find(&sh.set, p) >= 0
            fm_spin_unlock(&sh.lock)
            return r
        return _ps_find(&self._idle, p) >= 0

    cdef inline void _idle_del(self, uintptr_t p) noexcept:
        cdef _Shard* sh
        if FM_FREE_THREADED:
            sh = &self._shards[fm_ptr_shard(p)]
            fm_spin_lock(&sh.lock)
            _ps_remove(&sh.set, p)
            fm_spin_unlock(&sh.lock)
        else:
            _ps_remove(&self._idle, p)

    cdef inline int _idle_reserve(self, uintptr_t p) except -1:
        """Make room so that the next _idle_add_reserved(p) cannot fail. (Free-threaded:
        the fast put always leaves one free entry below a shard's load bound, and the
        critical section admits one slow path at a time.)"""
        cdef _Shard* sh
        if FM_FREE_THREADED:
            sh = &self._shards[fm_ptr_shard(p)]
            fm_spin_lock(&sh.lock)
            try:
                _ps_reserve(&sh.set)
            finally:
                fm_spin_unlock(&sh.lock)
            return 0
        return _ps_reserve(&self._idle)

    cdef inline bint _idle_add_reserved(self, uintptr_t p) noexcept:
        """Insert p after _idle_reserve(p); False if it was already there (free-threaded:
        another thread's fast put of the same object got there first)."""
        cdef _Shard* sh
        cdef bint r
        if FM_FREE_THREADED:
            sh = &self._shards[fm_ptr_shard(p)]
            fm_spin_lock(&sh.lock)
            r = _ps_add_nogrow(&sh.set, p)
            fm_spin_unlock(&sh.lock)
            return r
        return _ps_add_nogrow(&self._idle, p)

    cdef inline Py_ssize_t _idle_n(self) noexcept:
        """The number of idle objects (free-threaded: a sum over the shards, exact when
        no fast path runs meanwhile)."""
        cdef Py_ssize_t i, n = 0
        if FM_FREE_THREADED:
            for i in range(FM_NSHARDS):
                n += fm_ld(&self._shards[i].set.used)
            return n
        return self._idle.used

    cdef void _idle_clear(self) noexcept:
        cdef Py_ssize_t i
        if FM_FREE_THREADED:
            for i in range(FM_NSHARDS):
                fm_spin_lock(&self._shards[i].lock)
                _ps_clear(&self._shards[i].set)
                fm_spin_unlock(&self._shards[i].lock)
        else:
            _ps_clear(&self._idle)

    cdef inline Py_ssize_t _slot_count(self, Py_ssize_t i) noexcept:
        if FM_FREE_THREADED:
            return fm_ld(&self._fslots[i].n)
        return self._slot_n[i]

    cdef void _fast_totals(self, Py_ssize_t* hits, Py_ssize_t* puts,
                           Py_ssize_t* out) noexcept:
        """Free-threaded: the per-slot fast-path counters summed (relaxed loads, so
        exact when no fast path runs meanwhile); zeros on GIL builds."""
        cdef Py_ssize_t i
        cdef _SlotState* st
        hits[0] = puts[0] = out[0] = 0
        if FM_FREE_THREADED:
            for i in range(FM_NSLOTS):
                st = &self._fslots[i]
                hits[0] += fm_ld(&st.hits)
                puts[0] += fm_ld(&st.puts)
                out[0] += fm_ld(&st.out)

    cdef void _st_high_water(self, Py_ssize_t slot) noexcept:
        """Free-threaded: raise high_water to in_use (the pool-wide _in_use plus every
        slot's out count) and, for the caller's slot, let fast gets raise its out count
        by the headroom left (high_water - in_use) without coming back here. A fast get
        comes back when it would pass its slot's ceiling or when _hw_gen changed (in_use
        grew outside the slots' out counts), so a pool used by one thread at a time gets
        the exact peak; concurrent fast gets on different slots can each use headroom
        computed without the other's, so a peak they reach together may be missed."""
        cdef Py_ssize_t t = self._in_use, i
        cdef _SlotState* st
        for i in range(FM_NSLOTS):
            t += fm_ld(&self._fslots[i].out)
        if t > self._high_water:
            self._high_water = t
        if slot >= 0:
            st = &self._fslots[slot]
            fm_spin_lock(&st.lock)
            st.ceiling = st.out + (self._high_water - t)
            st.gen = self._hw_gen
            fm_spin_unlock(&st.lock)

    cdef void _st_pull_unit(self) noexcept:
        """Free-threaded: make sure the pool-wide _in_use counts one more object than are
        being returned, moving one unit from a slot's out count (the caller's slot first)
        if needed; in_use as a whole is unchanged. A put() or discard() that still finds
        none is rejected: no object is checked out."""
        cdef Py_ssize_t own, k, i
        cdef _SlotState* st
        cdef bint got
        if self._in_use - self._returning.used > 0:
            return
        own = fm_thread_slot()
        for k in range(FM_NSLOTS):
            i = (own + k) & (FM_NSLOTS - 1)
            st = &self._fslots[i]
            if fm_ld(&st.out) <= 0:
                continue
            fm_spin_lock(&st.lock)
            got = st.out > 0
            if got:
                fm_st(&st.out, st.out - 1)
            fm_spin_unlock(&st.lock)
            if got:
                self._in_use += 1
                self._slot_live -= 1
                fm_st(&self._hw_gen, self._hw_gen + 1)
                return

    cdef inline void _st_handed_out(self) noexcept:
        self._in_use += 1
        if FM_FREE_THREADED:
            fm_st(&self._hw_gen, self._hw_gen + 1)
            self._st_high_water(-1)
        elif self._in_use > self._high_water:
            self._high_water = self._in_use

    cdef inline object _st_slot_pop(self, Py_ssize_t slot):
        """Pop from a non-empty cache slot; removes the object from the idle set."""
        cdef Py_ssize_t n = self._slot_n[slot] - 1
        cdef PyObject* p = self._slot_items[(slot << self._slot_shift) + n]
        self._slot_items[(slot << self._slot_shift) + n] = NULL
        obj = <object>p   # takes a new reference ...
        Py_DECREF(obj)    # ... and gives back the one the slot held
        self._slot_n[slot] = n
        _ps_remove(&self._idle, _addr(obj))
        return obj

    cdef inline void _st_slot_push(self, Py_ssize_t slot, object obj) noexcept:
        """Push to a cache slot with room; the caller has added obj to the idle set."""
        cdef Py_ssize_t n = self._slot_n[slot]
        Py_INCREF(obj)
        self._slot_items[(slot << self._slot_shift) + n] = <PyObject*>obj
        self._slot_n[slot] = n + 1

    cdef object _st_slot_pop_ft(self, Py_ssize_t slot, bint keep_idle=False):
        """Free-threaded: pop from a cache slot under its lock; _EMPTY if it is empty. The
        object leaves the idle set too, unless `keep_idle` (the caller moves it to another
        idle tier)."""
        cdef _SlotState* st = &self._fslots[slot]
        cdef Py_ssize_t n, k
        cdef PyObject* p
        fm_spin_lock(&st.lock)
        n = st.n - 1
        if n < 0:
            fm_spin_unlock(&st.lock)
            return _EMPTY
        k = (slot << self._slot_shift) + n
        p = self._slot_items[k]
        self._slot_items[k] = NULL
        fm_st(&st.n, n)
        if not keep_idle:
            self._idle_del(<uintptr_t>p)
        fm_spin_unlock(&st.lock)
        self._slot_live -= 1
        return fm_steal(p)

    cdef bint _st_slot_push_ft(self, Py_ssize_t slot, object obj) noexcept:
        """Free-threaded: push onto a cache slot if it has room (the caller has added obj
        to the idle set). False: the slot is full."""
        cdef _SlotState* st = &self._fslots[slot]
        cdef Py_ssize_t n
        fm_spin_lock(&st.lock)
        n = st.n
        if n >= self._local_cache:
            fm_spin_unlock(&st.lock)
            return False
        Py_INCREF(obj)
        self._slot_items[(slot << self._slot_shift) + n] = <PyObject*>obj
        fm_st(&st.n, n + 1)
        fm_spin_unlock(&st.lock)
        self._slot_live += 1
        return True

    cdef inline object _st_shared_pop(self):
        cdef Py_ssize_t n = self._n_shared - 1
        obj = fm_list_take(self._shared, n)
        self._n_shared = n
        self._idle_del(_addr(obj))
        return obj

    cdef inline int _st_shared_push(self, object obj) except -1:
        if self._n_shared < len(self._shared):
            fm_list_store(self._shared, self._n_shared, obj)
        else:
            self._shared.append(obj)
        self._n_shared += 1
        return 0

    cdef list _st_detach_primary(self, list fresh):
        """Move every object of the shared stack and the cache slots into one list, the
        old shared stack (they stay in the idle set: the caller decides); the empty list
        `fresh` becomes the shared stack. The caller allocates it before the state change:
        on 3.10/3.11 allocating a list can start a collection, whose victim rotation
        would then run on a half-changed pool (and count objects twice)."""
        cdef Py_ssize_t i, j, n
        cdef PyObject* p
        cdef _SlotState* st
        cdef list out = self._shared
        del out[self._n_shared:]
        self._shared = fresh
        self._n_shared = 0
        if FM_FREE_THREADED:
            if self._local_cache:
                for i in range(FM_NSLOTS):
                    while fm_ld(&self._fslots[i].n):
                        obj = self._st_slot_pop_ft(i, True)
                        if obj is _EMPTY:
                            break
                        out.append(obj)
            return out
        for i in range(FM_NSLOTS):
            n = self._slot_n[i]
            for j in range(n):
                p = self._slot_items[(i << self._slot_shift) + j]
                self._slot_items[(i << self._slot_shift) + j] = NULL
                out.append(<object>p)
                Py_DECREF(<object>p)
            self._slot_n[i] = 0
        return out

    cdef object _st_take_idle(self):
        """Remove and return one idle object, or _EMPTY."""
        cdef Py_ssize_t i
        if FM_FREE_THREADED:
            return self._st_take_idle_ft()
        if self._local_cache:
            i = fm_thread_slot()
            if self._slot_n[i]:
                return self._st_slot_pop(i)
        if self._n_shared:
            return self._st_shared_pop()
        if self._idle.used > len(self._victim):  # some cache slot holds objects: steal
            for i in range(FM_NSLOTS):
                if self._slot_n[i]:
                    return self._st_slot_pop(i)
        if len(self._victim):
            obj = self._victim.pop()
            _ps_remove(&self._idle, _addr(obj))
            return obj
        return _EMPTY

    cdef object _st_take_idle_ft(self):
        cdef Py_ssize_t i
        if self._local_cache:
            obj = self._st_slot_pop_ft(fm_thread_slot())
            if obj is not _EMPTY:
                return obj
        if self._n_shared:
            return self._st_shared_pop()
        if self._local_cache:  # steal from another slot
            for i in range(FM_NSLOTS):
                if fm_ld(&self._fslots[i].n):
                    obj = self._st_slot_pop_ft(i)
                    if obj is not _EMPTY:
                        return obj
        if len(self._victim):
            obj = self._victim.pop()
            self._idle_del(_addr(obj))
            return obj
        return _EMPTY

    cdef inline bint _st_has_capacity(self) noexcept:
        if FM_FREE_THREADED:
            # exact although fast paths run meanwhile: they keep each slot's n + out
            return self._max_size < 0 or (
                self._n_shared + len(self._victim) + self._slot_live + self._in_use +
                self._checking + self._creating < self._max_size)
        return self._max_size < 0 or (
            self._idle.used + self._in_use + self._checking + self._creating < self._max_size)

    cdef bint _st_any_idle(self) noexcept:
        """Is any object idle? Free-threaded: takes and releases every slot's lock after
        the caller set _put_room to 0 (registering a waiter), so that a fast put either
        finished before (its object is seen here) or sees the gate closed and takes the
        slow path, which notifies: no lost wake-up."""
        cdef Py_ssize_t i
        cdef bint found = False
        if FM_FREE_THREADED:
            found = self._n_shared > 0 or len(self._victim) > 0
            for i in range(FM_NSLOTS):
                fm_spin_lock(&self._fslots[i].lock)
                if self._fslots[i].n:
                    found = True
                fm_spin_unlock(&self._fslots[i].lock)
            return found
        return self._idle.used > 0

    cdef object _st_detach_all(self, list fresh_shared, list fresh_victim):
        """Empty every idle tier; return the detached objects (caller drops them later).
        The two empty lists become the new tiers (see _st_detach_primary)."""
        cdef list out = self._st_detach_primary(fresh_shared)
        out.extend(self._victim)
        self._victim = fresh_victim
        if FM_FREE_THREADED:
            # one by one: a fast put may have pushed to a slot after the sweep above,
            # and its object stays idle (in its slot and in the set)
            for o in out:
                self._idle_del(_addr(o))
        else:
            _ps_clear(&self._idle)
        self._update_fast_flags()  # the idle set may have shrunk
        self._discarded += len(out)
        return out

    cdef void _notify(self, bint all_waiters=False):
        # Called outside any critical section, after the state change it reports. Cheap
        # unless a bounded pool has waiters. _waiters is read inside the critical section
        # (on free-threaded builds): _wait increments it and re-checks the pool in one, so
        # either the waiter sees the change or this sees the waiter (a read outside could
        # miss both ways: a lost wake-up).
        cdef Py_ssize_t waiters
        with cython.critical_section(self):
            waiters = self._waiters
        if waiters > 0 and self._cond is not None:
            with self._cond:
                if all_waiters:
                    self._cond.notify_all()
                else:
                    self._cond.notify()

    # ----------------------------------------------------------------------- get
    cdef inline PyObject* _fast_get_ft(self, bint* hw) noexcept:
        """Free-threaded fast get: pop from the calling thread's slot under the slot's
        lock (and the object's shard lock for the idle set); no pool-wide lock, and the
        counters it updates are the slot's own. *hw is set when high_water must be
        brought up to date (see _st_high_water). A new reference, or NULL."""
        cdef Py_ssize_t slot = fm_thread_slot(), n, k, out
        cdef _SlotState* st = &self._fslots[slot]
        cdef _Shard* sh
        cdef PyObject* p
        fm_spin_lock(&st.lock)
        n = st.n - 1
        if n < 0 or not fm_ld_int(<int*>&self._fast_get_ok):
            fm_spin_unlock(&st.lock)
            return NULL
        k = (slot << self._slot_shift) + n
        p = self._slot_items[k]
        self._slot_items[k] = NULL
        fm_st(&st.n, n)
        out = st.out + 1
        fm_st(&st.out, out)
        fm_st(&st.hits, st.hits + 1)
        hw[0] = out > st.ceiling or st.gen != fm_ld(&self._hw_gen)
        sh = &self._shards[fm_ptr_shard(<uintptr_t>p)]
        fm_spin_lock(&sh.lock)
        _ps_remove(&sh.set, <uintptr_t>p)
        fm_spin_unlock(&sh.lock)
        fm_spin_unlock(&st.lock)
        return p

    cdef inline PyObject* _fast_get(self) noexcept:
        """The get() fast path: pop from the calling thread's cache slot. Returns a new
        reference, moved out of the slot without touching the refcount, or NULL."""
        cdef Py_ssize_t slot, n, k
        cdef PyObject* p
        if not self._fast_get_ok:
            return NULL
        slot = fm_thread_slot()
        n = self._slot_n[slot]
        if not n:
            return NULL
        n -= 1
        k = (slot << self._slot_shift) + n
        p = self._slot_items[k]
        self._slot_items[k] = NULL
        self._slot_n[slot] = n
        _ps_remove(&self._idle, <uintptr_t>p)
        self._fast_hits += 1  # counts as a get and a hit (see stats())
        self._st_handed_out()
        return p

    @cython.binding(False)
    def get(self, timeout=None):
        """get(timeout=None)

        Return an idle object, or a new one from ``factory``. On a pool with ``max_size``
        whose objects are all in use, wait up to ``timeout`` seconds (``None``, ``inf`` or
        more than ``threading.TIMEOUT_MAX``: no limit)
        for one to be returned, then raise ``TimeoutError``. ``timeout`` is ignored by
        pools without ``max_size`` (they never wait). Raises :class:`PoolClosedError`
        once the pool is closed.

        Complexity: O(1) expected: a pop from the calling thread's cache slot (the fast
        path), else from the shared stack, another thread's slot (a scan of the 64
        slots) or the victim tier, plus one removal from the idle set; plus one
        ``validate`` call per idle object tried (an invalid one is discarded and the next
        one tried) or one ``factory`` call on a miss. A bounded pool may block up to
        ``timeout``.

        >>> pool = ObjectPool(list, max_size=1, gc_release=False)
        >>> a = pool.get()
        >>> pool.put(a)
        >>> pool.get() is a               # the idle object is handed out again
        True
        >>> pool.get(timeout=0)           # max_size objects in use, none idle
        Traceback (most recent call last):
            ...
        TimeoutError: ObjectPool.get() timed out after 0 s: all 1 objects (max_size) are in use
        """
        if FM_DEBUG:
            return self._dbg_get(timeout)
        return self._get_impl(timeout)

    cdef inline object _get_impl(self, object timeout):
        cdef PyObject* p
        cdef bint hw = False
        if timeout is None:
            # GIL builds: no lock at all; free-threaded builds: the slot's own lock (the
            # C constant folds the branch away).
            if FM_FREE_THREADED:
                p = self._fast_get_ft(&hw)
                if p != NULL:
                    obj = fm_steal(p)
                    if hw:
                        with cython.critical_section(self):
                            self._st_high_water(fm_thread_slot())
                    return obj
            else:
                p = self._fast_get()
                if p != NULL:
                    return fm_steal(p)
        return self._get_slow(timeout)

    cdef int _check_initialized(self) except -1:
        if not self._initialized:  # made by ObjectPool.__new__, or __init__ failed
            raise TypeError("ObjectPool.__init__() was not called")
        return 0

    cdef object _get_slow(self, object timeout):
        cdef double t = _check_timeout(timeout)
        cdef double deadline = -1.0
        cdef bint create, waited = False
        self._check_initialized()
        with cython.critical_section(self):
            self._gets += 1
        while True:
            create = False
            with cython.critical_section(self):
                if self._closed:
                    raise PoolClosedError("get() on a closed ObjectPool")
                obj = self._st_take_idle()
                if obj is not _EMPTY:
                    if self._validate is None:
                        self._hits += 1
                        self._st_handed_out()
                        return obj
                    self._checking += 1
                elif self._st_has_capacity():
                    self._misses += 1
                    self._creating += 1
                    create = True
            if create:
                return self._create_for_get()
            if obj is not _EMPTY:
                if self._validated(obj):
                    return obj
                obj = None  # invalid: dropped (outside any lock), try the next one
                continue
            # Bounded pool, nothing idle, no capacity: wait.
            if not waited:
                waited = True
                with cython.critical_section(self):
                    self._waits += 1
                if t > 0.0:
                    deadline = _monotonic() + t
            if not self._wait(t, deadline):
                with cython.critical_section(self):
                    self._timeouts += 1
                raise TimeoutError(
                    f"ObjectPool.get() timed out after {t:g} s: all {self._max_size} "
                    f"objects (max_size) are in use")

    cdef object _create_for_get(self):
        try:
            obj = self._factory()
        except BaseException:
            with cython.critical_section(self):
                self._creating -= 1
                self._cb_errors += 1
            self._notify()
            raise
        with cython.critical_section(self):
            self._creating -= 1
            self._created += 1
            self._st_handed_out()
        return obj

    cdef bint _validated(self, object obj) except -1:
        """Run validate on an object in the 'checking' state. True: it is now in use."""
        try:
            ok = self._validate(obj)
            ok = bool(ok)
        except BaseException:
            with cython.critical_section(self):
                self._checking -= 1
                self._discarded += 1
                self._cb_errors += 1
            self._notify()
            raise
        with cython.critical_section(self):
            self._checking -= 1
            if ok:
                self._hits += 1
                self._st_handed_out()
            else:
                self._discarded += 1
                self._invalid += 1
        if not ok:
            self._notify()
        return ok

    cdef bint _wait(self, double t, double deadline) except -1:
        """Wait for an idle object or free capacity. False: timed out."""
        cdef bint ready
        cdef double remaining
        cond = self._cond
        with cond:
            with cython.critical_section(self):
                self._waiters += 1
                self._update_fast_flags()
                ready = (self._closed or self._st_any_idle() or self._st_has_capacity())
            try:
                if ready:
                    return True
                if t == 0.0:
                    return False
                if deadline < 0.0:
                    cond.wait()
                else:
                    remaining = deadline - _monotonic()
                    if remaining <= 0.0:
                        return False
                    cond.wait(remaining)
                return True
            except BaseException:
                # We may have consumed a notification meant for a waiter: pass it on.
                cond.notify()
                raise
            finally:
                with cython.critical_section(self):
                    self._waiters -= 1
                    self._update_fast_flags()

    # ----------------------------------------------------------------------- put
    cdef inline int _fast_put_ft(self, PyObject* o) noexcept:
        """Free-threaded fast put: push onto the calling thread's slot under the slot's
        lock, if the slot has room and its out count shows an object checked out through
        it; the object's shard of the idle set (its own lock) detects a double put, also
        one racing with another thread's. The gate (_put_room) is read under the slot's
        lock: see _st_any_idle. 1: done; 0: take the slow path."""
        cdef Py_ssize_t slot = fm_thread_slot(), n
        cdef _SlotState* st = &self._fslots[slot]
        cdef _Shard* sh
        cdef uintptr_t a = <uintptr_t>o
        fm_spin_lock(&st.lock)
        n = st.n
        if not fm_ld(&self._put_room) or st.out <= 0 or n >= self._local_cache:
            fm_spin_unlock(&st.lock)
            return 0
        sh = &self._shards[fm_ptr_shard(a)]
        fm_spin_lock(&sh.lock)
        # one free entry stays below the load bound for the slow path's reservation
        if (sh.set.used + 2) * 2 > sh.set.mask + 1 or not _ps_add_nogrow(&sh.set, a):
            fm_spin_unlock(&sh.lock)
            fm_spin_unlock(&st.lock)
            return 0  # (already idle: the slow path raises ValueError)
        fm_spin_unlock(&sh.lock)
        fm_incref(o)
        self._slot_items[(slot << self._slot_shift) + n] = o
        fm_st(&st.n, n + 1)
        fm_st(&st.out, st.out - 1)
        fm_st(&st.puts, st.puts + 1)
        fm_spin_unlock(&st.lock)
        return 1

    cdef inline int _fast_put(self, PyObject* o) noexcept:
        """The put() fast path: push onto the calling thread's cache slot.
        1: done; 0: take the slow path (which also reports a double put)."""
        cdef Py_ssize_t slot, n
        if self._idle.used >= self._put_room or self._in_use <= 0:
            return 0
        slot = fm_thread_slot()
        n = self._slot_n[slot]
        if n >= self._local_cache:
            return 0
        if not _ps_add_nogrow(&self._idle, <uintptr_t>o):
            return 0  # already idle: the slow path raises ValueError
        fm_incref(o)
        self._slot_items[(slot << self._slot_shift) + n] = o
        self._slot_n[slot] = n + 1
        self._in_use -= 1
        self._puts += 1
        return 1

    @cython.binding(False)
    @cython.always_allow_keywords(False)
    def put(self, obj):
        """put(obj)

        Return an object obtained from ``get()``. ``reset(obj)`` runs first (if it raises,
        the object is discarded and the exception propagates; if it returns ``False`` the
        object is discarded). Beyond ``max_idle`` the object is dropped (or, if there is
        one, the oldest victim-tier object instead). Returns None. Raises ``ValueError``
        if ``obj`` is already idle in this pool (double put) or if no object is checked
        out. After ``close()`` the object is accepted and dropped.

        Complexity: amortised O(1): a push onto the calling thread's cache slot or the
        shared stack and one insert into the idle set, which occasionally doubles in
        O(idle); plus one ``reset`` call.

        >>> pool = ObjectPool(list, gc_release=False)
        >>> a = pool.get()
        >>> pool.put(a)
        >>> len(pool)
        1
        >>> pool.put(a)
        Traceback (most recent call last):
            ...
        ValueError: put() of an object that is already idle in this pool (double put)
        """
        self._put_impl(obj)
        if FM_DEBUG:
            self._dbg_check()

    cdef inline int _put_impl(self, object obj) except -1:
        cdef int done
        if FM_FREE_THREADED:
            done = self._fast_put_ft(<PyObject*>obj)
        else:
            done = self._fast_put(<PyObject*>obj)
        if not done:
            self._put_slow(obj)
        return 0

    cdef int _st_check_returnable(self, object obj) except -1:
        if self._idle_has(_addr(obj)):
            raise ValueError(_DOUBLE_PUT)
        if self._returning.used and _ps_find(&self._returning, _addr(obj)) >= 0:
            raise ValueError("put() of an object whose put() is running reset() "
                             "(double put)")
        if FM_FREE_THREADED:
            self._st_pull_unit()
        if self._in_use - self._returning.used <= 0:  # (those are being returned)
            raise ValueError("put() of an object this pool did not hand out "
                             "(no object is checked out)")
        return 0

    cdef _put_slow(self, object obj):
        cdef Py_ssize_t slot = -1
        cdef bint keep = True, resetting
        evicted = None
        with cython.critical_section(self):
            self._st_check_returnable(obj)
            resetting = not self._closed and self._reset is not None
            if resetting:
                # obj is being returned while reset runs: still in use, but a put() or
                # discard() of it from reset (or another thread) is rejected, so that it
                # is counted returned exactly once
                _ps_add(&self._returning, _addr(obj))
        if resetting:
            try:
                r = self._reset(obj)
            except BaseException:
                with cython.critical_section(self):
                    _ps_remove(&self._returning, _addr(obj))
                    self._in_use -= 1
                    self._puts += 1
                    self._discarded += 1
                    self._cb_errors += 1
                self._notify()
                raise
            keep = r is not False
        with cython.critical_section(self):
            if resetting:
                _ps_remove(&self._returning, _addr(obj))  # reserved: nothing to re-check
            else:
                # other threads may have run (free-threaded builds): check again.
                self._st_check_returnable(obj)
            self._in_use -= 1
            self._puts += 1
            if not keep or self._closed:
                keep = False
            elif self._max_idle >= 0 and self._idle_n() >= self._max_idle:
                if len(self._victim) and self._max_idle > 0:
                    evicted = self._victim.pop()  # older than obj: drop it instead
                    self._idle_del(_addr(evicted))
                    self._discarded += 1
                else:
                    keep = False
            if keep and FM_FREE_THREADED:
                self._idle_reserve(_addr(obj))
                if not self._idle_add_reserved(_addr(obj)):
                    # another thread's fast put of this same object came first
                    self._in_use += 1
                    self._puts -= 1
                    raise ValueError(_DOUBLE_PUT)
                if not (self._waiters == 0 and self._local_cache and
                        self._st_slot_push_ft(fm_thread_slot(), obj)):
                    try:
                        self._st_shared_push(obj)
                    except BaseException:
                        self._idle_del(_addr(obj))
                        raise
            elif keep:
                if self._waiters == 0 and self._local_cache:
                    slot = fm_thread_slot()
                    if self._slot_n[slot] >= self._local_cache:
                        slot = -1
                _ps_reserve(&self._idle)  # the two steps that can fail come first
                if slot < 0:
                    self._st_shared_push(obj)
                _ps_add(&self._idle, _addr(obj))
                if slot >= 0:
                    self._st_slot_push(slot, obj)
                self._update_fast_flags()  # the idle set may have grown
            else:
                self._discarded += 1
        self._notify()
        # `obj` (if dropped) and `evicted` lose their last pool reference after this point.

    def discard(self, obj):
        """discard(obj)

        Give up a checked-out object instead of returning it (e.g. it is broken): the pool
        forgets it and, if bounded, can create a replacement. Returns None. Raises
        ``ValueError`` if ``obj`` is idle in this pool or nothing is checked out.

        Complexity: O(1) expected (one idle-set lookup).

        >>> pool = ObjectPool(list, gc_release=False)
        >>> a = pool.get()
        >>> pool.discard(a)
        >>> len(pool), pool.stats()["discarded"], pool.stats()["in_use"]
        (0, 1, 0)
        """
        self._discard_impl(obj)
        if FM_DEBUG:
            self._dbg_check()

    cdef int _discard_impl(self, object obj) except -1:
        with cython.critical_section(self):
            if self._idle_has(_addr(obj)):
                raise ValueError("discard() of an object that is idle in this pool "
                                 "(use clear() to drop idle objects)")
            if self._returning.used and _ps_find(&self._returning, _addr(obj)) >= 0:
                raise ValueError("discard() of an object whose put() is running reset()")
            if FM_FREE_THREADED:
                self._st_pull_unit()
            if self._in_use - self._returning.used <= 0:
                raise ValueError("discard() of an object this pool did not hand out "
                                 "(no object is checked out)")
            self._in_use -= 1
            self._discarded += 1
        self._notify()
        return 0

    @cython.binding(False)
    def borrow(self, timeout=None, *, discard_on_error=False):
        """borrow(timeout=None, *, discard_on_error=False)

        Return a :class:`Lease`: ``with pool.borrow() as obj:`` gets an object on entry
        (waiting up to ``timeout`` on a bounded pool) and always gives it back on exit.
        Call ``lease.discard()`` inside the block to drop the object instead; with
        ``discard_on_error=True`` an exception leaving the block drops it too (the flag
        must be a bool, as ``gc_release``: TypeError otherwise).

        Complexity: O(1) (it only makes the Lease); entering the lease costs one
        ``get()``, leaving it one ``put()`` or ``discard()``.

        >>> pool = ObjectPool(list, gc_release=False)
        >>> with pool.borrow() as buf:
        ...     buf.append(1)
        >>> len(pool), pool.stats()["in_use"]
        (1, 0)
        >>> try:
        ...     with pool.borrow(discard_on_error=True) as buf:
        ...         raise ValueError("broken")
        ... except ValueError:
        ...     pass
        >>> len(pool), pool.stats()["discarded"]
        (0, 1)
        """
        if discard_on_error is not True and discard_on_error is not False:
            raise TypeError(f"discard_on_error must be a bool, "
                            f"not {type(discard_on_error).__name__}")
        return self._new_lease(timeout, discard_on_error)

    cdef inline Lease _new_lease(self, object timeout, bint discard_on_error):
        cdef Lease lease = Lease.__new__(Lease)
        lease._pool = self
        lease._timeout = timeout
        lease._discard_on_error = discard_on_error
        return lease

    # ----------------------------------------------------------- bulk operations
    def prefill(self, n):
        """prefill(n) -> int

        Create objects with ``factory`` until ``n`` are idle (stopping early at
        ``max_idle``/``max_size``). Returns how many were created. A factory error
        propagates (objects already created stay in the pool). Raises
        :class:`PoolClosedError` on a closed pool.

        Complexity: O(n) plus up to n ``factory`` calls (each new object is pushed on the
        shared stack and added to the idle set, amortised O(1)).

        >>> pool = ObjectPool(list, max_idle=3, gc_release=False)
        >>> pool.prefill(5), len(pool)
        (3, 3)
        >>> pool.prefill(2)               # 2 are already idle
        0
        """
        cdef Py_ssize_t target = _opt_count(n, "n", 0), made = 0, i, idle
        cdef bint go, keep
        if target < 0:
            raise TypeError("n must be an int")
        self._check_initialized()
        for i in range(target):
            with cython.critical_section(self):
                if self._closed:
                    raise PoolClosedError("prefill() on a closed ObjectPool")
                idle = self._idle_n()
                go = (idle + self._creating < target and
                      (self._max_idle < 0 or idle + self._creating < self._max_idle) and
                      self._st_has_capacity())
                if go:
                    self._creating += 1
            if not go:
                break
            try:
                obj = self._factory()
            except BaseException:
                with cython.critical_section(self):
                    self._creating -= 1
                    self._cb_errors += 1
                self._notify()
                raise
            with cython.critical_section(self):
                self._creating -= 1
                self._created += 1
                # re-check: factory() may have run puts (or other threads) meanwhile
                keep = (not self._closed and not self._idle_has(_addr(obj)) and
                        (self._max_idle < 0 or self._idle_n() < self._max_idle))
                if keep:
                    self._idle_reserve(_addr(obj))
                    self._st_shared_push(obj)
                    if not self._idle_add_reserved(_addr(obj)):
                        # (free-threaded: another thread put it meanwhile: drop our copy)
                        self._n_shared -= 1
                        obj = fm_list_take(self._shared, self._n_shared)
                        keep = False
                        self._discarded += 1
                    self._update_fast_flags()  # the idle set may have grown
                else:
                    self._discarded += 1
            if keep:
                made += 1
            obj = None
        self._notify()
        if FM_DEBUG:
            self._dbg_check()
        return made

    def clear(self):
        """clear() -> int

        Drop every idle object (all tiers); return how many were dropped. Objects in use
        are not affected.

        Complexity: O(idle), plus a scan of the 64 cache slots; finalizers of the dropped
        objects run after the pool is consistent, outside every lock.

        >>> pool = ObjectPool(list, gc_release=False)
        >>> pool.prefill(3)
        3
        >>> pool.clear(), len(pool)
        (3, 0)
        """
        fresh_shared = []  # allocated before the state change (see _st_detach_primary)
        fresh_victim = []
        with cython.critical_section(self):
            dropped = self._st_detach_all(fresh_shared, fresh_victim)
        n = len(dropped)
        self._notify(True)
        del dropped  # finalizers, if any, run here: outside every lock
        if FM_DEBUG:
            self._dbg_check()
        return n

    def close(self):
        """close()

        Close the pool: drop idle objects, wake every waiting ``get()`` (they raise
        :class:`PoolClosedError`), and stop GC tracking. Afterwards ``get()``,
        ``borrow()`` and ``prefill()`` raise :class:`PoolClosedError`, ``put()`` accepts
        and drops objects (so outstanding leases can finish), ``clear()`` returns 0 and
        ``stats()`` still works. Idempotent. Returns None.

        Complexity: O(idle), like ``clear()``.

        >>> pool = ObjectPool(list, gc_release=False)
        >>> a = pool.get()
        >>> pool.close()
        >>> pool.put(a)                   # accepted and dropped
        >>> pool.closed, len(pool)
        (True, 0)
        >>> pool.get()
        Traceback (most recent call last):
            ...
        fastmaps._pool.PoolClosedError: get() on a closed ObjectPool
        """
        fresh_shared = []  # allocated before the state change (see _st_detach_primary)
        fresh_victim = []
        with cython.critical_section(self):
            self._closed = True
            self._update_fast_flags()
            dropped = self._st_detach_all(fresh_shared, fresh_victim)
        _unregister(self)
        self._notify(True)
        del dropped
        if FM_DEBUG:
            self._dbg_check()

    @property
    def closed(self):
        """True once ``close()`` has been called.

        Complexity: O(1).

        >>> pool = ObjectPool(list)
        >>> pool.closed
        False
        >>> pool.close(); pool.closed
        True
        """
        return self._closed

    @property
    def max_size(self):
        """The bound on live objects (idle + in use), or None.

        Complexity: O(1).

        >>> ObjectPool(list, max_size=8).max_size, ObjectPool(list).max_size
        (8, None)
        """
        return None if self._max_size < 0 else self._max_size

    @property
    def max_idle(self):
        """The bound on idle objects, or None.

        Complexity: O(1).

        >>> ObjectPool(list, max_idle=2).max_idle, ObjectPool(list).max_idle
        (2, None)
        """
        return None if self._max_idle < 0 else self._max_idle

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def __len__(self):
        with cython.critical_section(self):
            return self._idle_n()

    def __repr__(self):
        cdef Py_ssize_t hits, puts, out
        self._fast_totals(&hits, &puts, &out)
        return (f"<{type(self).__name__} idle={self._idle_n()} in_use={self._in_use + out} "
                f"max_size={self.max_size} max_idle={self.max_idle}"
                f"{' closed' if self._closed else ''}>")

    def __reduce__(self):
        raise TypeError("ObjectPool objects cannot be pickled")

    # ------------------------------------------------------------------ GC tier
    cdef void _gc_rotate(self, int generation):
        dropped = None
        if generation < self._gc_generation:
            return
        fresh = []  # allocated before the state change (see _st_detach_primary)
        with cython.critical_section(self):
            if self._closed:
                return
            if self._idle_n():
                dropped = self._victim
                for o in dropped:
                    self._idle_del(_addr(o))
                self._gc_released += len(dropped)
                self._discarded += len(dropped)
                self._victim = self._st_detach_primary(fresh)
        if dropped:
            self._notify(True)
        # the pool is consistent: the old victims may now die (finalizers may use the pool)
        dropped = None
        if FM_DEBUG:
            self._dbg_check()

    # -------------------------------------------------------------------- stats
    def stats(self):
        """stats() -> dict

        Counters since creation: ``gets``, ``puts``, ``hits`` (served from idle objects),
        ``misses`` (``factory`` called by ``get()``), ``created`` (successful ``factory``
        calls, including ``prefill``), ``discarded`` (objects the pool let go for any
        reason), of which ``invalid`` (failed ``validate``) and ``gc_released``;
        ``callback_errors`` (``factory``/``reset``/``validate`` raised); ``waits``
        (``get()`` calls that had to wait), ``timeouts``; and the current ``idle``,
        ``in_use``, ``high_water`` (peak in use), ``waiting`` (blocked ``get()`` calls),
        ``max_idle`` and ``max_size``.

        On free-threaded builds the fast paths count per cache slot and this sums the
        slots: exact when no ``get()``/``put()`` runs meanwhile, otherwise each counter is
        a value it had during the call (not necessarily all at the same moment);
        ``high_water`` is exact for a pool used by one thread at a time, and otherwise at
        least the ``in_use`` reported (a peak reached by several threads' fast gets at
        once may be missed).

        Complexity: O(1) (a fixed set of counters; on free-threaded builds a sum over the
        64 cache slots).

        >>> pool = ObjectPool(list, gc_release=False)
        >>> a = pool.get(); pool.put(a); a = pool.get()
        >>> s = pool.stats()
        >>> s["gets"], s["hits"], s["misses"], s["created"], s["in_use"], s["idle"]
        (2, 1, 1, 1, 1, 0)
        """
        cdef Py_ssize_t hits, puts, out
        with cython.critical_section(self):
            # free-threaded: plus the per-slot fast-path counters (each summed with
            # relaxed loads: exact when no get()/put() runs meanwhile); high_water is
            # brought up to the in_use reported (see _st_high_water)
            self._fast_totals(&hits, &puts, &out)
            if self._in_use + out > self._high_water:
                self._high_water = self._in_use + out
            return {
                "gets": self._gets + self._fast_hits + hits, "puts": self._puts + puts,
                "hits": self._hits + self._fast_hits + hits, "misses": self._misses,
                "created": self._created, "discarded": self._discarded,
                "invalid": self._invalid, "gc_released": self._gc_released,
                "callback_errors": self._cb_errors,
                "waits": self._waits, "timeouts": self._timeouts,
                "idle": self._idle_n(), "in_use": self._in_use + out,
                "high_water": self._high_water, "waiting": self._waiters,
                "max_idle": None if self._max_idle < 0 else self._max_idle,
                "max_size": None if self._max_size < 0 else self._max_size,
            }

    def _check(self):
        """Verify the internal invariants (see the module docstring); raise AssertionError
        on the first violation. For tests, on a quiescent pool (free-threaded builds: no
        get()/put() running); debug builds also run it after mutating calls (see
        _dbg_check). O(idle objects + idle set capacity + cache slots)."""
        with cython.critical_section(self):
            self._verify()
        return True

    cdef int _dbg_check(self) except -1:
        """Debug builds, at the end of a mutating call (the pool consistent, outside every
        callback): _verify when fm_dbg_due says so for its cost."""
        cdef Py_ssize_t cost
        with cython.critical_section(self):
            cost = (FM_NSLOTS << self._slot_shift) + len(self._shared) + len(self._victim)
            if FM_FREE_THREADED:
                cost += 4 * self._idle_n() + (FM_NSHARDS << _PS_MIN_BITS)
            else:
                cost += self._idle.mask + 1
            if fm_dbg_due(cost):
                self._verify()
        return 0

    cdef object _dbg_get(self, object timeout):
        """get() followed by _dbg_check (debug builds)."""
        obj = self._get_impl(timeout)
        self._dbg_check()
        return obj

    cdef int _verify(self) except -1:
        """_check's body (inside the pool's critical section). It runs no user code and
        allocates no garbage-collected object before it finds a violation: an allocation
        could start a collection, whose victim rotation would change the pool mid-check
        (the objects seen are recorded in a C address set)."""
        cdef Py_ssize_t n, cap, i, j, base, lc = self._local_cache, live, idle, in_use
        cdef Py_ssize_t hits, puts, out, live_slots = 0, nsets
        cdef _PtrSet* ps
        cdef list shared = self._shared
        cdef list victim = self._victim
        cdef PyObject* o
        cdef _PtrSet seen
        seen.slots = NULL
        _ps_init(&seen, _PS_MIN_BITS)
        try:
            if lc and self._slot_items == NULL:
                raise AssertionError("no slot storage")
            if not 0 <= self._n_shared <= len(shared):
                raise AssertionError("_n_shared out of range")
            for i in range(self._n_shared, len(shared)):
                if shared[i] is not None:
                    raise AssertionError("shared stack: live object beyond _n_shared")
            for i in range(self._n_shared):
                self._verify_idle(<PyObject*>shared[i], &seen, "shared")
            for i in range(len(victim)):
                self._verify_idle(<PyObject*>victim[i], &seen, "victim")
            for i in range(FM_NSLOTS):
                n = self._slot_count(i)
                if not 0 <= n <= lc:
                    raise AssertionError(f"slot {i} holds {n} objects, local_cache={lc}")
                if FM_FREE_THREADED:
                    if self._fslots[i].out < 0:
                        raise AssertionError(f"slot {i}: out = {self._fslots[i].out} < 0")
                    live_slots += n + self._fslots[i].out
                if n == 0 and lc == 0:
                    continue
                base = i << self._slot_shift
                for j in range(lc):
                    o = self._slot_items[base + j]
                    if j >= n and o != NULL:
                        raise AssertionError(f"slot {i}: live object beyond its fill level")
                    if j < n:
                        if o == NULL:
                            raise AssertionError(f"slot {i}: NULL below its fill level")
                        self._verify_idle(o, &seen, "a cache slot")
            if FM_FREE_THREADED and live_slots != self._slot_live:
                raise AssertionError(f"slots hold n + out = {live_slots}, _slot_live = "
                                     f"{self._slot_live}")
            idle = self._idle_n()
            n = 0
            nsets = FM_NSHARDS if FM_FREE_THREADED else 1
            for j in range(nsets):
                ps = &self._shards[j].set if FM_FREE_THREADED else &self._idle
                cap = ps.mask + 1
                base = 0
                for i in range(cap):
                    if ps.slots[i] != 0:
                        base += 1
                        if _ps_find(ps, ps.slots[i]) != i:
                            raise AssertionError("idle set: entry not reachable from its home")
                        if FM_FREE_THREADED and fm_ptr_shard(ps.slots[i]) != j:
                            raise AssertionError(f"idle set: entry in shard {j}, not in "
                                                 f"its own")
                if base != ps.used:
                    raise AssertionError(f"idle set (shard {j}) holds {base}, used={ps.used}")
                if ps.used * 2 > cap:
                    raise AssertionError("idle set over its load factor")
                n += base
            if n != idle or n != seen.used:
                raise AssertionError(f"idle set holds {n} (used={idle}) but "
                                     f"tiers hold {seen.used}")
            self._fast_totals(&hits, &puts, &out)
            in_use = self._in_use + out
            if FM_FREE_THREADED and in_use > self._high_water:
                # concurrent fast gets may have missed a joint peak (_st_high_water);
                # stats() folds in_use in the same way
                self._high_water = in_use
            if self._returning.used > in_use:
                raise AssertionError(f"{self._returning.used} objects being returned but "
                                     f"in_use = {in_use}")
            if in_use < 0 or self._checking < 0 or self._creating < 0 or self._waiters < 0:
                raise AssertionError(f"negative count: in_use {in_use}, checking "
                                     f"{self._checking}, creating {self._creating}, "
                                     f"waiters {self._waiters}")
            if self._high_water < in_use:
                raise AssertionError("high_water < in_use")
            if self._max_idle >= 0 and idle > self._max_idle:
                raise AssertionError(f"idle {idle} > max_idle {self._max_idle}")
            live = idle + in_use + self._checking + self._creating
            if self._max_size >= 0 and live > self._max_size:
                raise AssertionError(f"live {live} > max_size {self._max_size}")
            if self._created != <unsigned long long>(idle + in_use + self._checking) + self._discarded:
                raise AssertionError(
                    f"created {self._created} != idle {idle} + in_use "
                    f"{in_use} + checking {self._checking} + discarded "
                    f"{self._discarded}")
            if self._closed and idle:
                raise AssertionError("closed pool holds idle objects")
            if self._hits + self._misses > self._gets:  # (fast hits count in neither)
                raise AssertionError("hits + misses > gets")
        finally:
            PyMem_Free(seen.slots)
        return 0

    cdef int _verify_idle(self, PyObject* o, _PtrSet* seen, str tier) except -1:
        """One idle object of `tier` for _verify: alive, in one tier only, in the idle set."""
        if o == NULL or _refcnt(o) <= 0:
            raise AssertionError(f"idle object in {tier} is NULL or freed")
        if not _ps_add(seen, _addr(<object>o)):
            raise AssertionError(f"object {<object>o!r} is idle twice ({tier})")
        if not self._idle_has(_addr(<object>o)):
            raise AssertionError(f"idle object {<object>o!r} ({tier}) not in idle set")
        return 0


# ------------------------------------------------------------------------------------
# GC support for the raw cache-slot storage: chain Cython's generated tp_traverse (which
# visits the object attributes) with a walk over the cached objects, and give the type a
# tp_clear that drops them (so a pool in a cycle with its own idle objects is collected).
# ------------------------------------------------------------------------------------
cdef fm_traverseproc _cython_pool_traverse = NULL


cdef int _pool_traverse(PyObject* o, fm_visitproc visit, void* arg) noexcept:
    cdef int r
    cdef Py_ssize_t i, j, lc
    cdef ObjectPool self
    if _cython_pool_traverse != NULL:
        r = _cython_pool_traverse(o, visit, arg)
        if r:
            return r
    self = <ObjectPool>o
    lc = self._local_cache
    if self._slot_items != NULL:
        for i in range(FM_NSLOTS):
            # (free-threaded: a collection runs with the world stopped, and no thread
            # stops while it holds a slot's lock)
            for j in range(self._slot_count(i)):
                r = visit(self._slot_items[(i << self._slot_shift) + j], arg)
                if r:
                    return r
    return 0


cdef int _pool_clear(PyObject* o) noexcept:
    (<ObjectPool>o)._drop_slot_items()
    return 0


fm_set_gc_slots(<PyTypeObject*>ObjectPool, _pool_traverse, _pool_clear, &_cython_pool_traverse, NULL)


@cython.freelist(16)
@cython.final
cdef class Lease:
    """A single-use loan from :meth:`ObjectPool.borrow`.

    ``with pool.borrow() as obj:`` binds the pooled object (one ``get()``, O(1) expected)
    and gives it back on exit (one ``put()``). Keep the lease to discard a broken object:
    ``lease.discard()`` inside the block drops it on exit instead of returning it.

    >>> pool = ObjectPool(list, gc_release=False)
    >>> lease = pool.borrow()
    >>> lease
    <Lease new obj=None>
    >>> with lease as conn:
    ...     inside = lease.obj is conn
    ...     lease.discard()               # dropped on exit instead of returned
    >>> inside, lease.obj, lease.pool is pool
    (True, None, True)
    >>> lease, len(pool), pool.stats()["discarded"]
    (<Lease finished obj=None>, 0, 1)
    >>> Lease()
    Traceback (most recent call last):
        ...
    TypeError: Lease objects are created by ObjectPool.borrow()
    """
    cdef ObjectPool _pool
    cdef object _obj
    cdef object _timeout
    cdef int _state  # 0 new, 1 active, 2 finished
    cdef bint _discard
    cdef bint _discard_on_error

    def __init__(self):
        raise TypeError("Lease objects are created by ObjectPool.borrow()")

    @cython.binding(False)
    @cython.always_allow_keywords(False)
    def __enter__(self):
        if self._state != 0:
            raise RuntimeError("a Lease can only be entered once")
        if self._pool is None:  # made by Lease.__new__
            raise TypeError("Lease objects are created by ObjectPool.borrow()")
        self._obj = self._pool._get_impl(self._timeout)
        self._state = 1
        if FM_DEBUG:
            self._pool._dbg_check()
        return self._obj

    @cython.binding(False)
    def __exit__(self, exc_type, exc, tb):
        return self._exit(exc_type)

    cdef inline object _exit(self, object exc_type):
        if self._state != 1:
            return False
        self._state = 2
        obj = self._obj
        self._obj = None
        if self._discard or (self._discard_on_error and exc_type is not None):
            self._pool._discard_impl(obj)
        else:
            self._pool._put_impl(obj)
        if FM_DEBUG:
            self._pool._dbg_check()
        return False

    @classmethod
    def __class_getitem__(cls, item):
        return _types.GenericAlias(cls, item)

    def discard(self):
        """Drop the object on exit instead of returning it to the pool (the pool forgets
        it; a bounded pool can then create a replacement). Returns None; raises
        RuntimeError outside the ``with`` block.

        Complexity: O(1) (it sets a flag; the exit then costs one ``discard()``).

        >>> pool = ObjectPool(list, gc_release=False)
        >>> lease = pool.borrow()
        >>> with lease as buf:
        ...     lease.discard()
        >>> len(pool), pool.stats()["discarded"]
        (0, 1)
        >>> lease.discard()
        Traceback (most recent call last):
            ...
        RuntimeError: Lease.discard() outside the with block
        """
        if self._state != 1:
            raise RuntimeError("Lease.discard() outside the with block")
        self._discard = True

    @property
    def obj(self):
        """The borrowed object while the ``with`` block runs (else None).

        Complexity: O(1).

        >>> lease = ObjectPool(list).borrow()
        >>> with lease as buf:
        ...     inside = lease.obj is buf
        >>> inside, lease.obj
        (True, None)
        """
        return self._obj

    @property
    def pool(self):
        """The pool this lease borrows from.

        Complexity: O(1).

        >>> pool = ObjectPool(list)
        >>> pool.borrow().pool is pool
        True
        """
        return self._pool

    def __repr__(self):
        state = ("new", "active", "finished")[self._state]
        return f"<Lease {state} obj={self._obj!r}>"


@cython.final
cdef class _NullContext:
    """Benchmarks only: the cheapest context manager Cython compiles here, with the same
    method options as :class:`Lease` (``__enter__`` returns self, ``__exit__`` returns
    None, no allocation). ``with null: pass`` measures what the ``with`` statement itself
    costs, the floor under ``with pool.borrow()`` (benchmarks/bench_pool.py).

    >>> null = _NullContext()
    >>> with null as x:
    ...     pass
    >>> x is null
    True
    """

    @cython.binding(False)
    @cython.always_allow_keywords(False)
    def __enter__(self):
        return self

    @cython.binding(False)
    def __exit__(self, exc_type, exc, tb):
        return None


# ------------------------------------------------------------------------------------
# Fast entries (GIL builds; see FM_DEFINE_ENTRY in the C block at the top): `get()`,
# `borrow()` and `Lease.__exit__(t, v, tb)` called in their common shape skip Cython's
# argument parsing. These functions have exactly the methods' semantics for that shape.
# ------------------------------------------------------------------------------------
cdef object _pool_get0(ObjectPool self):
    if FM_DEBUG:
        return self._dbg_get(None)
    return self._get_impl(None)


cdef object _pool_borrow0(ObjectPool self):
    return self._new_lease(None, False)


cdef object _lease_exit3(Lease self, object exc_type, object exc, object tb):
    return self._exit(exc_type)


# Which entries are installed (tests check that a GIL build has all three).
_FAST_ENTRIES = frozenset(name for name, ok in (
    ("ObjectPool.get", fm_pool_get_install(ObjectPool.__dict__["get"], <void*>_pool_get0)),
    ("ObjectPool.borrow",
     fm_pool_borrow_install(ObjectPool.__dict__["borrow"], <void*>_pool_borrow0)),
    ("Lease.__exit__", fm_lease_exit_install(Lease.__dict__["__exit__"], <void*>_lease_exit3)),
) if ok)
