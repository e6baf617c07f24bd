/* backend_hugepages.c — the hugepages backend: slab regions on 2 MiB pages (MAP_HUGETLB, else transparent huge pages, else 4 KiB pages), everything else as the mmap backend. */
#include "hak_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
/* Ask for 2 MiB pages by size: where the default huge page is 1 GiB, a bare
 * MAP_HUGETLB would round a 2 MiB region up to a whole gigabyte. */
#define MAP_HUGE_2MB_FLAG (21 << MAP_HUGE_SHIFT)
#define HUGETLB_SYSFS "/sys/kernel/mm/hugepages/hugepages-2048kB/"
#define THP_SYSFS "/sys/kernel/mm/transparent_hugepage/enabled"
/* After a MAP_HUGETLB mmap failed (pool empty), try again only this much
 * later or once one of ours went back to the pool: a failed mmap is a
 * wasted syscall on every region otherwise. */
#define HUGETLB_RETRY_MS 1000
/* Slab regions (2 MiB each) a process holds before any gets a huge page:
 * 4 MiB, most of a small program's heap (see hk_os_reserve_slabs). */
#define SMALL_REGIONS 2

_Static_assert(HK_CHUNK_SIZE == (size_t)2 << 20, "a region is one 2 MiB huge page");

/* ---- what backs each slab region -------------------------------------------
 * hk_os_decommit must know whether a range lies in a MAP_HUGETLB region
 * (only whole huge pages can be dropped there) or a THP one; madvise cannot
 * tell reliably (on hugetlb a range starting on the page boundary but shorter
 * than the page "succeeds" and frees nothing). The region's own first word,
 * which Box 2 leaves to the backend (hak_backend.h), says which. */
enum { KIND_HUGETLB = 1, KIND_THP = 2, KIND_4K = 3 };
_Static_assert(HK_OS_REGION_WORD == sizeof(uint32_t), "the record is one word");

static uint32_t *record(uintptr_t region) { return (uint32_t *)region; }
static unsigned kind_of(uintptr_t region) { return __atomic_load_n(record(region), __ATOMIC_RELAXED); }
static void set_kind(uintptr_t region, unsigned kind) { __atomic_store_n(record(region), kind, __ATOMIC_RELAXED); }

/* THP -> 4 KiB for one region; true for the one caller that made the change
 * (small and medium purges may decommit parts of a region at the same time). */
static bool demote(uintptr_t region)
{
    uint32_t expect = KIND_THP;
    return __atomic_compare_exchange_n(record(region), &expect, KIND_4K, false, __ATOMIC_RELAXED,
                                       __ATOMIC_RELAXED);
}

/* ---- what the system offers ------------------------------------------------ */
/* The THP setting ("always", "madvise" or "never"), read once: a region's
 * pages are chosen when it is mapped, and the line hk_os_mode prints must
 * agree with what was done. */
enum { THP_UNKNOWN = 0, THP_ALWAYS, THP_MADVISE, THP_NEVER };
static int thp_mode;

/* Reads a small sysfs/procfs file into buf (NUL-terminated); no malloc. */
static bool read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return false;
    buf[n] = 0;
    return true;
}

static long read_long(const char *path)
{
    char buf[32];
    if (!read_small(path, buf, sizeof buf) || buf[0] < '0' || buf[0] > '9')
        return -1;
    long v = 0;
    for (const char *s = buf; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (*s - '0');
    return v;
}

static int thp(void)
{
    int m = __atomic_load_n(&thp_mode, __ATOMIC_RELAXED);
    if (m != THP_UNKNOWN)
        return m;
    char buf[64];
    m = THP_NEVER; /* no THP support compiled into the kernel: no such file */
    if (read_small(THP_SYSFS, buf, sizeof buf)) {
        if (strstr(buf, "[always]"))
            m = THP_ALWAYS;
        else if (strstr(buf, "[madvise]"))
            m = THP_MADVISE;
    }
    __atomic_store_n(&thp_mode, m, __ATOMIC_RELAXED);
    return m;
}

/* ---- slab regions ------------------------------------------------------------ */
static size_t hugetlb_regions, thp_regions, plain_regions; /* slab regions mapped now */
static size_t hugetlb_failures;                            /* MAP_HUGETLB refused */
static uint32_t hugetlb_failed_ms;
static int hugetlb_blocked; /* a recent MAP_HUGETLB failed: wait before retrying */

static void hugetlb_refused(void)
{
    __atomic_add_fetch(&hugetlb_failures, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&hugetlb_failed_ms, hk_now_ms(), __ATOMIC_RELAXED);
    __atomic_store_n(&hugetlb_blocked, 1, __ATOMIC_RELAXED);
}

static void *reserve_hugetlb(size_t size)
{
    if (__atomic_load_n(&hugetlb_blocked, __ATOMIC_RELAXED)) {
        if (hk_now_ms() - __atomic_load_n(&hugetlb_failed_ms, __ATOMIC_RELAXED) < HUGETLB_RETRY_MS)
            return NULL;
        __atomic_store_n(&hugetlb_blocked, 0, __ATOMIC_RELAXED);
    }
    /* A MAP_PRIVATE hugetlb page written after fork() is copied from the
     * pool's unreserved pages; with none left the writer gets SIGBUS (a
     * shell's subshell, say). So the pool's last eighth stays free for
     * those copies: hugetlb only while more than that is unreserved. */
    long nr = read_long(HUGETLB_SYSFS "nr_hugepages");
    long nfree = read_long(HUGETLB_SYSFS "free_hugepages");
    long resv = read_long(HUGETLB_SYSFS "resv_hugepages");
    long spare = nr / 8 > 1 ? nr / 8 : 1;
    if (nr <= 0 || nfree < 0 || resv < 0 || nfree - resv - (long)(size >> HK_CHUNK_SHIFT) < spare) {
        hugetlb_refused();
        return NULL;
    }
    /* No MAP_NORESERVE: the kernel reserves the pages now, so an empty pool
     * fails this mmap instead of raising SIGBUS at the first touch. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB_FLAG, -1, 0);
    if (p == MAP_FAILED) {
        hugetlb_refused();
        return NULL;
    }
    if ((uintptr_t)p & (HK_CHUNK_SIZE - 1)) {
        munmap(p, size); /* cannot happen for a 2 MiB hugetlb mapping, but be exact */
        return NULL;
    }
    set_kind((uintptr_t)p, KIND_HUGETLB);
    __atomic_add_fetch(&hugetlb_regions, size >> HK_CHUNK_SHIFT, __ATOMIC_RELAXED);
    return p;
}

/* ---- huge pages only where the heap is dense ---------------------------------
 * A region's 2 MiB page is resident as a whole, while on 4 KiB pages only what
 * was touched is: hakmem leaves much of its address space untouched (uncarved
 * slab tails, medium blocks written only at the front, the header page), and a
 * program of 64 medium blocks measured 23 times the mmap backend's peak RSS
 * with every region on a huge page. So regions start on 4 KiB pages, and now
 * and then one of them is a probe: at the next reservation (Box 2 asks for a
 * region when the others are full, so the probe has been carved by then) its
 * resident pages are counted with one mincore. While the last probe had at
 * least 7/8 of its pages resident, new regions get huge pages from their
 * first touch: MAP_HUGETLB, else THP opted in before the first fault, so one
 * fault takes the huge page (no 512 small faults, no collapse).
 *
 * How much of a huge page gets used cannot be measured (it is resident as a
 * whole), so probes continue while the heap is dense: one region in
 * max(PROBE_EVERY, held / PROBE_SHARE) stays on 4 KiB pages, and a heap that
 * turns sparse overpays for fewer regions than that. A dense probe is opted
 * into THP afterwards; khugepaged may collapse it in its own time. Nothing is
 * collapsed here: MADV_COLLAPSE copies 2 MiB (257 µs a call under strace,
 * 26 calls in one run of bench_frag) while Box 2 holds its region lock.
 * And only one region is counted per probe, never a list of candidates per
 * reservation: a medium-block loop that maps and unmaps regions all the time
 * made 16 mincore calls per region (3058 in one run of loop_32769_1048576). */
#define DENSE_PAGES (HK_CHUNK_SIZE / HK_OS_PAGE * 7 / 8)
#define PROBE_EVERY 4
#define PROBE_SHARE 8

static hk_lock_t probe_lock = HK_LOCK_INIT; /* the probe and the density state */
static uintptr_t probe;                      /* a 4 KiB region to count at the next reservation */
static size_t next_probe, reserved_n;
static bool heap_dense, measured;

static unsigned resident_pages(uintptr_t a)
{
    unsigned char v[HK_CHUNK_SIZE / HK_OS_PAGE];
    unsigned n = 0;
    if (mincore((void *)a, HK_CHUNK_SIZE, v) != 0)
        return 0;
    for (size_t i = 0; i < sizeof v; i++)
        n += v[i] & 1;
    return n;
}

/* Caller holds probe_lock: counts the probe, and opts a dense one into THP
 * ("never" is the administrator's word; under "always" this undoes the
 * MADV_NOHUGEPAGE every 4 KiB region gets). */
static void measure_probe(void)
{
    uintptr_t a = probe;
    probe = 0;
    if (!measured)
        next_probe = reserved_n + PROBE_EVERY;
    measured = true;
    heap_dense = resident_pages(a) >= DENSE_PAGES;
    if (heap_dense && thp() != THP_NEVER && madvise((void *)a, HK_CHUNK_SIZE, MADV_HUGEPAGE) == 0) {
        set_kind(a, KIND_THP);
        __atomic_sub_fetch(&plain_regions, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&thp_regions, 1, __ATOMIC_RELAXED);
    }
}

void *hk_os_reserve_slabs(void)
{
    const size_t size = HK_CHUNK_SIZE;
    hk_lock(&probe_lock);
    /* Small programs do not pay: while a process holds fewer than
     * SMALL_REGIONS regions nothing is promoted, so a program that fits in
     * them uses exactly what it would with the mmap backend. */
    size_t held = __atomic_load_n(&hugetlb_regions, __ATOMIC_RELAXED) +
                  __atomic_load_n(&thp_regions, __ATOMIC_RELAXED) +
                  __atomic_load_n(&plain_regions, __ATOMIC_RELAXED);
    bool grown = held >= SMALL_REGIONS;
    if (grown && probe)
        measure_probe();
    /* Until the first count, every region is a probe: the first region a
     * grown heap counts is then the one filled last. */
    bool probing = !measured || ++reserved_n >= next_probe;
    if (probing && measured) {
        size_t every = held / PROBE_SHARE > PROBE_EVERY ? held / PROBE_SHARE : PROBE_EVERY;
        next_probe = reserved_n + every;
    }
    bool huge = grown && heap_dense && !probing;
    void *p = huge ? reserve_hugetlb(size) : NULL;
    if (!p && (p = hk_os_reserve(size, HK_CHUNK_SIZE, true))) {
        if (huge && thp() != THP_NEVER && madvise(p, size, MADV_HUGEPAGE) == 0) {
            set_kind((uintptr_t)p, KIND_THP);
            __atomic_add_fetch(&thp_regions, 1, __ATOMIC_RELAXED);
        } else {
            /* Under THP "always" the first touch would take a huge page:
             * the dense rule holds in every mode, as with the mmap backend.
             * The record is written after, as that first touch. */
            if (thp() == THP_ALWAYS)
                madvise(p, size, MADV_NOHUGEPAGE);
            set_kind((uintptr_t)p, KIND_4K);
            __atomic_add_fetch(&plain_regions, 1, __ATOMIC_RELAXED);
            if (probing)
                probe = (uintptr_t)p;
        }
    }
    hk_unlock(&probe_lock);
    return p;
}

/* The range lies in one region and never covers its first page (Box 2's
 * header, with the record): a MAP_HUGETLB region's page never goes back
 * whole here. */
void hk_os_decommit(void *p, size_t size)
{
    uintptr_t region = (uintptr_t)p & ~(uintptr_t)(HK_CHUNK_SIZE - 1);
    unsigned kind = kind_of(region);
    if (kind == KIND_HUGETLB) {
        /* Part of a huge page cannot go back (the kernel refuses a
         * MADV_DONTNEED that does not cover the whole page). Zero it, so it
         * reads as zero like decommitted memory: the layer above then skips
         * zeroing it again, and the kernel would have spent the same memset
         * at the next fault anyway. */
        memset(p, 0, size);
        return;
    }
    /* MADV_DONTNEED, not MADV_FREE: RSS must drop now. */
    madvise(p, size, MADV_DONTNEED);
    if (kind == KIND_THP && demote(region)) {
        /* The huge page was split to free part of it. Left opted in,
         * khugepaged (max_ptes_none 511 by default) would collapse the
         * region again and fault the freed part back in: the region stays
         * on 4 KiB pages until it is released. */
        madvise((void *)region, HK_CHUNK_SIZE, MADV_NOHUGEPAGE);
        __atomic_sub_fetch(&thp_regions, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&plain_regions, 1, __ATOMIC_RELAXED);
    }
}

void hk_os_release_slabs(void *region)
{
    uintptr_t a = (uintptr_t)region;
    unsigned kind = kind_of(a);
    if (kind == KIND_4K) { /* never count (or opt in) what may be a large block soon */
        hk_lock(&probe_lock);
        if (probe == a)
            probe = 0;
        hk_unlock(&probe_lock);
    }
    if (kind == KIND_HUGETLB) {
        __atomic_sub_fetch(&hugetlb_regions, 1, __ATOMIC_RELAXED);
        /* Our page goes back to the pool: the next region may use it. */
        __atomic_store_n(&hugetlb_blocked, 0, __ATOMIC_RELAXED);
    } else {
        __atomic_sub_fetch(kind == KIND_THP ? &thp_regions : &plain_regions, 1, __ATOMIC_RELAXED);
    }
    hk_os_release(region, HK_CHUNK_SIZE);
}

/* ---- the mode line --------------------------------------------------------- */
static hk_lock_t mode_lock = HK_LOCK_INIT;
static char mode_line[256];

static char *put(char *at, const char *s)
{
    while (*s && at < mode_line + sizeof mode_line - 1)
        *at++ = *s++;
    *at = 0;
    return at;
}

static char *put_num(char *at, size_t v)
{
    char digits[24];
    int n = 0;
    do
        digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < (int)sizeof digits);
    char s[24];
    for (int i = 0; i < n; i++)
        s[i] = digits[n - 1 - i];
    s[n] = 0;
    return put(at, s);
}

/* What a region gets when MAP_HUGETLB is not used. */
static char *put_fallback(char *at)
{
    switch (thp()) {
    case THP_ALWAYS:
        return put(at, "transparent huge pages (always) for dense regions");
    case THP_MADVISE:
        return put(at, "transparent huge pages (madvise) for dense regions");
    default:
        return put(at, "4 KiB pages: THP is 'never'");
    }
}

/* Rebuilt at each call from the sysfs counts and what this process mapped:
 * which pages the slab regions get, and why. */
const char *hk_os_mode(void)
{
    long nr = read_long(HUGETLB_SYSFS "nr_hugepages");
    long nfree = read_long(HUGETLB_SYSFS "free_hugepages");
    size_t huge = __atomic_load_n(&hugetlb_regions, __ATOMIC_RELAXED);
    size_t fails = __atomic_load_n(&hugetlb_failures, __ATOMIC_RELAXED);
    size_t transp = __atomic_load_n(&thp_regions, __ATOMIC_RELAXED);
    size_t plain = __atomic_load_n(&plain_regions, __ATOMIC_RELAXED);
    hk_lock(&mode_lock);
    char *at = mode_line;
    if (huge || (nr > 0 && !fails)) {
        at = put(at, "2 MiB MAP_HUGETLB pages (vm.nr_hugepages=");
        at = put_num(at, nr > 0 ? (size_t)nr : 0);
        at = put(at, ") while the heap is dense");
        if (fails) {
            at = put(at, "; ");
            at = put_fallback(at);
            at = put(at, " when they ran out");
        }
    } else {
        at = put_fallback(at);
        if (nr < 0)
            at = put(at, ": this kernel has no 2 MiB hugetlb pages");
        else if (nr == 0)
            at = put(at, ": no MAP_HUGETLB pages reserved (vm.nr_hugepages=0)");
        else {
            at = put(at, ": MAP_HUGETLB refused (vm.nr_hugepages=");
            at = put_num(at, (size_t)nr);
            at = put(at, ", free ");
            at = put_num(at, nfree > 0 ? (size_t)nfree : 0);
            at = put(at, ")");
        }
    }
    if (huge + transp + plain) {
        at = put(at, "; regions now: ");
        at = put_num(at, huge);
        at = put(at, " hugetlb, ");
        at = put_num(at, transp);
        at = put(at, " opted into THP, ");
        at = put_num(at, plain);
        at = put(at, " 4 KiB");
    }
    hk_unlock(&mode_lock);
    return mode_line;
}

void hk_os_fork(int phase)
{
    if (phase == HK_FORK_PREPARE) {
        hk_lock_fork(&probe_lock, phase);
        hk_lock_fork(&mode_lock, phase);
    } else {
        hk_lock_fork(&mode_lock, phase);
        hk_lock_fork(&probe_lock, phase);
    }
}
