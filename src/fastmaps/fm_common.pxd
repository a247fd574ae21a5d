# Declarations of fm_common.h: what the three modules share at C level (see the header).
from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport int32_t, uint32_t, uint64_t

cdef extern from "fm_common.h":
    const bint FM_FREE_THREADED
    const bint FM_DEBUG
    void FM_ASSERT(bint cond) noexcept nogil
    bint FM_IS_STR(PyObject* o) noexcept nogil
    Py_hash_t FM_STR_HASH(PyObject* o) noexcept nogil
    void FM_PREFETCH_W(const void* p) noexcept nogil
    bint FM_TYPE_IS_GC(PyObject* o) noexcept nogil
    Py_hash_t fm_hash_of(object o) except -1   # hash() never returns -1
    bint fm_hash_is_builtin(PyObject* o, int depth) noexcept
    bint fm_dict_next(object d, Py_ssize_t* pos, PyObject** k, PyObject** v,
                      Py_hash_t* h) noexcept

    const int32_t FM_SLOT_EMPTY
    const int32_t FM_SLOT_DUMMY
    uint32_t fm_tag(Py_hash_t h, uint32_t posmask) noexcept nogil
    int32_t fm_slot(Py_hash_t h, uint32_t posmask, Py_ssize_t pos) noexcept nogil
    uint32_t fm_posmask_for(Py_ssize_t max_pos) noexcept nogil

    ctypedef int (*fm_visitproc "visitproc")(PyObject*, void*) noexcept
    ctypedef int (*fm_traverseproc "traverseproc")(PyObject*, fm_visitproc, void*) noexcept
    ctypedef int (*fm_inquiry "inquiry")(PyObject*) noexcept
    void fm_set_gc_slots(PyTypeObject* t, fm_traverseproc tr, fm_inquiry cl,
                         fm_traverseproc* old_tr, fm_inquiry* old_cl) noexcept
    void fm_set_mapping_flag(PyTypeObject* t) noexcept
    ctypedef PyObject* (*fm_iternextfunc "iternextfunc")(PyObject*) except? NULL
    void fm_set_iternext(PyTypeObject* t, fm_iternextfunc f) noexcept

    # debug builds: the checker schedule (see the header); 0 / no-ops otherwise
    bint fm_dbg_due(Py_ssize_t cost) noexcept nogil
    void fm_dbg_event() noexcept nogil
    uint64_t fm_dbg_checks() noexcept nogil
