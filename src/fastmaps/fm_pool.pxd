# Declarations of fm_pool.h (ObjectPool's C helpers) for _pool.pyx.
from cpython.object cimport PyObject
from libc.stdint cimport uintptr_t

cdef extern from "fm_pool.h":
    const int FM_NSLOTS
    Py_ssize_t fm_ptr_home(uintptr_t p, int shift) noexcept nogil
    Py_ssize_t fm_thread_slot() noexcept nogil
    object fm_steal "__Pyx_NewRef_Steal"(PyObject* p)  # takes over a new reference
    void fm_incref "Py_INCREF"(PyObject* p) noexcept
    object fm_list_take(list lst, Py_ssize_t i)
    int fm_pool_get_install(object descr, void* fast)
    int fm_pool_borrow_install(object descr, void* fast)
    int fm_lease_exit_install(object descr, void* fast)
    void fm_list_store(list lst, Py_ssize_t i, object o)
    # free-threaded fast path (no-ops / one shard on GIL builds)
    const int FM_NSHARDS
    Py_ssize_t fm_ptr_shard(uintptr_t p) noexcept nogil
    void fm_spin_lock(int* l) noexcept nogil
    void fm_spin_unlock(int* l) noexcept nogil
    Py_ssize_t fm_ld(Py_ssize_t* p) noexcept nogil
    void fm_st(Py_ssize_t* p, Py_ssize_t v) noexcept nogil
    int fm_ld_int(int* p) noexcept nogil
    void fm_st_int(int* p, int v) noexcept nogil
    void* fm_alloc_lines(size_t n, void** raw) noexcept nogil
