/* fm_memory.h: HashMap's large-index memory: anonymous mappings (zeroed lazily by the OS,
   transparent huge pages on request) and populating pages ahead of use. Why large indexes
   are mapped and how they are released is in _hashmap.pyx, beside _index_alloc. */
#ifndef FM_MEMORY_H
#define FM_MEMORY_H

#include <stddef.h>

#if defined(_WIN32)
#define FM_HAVE_MMAP 0
static void *fm_map_zeroed(size_t n, int huge) { (void)n; (void)huge; return NULL; }
static void fm_unmap(void *p, size_t n) { (void)p; (void)n; }
#else
#include <sys/mman.h>
#define FM_HAVE_MMAP 1
#define FM_HUGE ((size_t)1 << 21)
/* huge: ask for transparent huge pages (aligned to 2 MiB). Only for indexes that a
   whole-map call (with_capacity, reserve, shrink_to_fit, copy) allocates: the first
   touch of a huge page zeroes 2 MiB at once, so a migration's new index, whose pages
   are all touched by its first few steps, would turn lazy zeroing into a pause. */
static void *fm_map_zeroed(size_t n, int huge) {
    size_t extra = huge && n >= FM_HUGE ? FM_HUGE : 0;
    char *p = (char *)mmap(NULL, n + extra, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == (char *)MAP_FAILED) return NULL;
    if (extra) {
        size_t head = (FM_HUGE - ((size_t)p & (FM_HUGE - 1))) & (FM_HUGE - 1);
        if (head) munmap(p, head);
        if (extra - head) munmap(p + head + n, extra - head);
        p += head;
#ifdef MADV_HUGEPAGE
        madvise(p, n, MADV_HUGEPAGE);
#endif
    }
    return p;
}
static void fm_unmap(void *p, size_t n) { munmap(p, n); }
#endif
/* Make the pages of [p, p + n) resident and writable now, so that later writes to them
   take no page fault. `mapped`: the range is page-aligned memory from fm_map_zeroed,
   which the kernel can populate in one call (Linux >= 5.14); otherwise, or if that
   fails, every page is touched by rewriting one int32 with its own value (the range
   may already hold slots: nothing is changed). */
static void fm_populate(void *p, size_t n, int mapped) {
    size_t i;
    volatile int *q;
#if FM_HAVE_MMAP && defined(MADV_POPULATE_WRITE)
    if (mapped && madvise(p, n, MADV_POPULATE_WRITE) == 0) return;
#else
    (void)mapped;
#endif
    for (i = 0; i < n; i += 4096) {
        q = (volatile int *)((char *)p + i);
        *q = *q;
    }
}

#endif /* FM_MEMORY_H */
