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
