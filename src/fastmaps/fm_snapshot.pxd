# Declarations of fm_snapshot.h (SnapshotMap's C engine) for _snapshot.pyx.
from cpython.object cimport PyObject
from fastmaps.fm_common cimport *
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t

cdef extern from "fm_snapshot.h":
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
        fm_node* log
        fm_node* idx
        Py_ssize_t n
        Py_ssize_t live
        Py_ssize_t fill
        size_t mask
        uint32_t idmask
        int log_depth
        int idx_depth
        fm_node* old_idx
        size_t old_mask
        uint32_t old_idmask
        int old_depth
        Py_ssize_t mig_w
        Py_ssize_t mig_r
        Py_ssize_t old_end
    ctypedef struct fm_pending:
        Py_ssize_t n

    int FM_EBITS
    int FM_ECAP
    int FM_IBITS
    int FM_ICAP
    int FM_FBITS
    int FM_FAN
    int FM_INNER
    int FM_ELEAF
    int FM_ILEAF
    fm_node** fm_kids(fm_node*) nogil
    fm_entry* fm_ents(fm_node*) nogil
    int32_t* fm_slots(fm_node*) nogil
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
    int fm_visit_own(fm_node*, fm_visitproc, void*) noexcept
    int fm_visit_shared(fm_node*, int, fm_visitproc, void*) noexcept
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
    int fm_family_visit(fm_family*, fm_visitproc, void*) noexcept

    void fm_incref "Py_INCREF"(PyObject*)
    void fm_decref "Py_DECREF"(PyObject*)
    void fm_xdecref "Py_XDECREF"(PyObject*)
    Py_ssize_t fm_refcnt "Py_REFCNT"(object)
    Py_ssize_t fm_refcnt_ptr "Py_REFCNT"(PyObject*) nogil
    int fm_eq "PyObject_RichCompareBool"(PyObject*, PyObject*, int) except -1
    int Py_ReprEnter(object) except -1
    void Py_ReprLeave(object)

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
    PyObject* fm_tuple_item "PyTuple_GET_ITEM"(object, Py_ssize_t) nogil
    Py_ssize_t fm_tuple_size "PyTuple_GET_SIZE"(object) nogil
