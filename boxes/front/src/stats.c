/* stats.c — hak_stats_get and hak_stats_print: a snapshot of every box's counters, gathered without allocating. */
#include "hakmem.h"
#include "front_internal.h"
#include "hak_backend.h"
#include "hak_policy.h"
#include "hak_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* The value in kB of "Key:" in /proc/self/status, in bytes (0 if absent). */
static uint64_t status_field(const char *buf, const char *key)
{
    size_t k = strlen(key);
    for (const char *s = buf; (s = strstr(s, key)) != NULL; s += k) {
        if (s != buf && s[-1] != '\n')
            continue;
        uint64_t v = 0;
        for (s += k; *s == ' ' || *s == '\t'; s++)
            ;
        for (; *s >= '0' && *s <= '9'; s++)
            v = v * 10 + (uint64_t)(*s - '0');
        return v << 10;
    }
    return 0;
}

static void read_status(struct hak_stats *st)
{
    char buf[8192];
    size_t n = 0;
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    for (ssize_t r; n < sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0;)
        n += (size_t)r;
    close(fd);
    buf[n] = 0;
    st->rss = status_field(buf, "VmRSS:");
    st->peak_rss = status_field(buf, "VmHWM:");
    st->hugetlb = status_field(buf, "HugetlbPages:");
}

static hk_lock_t scratch_lock, print_lock;

/* Not held across fork (a stats call may take long, and nothing waits on
 * it): in the child, a lock held by a thread that is gone is freed. */
void hk_stats_fork(int phase)
{
    if (phase == HK_FORK_CHILD) {
        hk_lock_reset(&scratch_lock);
        hk_lock_reset(&print_lock);
    }
}

static uint64_t sub0(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

static struct hak_stats_class *row(struct hak_stats *st, int kind, const hk_refill_class_stats_t *rs)
{
    struct hak_stats_class *r = &st->cls[st->nclass++];
    r->kind = kind;
    r->block_size = rs->size;
    r->refills = rs->refills;
    r->flushes = rs->flushes;
    r->central_blocks = rs->central;
    r->slab_free_blocks = rs->slab_free;
    r->slabs = rs->slabs;
    st->central += rs->central * rs->size;
    st->slab_free += rs->slab_free * rs->size;
    return r;
}

/* A class whose blocks out of Box 2's hands are live or cached: frees need
 * no counting. allocs counts the blocks handed to the program. */
static void split_out(struct hak_stats *st, struct hak_stats_class *r, uint64_t out, uint64_t cached,
                      uint64_t allocs)
{
    r->cached_blocks = cached < out ? cached : out;
    r->live_blocks = out - r->cached_blocks;
    r->allocs = allocs > r->live_blocks ? allocs : r->live_blocks;
    r->frees = r->allocs - r->live_blocks;
    st->thread_cached += r->cached_blocks * r->block_size;
    st->live += r->live_blocks * r->block_size;
}

int hak_stats_get(struct hak_stats *st)
{
    /* Each version appends fields: a caller's struct ends where its version's does. */
    size_t size = st->version == 1   ? offsetof(struct hak_stats, prof_mapped)
                  : st->version == 2 ? offsetof(struct hak_stats, guard_mapped)
                  : st->version == 3 ? offsetof(struct hak_stats, prof_replayed)
                  : st->version == 4 ? sizeof *st
                                     : 0;
    if (!size) {
        errno = EINVAL;
        return -1;
    }
    memset(&st->nclass, 0, size - offsetof(struct hak_stats, nclass));
    static uint64_t allocs[HK_NCLASS], cached[HK_NCLASS];
    hk_lock(&scratch_lock); /* the arrays are too big for a thread's stack budget */
    st->threads = hk_tls_stats(allocs, cached);
    /* Small classes: Box 1 counts allocations. */
    for (unsigned c = 1; c < HK_NCLASS; c++) {
        hk_refill_class_stats_t rs;
        hk_refill_class_stats(c, &rs);
        struct hak_stats_class *r = row(st, HAK_STATS_SMALL, &rs);
        split_out(st, r, rs.out > 0 ? (uint64_t)rs.out : 0, cached[c], allocs[c]);
        if (HK_POOL_TLS || c <= HK_TINY_LAST) { /* else the shared pool: no cache */
            hk_limits_t l = hk_policy_limits(c);
            r->cap = l.cap;
            r->batch = l.batch;
        }
    }
    hk_unlock(&scratch_lock);
    /* Medium classes: Box 2 counts its own traffic; a block a thread holds
     * is still out of Box 2's hands, and a cache hit never reaches it. */
    uint64_t mhits[HK_MEDIUM_HELD_CLASSES], mheld[HK_MEDIUM_HELD_CLASSES];
    hk_tls_medium_stats(mhits, mheld);
    for (unsigned m = 0; m < HK_MEDIUM_CLASSES; m++) {
        hk_refill_class_stats_t rs;
        hk_medium_class_stats(m, &rs);
        struct hak_stats_class *r = row(st, HAK_STATS_MEDIUM, &rs);
        bool held = m < HK_MEDIUM_HELD_CLASSES;
        split_out(st, r, sub0(rs.allocs, rs.frees), held ? mheld[m] : 0, rs.allocs + (held ? mhits[m] : 0));
    }
    hk_large_stats_t lst;
    hk_large_stats(&lst);
    struct hak_stats_class *r = &st->cls[st->nclass++];
    *r = (struct hak_stats_class){.kind = HAK_STATS_LARGE, .allocs = lst.allocs, .frees = lst.frees,
                                  .refills = lst.maps, .flushes = lst.unmaps,
                                  .live_blocks = lst.live_count, .cached_blocks = lst.cached_count};
    st->live += lst.live_bytes;

    hk_refill_stats_t rst;
    hk_region_stats(&rst); /* the classes were walked above */
    hk_prof_stats_t pst;
    hk_prof_stats(&pst);
    hk_guard_stats_t gst;
    hk_guard_stats(&gst);
    st->mapped = rst.region_bytes + lst.live_bytes + lst.cached_bytes + pst.mapped + gst.mapped;
    if (st->version >= 2) {
        st->prof_mapped = pst.mapped;
        st->prof_live = pst.live;
        st->prof_dropped = pst.dropped;
    }
    if (st->version >= 3) {
        st->guard_mapped = gst.mapped;
        st->guard_live = gst.live;
        st->guard_allocs = gst.allocs;
        st->guard_skipped = gst.skipped;
    }
    if (st->version >= 4)
        st->prof_replayed = pst.replayed;
    st->returned = __atomic_load_n(&hk_bytes_returned, __ATOMIC_RELAXED);
    strncpy(st->backend, hk_os_mode(), sizeof st->backend - 1);
    read_status(st);
    return 0;
}

static double mib(uint64_t b) { return (double)b / (1 << 20); }

void hak_stats_print(FILE *out)
{
    static struct hak_stats st; /* 12 KB: kept off the caller's stack */
    hk_lock(&print_lock);
    st.version = HAK_STATS_VERSION;
    hak_stats_get(&st);
    /* The whole mode line: st.backend keeps only its first 95 bytes. */
    fprintf(out, "hakmem %s\n  pages: %s\n", hak_version(), hk_os_mode());
    fprintf(out, "  %-6s %8s %12s %12s %9s %9s %9s %7s %7s %8s %6s %5s %5s\n", "kind", "size", "allocs",
            "frees", "refills", "flushes", "live", "cached", "central", "slabfree", "slabs", "cap",
            "batch");
    static const char *kinds[] = {"", "small", "medium", "large"};
    for (unsigned i = 0; i < st.nclass; i++) {
        const struct hak_stats_class *r = &st.cls[i];
        if (!r->allocs && !r->slabs && !r->cached_blocks && !r->central_blocks)
            continue;
        fprintf(out, "  %-6s %8zu %12llu %12llu %9llu %9llu %9llu %7llu %7llu %8llu %6llu", kinds[r->kind],
                r->block_size, (unsigned long long)r->allocs, (unsigned long long)r->frees,
                (unsigned long long)r->refills, (unsigned long long)r->flushes,
                (unsigned long long)r->live_blocks, (unsigned long long)r->cached_blocks,
                (unsigned long long)r->central_blocks, (unsigned long long)r->slab_free_blocks,
                (unsigned long long)r->slabs);
        if (r->kind == HAK_STATS_SMALL)
            fprintf(out, " %5u %5u\n", r->cap, r->batch);
        else
            fprintf(out, " %5s %5s\n", "-", "-");
    }
    fprintf(out,
            "  live %.1f MiB, thread caches %.1f MiB, central %.1f MiB, free in slabs %.1f MiB;"
            " threads %u\n"
            "  mapped %.1f MiB, returned to the OS %.1f MiB since start; RSS %.1f MiB,"
            " peak %.1f MiB, hugetlb %.1f MiB\n",
            mib(st.live), mib(st.thread_cached), mib(st.central), mib(st.slab_free), st.threads,
            mib(st.mapped), mib(st.returned), mib(st.rss), mib(st.peak_rss), mib(st.hugetlb));
    if (hk_prof_on)
        fprintf(out, "  heap profiler: %llu sampled blocks live, tables %.1f MiB, %llu samples dropped, %llu stacks replayed\n",
                (unsigned long long)st.prof_live, mib(st.prof_mapped), (unsigned long long)st.prof_dropped,
                (unsigned long long)st.prof_replayed);
    if (hk_guard_on)
        fprintf(out, "  guarded sampling: %llu blocks live, %llu guarded since start, %llu not (every slot in use), "
                     "%.1f MiB mapped\n",
                (unsigned long long)st.guard_live, (unsigned long long)st.guard_allocs,
                (unsigned long long)st.guard_skipped, mib(st.guard_mapped));
    fflush(out);
    hk_unlock(&print_lock);
}
