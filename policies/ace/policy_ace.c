/* policy_ace.c — Box 3 (ACE): slow-path events into fixed rings, and a learner that publishes each class's cache cap and refill count from them. */
#include "policy_internal.h"

#include <pthread.h>

/* docs/ace.md explains every number here. */
#define RING_BITS 6
#define RINGS (1u << RING_BITS) /* threads hash onto rings; a shared ring only drops more */
#define RING_SIZE 256     /* events per ring (power of two) */
#define LEARN_AT 128      /* a producer runs the learner once its ring holds this many */
#define EVIDENCE 8        /* refills + flushes + exits of a class before it is judged */
#define GROW_MAX 4        /* growth stops at 4x the fixed cap and batch, */
#define GROW_BYTES (64u << 10) /* and at 64 KiB of blocks a class (unless fixed is more) */
#define SUSTAIN_MS 100    /* a consumer this old is a pipeline, not a program tearing down */
#define SETTLED 2         /* short-lived verdicts in a row before a class hears fewer rings */
#define HEARD_RINGS 4     /* how many of the RINGS a settled class hears in a pass */

/* One ring: several threads may hash to it, so a producer takes `busy` with
 * one exchange and drops its event if another producer holds it (contract
 * A: nobody waits). head is written under busy, tail only by the learner. */
typedef struct hk_ace_ring {
    int busy;
    uint32_t head, tail;
    uint64_t kept[4];    /* events written, by kind (under busy) */
    uint64_t dropped[4]; /* events dropped, by kind (atomic adds: no busy) */
    uint64_t skipped[4]; /* events of settled classes not heard (atomic adds) */
    uint32_t ev[RING_SIZE];
} __attribute__((aligned(64))) hk_ace_ring_t;

static hk_ace_ring_t rings[RINGS];
/* With HAKMEM_LEARNING=0 events are only counted, for A/B comparisons. */
static uint64_t counted_off[4];

/* The learner's own state (contract C: fixed buffers, no malloc), guarded
 * by learner_busy, which a would-be second learner finds taken and leaves. */
static int learner_busy;
static uint8_t last_kind[RINGS][HK_NCLASS]; /* last event of a class in a ring */
static uint64_t since_drain[RINGS][2];       /* classes a ring saw since its last drain */
static struct {
    uint32_t refills, flushes, turns, drains; /* since the class was last judged */
    uint32_t rruns, fruns;            /* a refill after a refill (flush after flush), same ring */
    uint32_t consumer_since;          /* ms (| 1) since frees alone were seen */
} win[HK_NCLASS];
static uint8_t touched[HK_NCLASS], touched_list[HK_NCLASS]; /* classes seen in this pass */
/* Short-lived verdicts in a row, per class. From SETTLED on, the class
 * hears only HEARD_RINGS rings, other ones each pass: deaf[c] has a bit set
 * for every ring whose events of class c are skipped (counted, not written);
 * producers read it relaxed, 0 is every ring heard. Indexed by any 7-bit
 * class so that the producer needs no bounds check. */
static uint8_t settled[HK_NCLASS];
static uint64_t deaf[128];
_Static_assert(RINGS == 64, "deaf[] has one bit per ring");
static unsigned pass_no;
static uint64_t decisions, learns;

/* Published parameters: cap << 16 | batch, one word so that a reader never
 * pairs a new cap with an old batch; 0 means the fixed table. */
static uint32_t pub[HK_NCLASS];
static uint32_t fixed_w[HK_NCLASS]; /* the fixed table in the same form */

static bool learning = true, trace;

hk_limits_t hk_policy_limits(unsigned c)
{
    uint32_t w = __atomic_load_n(&pub[c], __ATOMIC_RELAXED);
    if (!w)
        return (hk_limits_t){hk_policy_fixed_cap(c), hk_policy_fixed_batch(c)};
    return (hk_limits_t){w >> 16, w & 0xffff};
}

/* Runs in hk_policy_configure, after the mid budget is set: from here on
 * every class has a published word, the fixed table's until something is
 * learned (the words are the fixed table kept as numbers, not recomputed
 * per call). */
void hk_ace_configure(bool on, bool tr)
{
    learning = on;
    trace = tr;
    for (unsigned c = 1; c < HK_NCLASS; c++) {
        fixed_w[c] = (uint32_t)hk_policy_fixed_cap(c) << 16 | hk_policy_fixed_batch(c);
        __atomic_store_n(&pub[c], fixed_w[c], __ATOMIC_RELAXED);
    }
}

void hk_policy_fork(int phase)
{
    if (phase != HK_FORK_CHILD)
        return; /* nobody waits on these flags: a producer drops, a learner leaves */
    for (unsigned i = 0; i < RINGS; i++)
        rings[i].busy = 0;
    learner_busy = 0;
}

/* Tests (tests/ace_policy.c): while held, the learner does not run (a
 * learner far slower than the producers), so the rings fill and drop. */
void hk_ace_hold_learner(bool hold);
void hk_ace_hold_learner(bool hold)
{
    if (hold)
        while (__atomic_exchange_n(&learner_busy, 1, __ATOMIC_ACQUIRE))
            ;
    else
        __atomic_store_n(&learner_busy, 0, __ATOMIC_RELEASE);
}

static void count(uint64_t *x) { __atomic_fetch_add(x, 1, __ATOMIC_RELAXED); }
static void learn_locked(uint32_t now_ms);

/* Writes one event into ring r, or drops and counts it (contract A). */
static __attribute__((noinline)) void record(hk_ace_ring_t *r, unsigned kind, unsigned c, unsigned n)
{
    if (__atomic_exchange_n(&r->busy, 1, __ATOMIC_ACQUIRE)) {
        count(&r->dropped[kind]);
        return;
    }
    uint32_t head = r->head, tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
    if (head - tail >= RING_SIZE) {
        __atomic_store_n(&r->busy, 0, __ATOMIC_RELEASE);
        count(&r->dropped[kind]);
        return;
    }
    r->ev[head % RING_SIZE] = kind | c << 2 | (n > 0x7fffff ? 0x7fffff : n) << 9;
    __atomic_store_n(&r->head, head + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&r->kept[kind], r->kept[kind] + 1, __ATOMIC_RELAXED); /* a plain store */
    __atomic_store_n(&r->busy, 0, __ATOMIC_RELEASE);
    /* Half full: learn now, unless a learner already runs. */
    if (head + 1 - tail >= LEARN_AT && !__atomic_exchange_n(&learner_busy, 1, __ATOMIC_ACQUIRE))
        learn_locked(hk_now_ms());
}

/* The thread pointer spreads threads over the rings without any TLS of
 * Box 3's own. Read directly where the compiler can (it is what glibc's
 * pthread_self returns on x86-64): a call would make the event's skip path
 * save registers around it. */
static uint64_t thread_hash(void)
{
#if defined(__has_builtin)
#if __has_builtin(__builtin_thread_pointer)
#define HK_ACE_TP 1
    uintptr_t t = (uintptr_t)__builtin_thread_pointer();
#endif
#endif
#ifndef HK_ACE_TP
    uintptr_t t = (uintptr_t)pthread_self();
#endif
    return (uint64_t)t * 0x9e3779b97f4a7c15ull;
}

void hk_policy_event(unsigned kind, unsigned c, unsigned n)
{
    kind &= 3;
    if (!learning) {
        count(&counted_off[kind]);
        return;
    }
    unsigned ring = (unsigned)(thread_hash() >> (64 - RING_BITS));
    /* A class settled on short-lived threads makes an event per refill of
     * thread lives that each serve a few mallocs: writing and reading them
     * all cost the churn workload 12% of its instructions to learn nothing
     * new. A drain is never skipped: it is what tells whether the threads
     * still die young. */
    if (kind != HK_EV_DRAIN && (__atomic_load_n(&deaf[c & 127], __ATOMIC_RELAXED) >> ring & 1)) {
        count(&rings[ring].skipped[kind]);
        return;
    }
    record(&rings[ring], kind, c, n);
}

/* ---- trace: one line per decision, formatted without malloc ---------- */

static void trace_decision(unsigned c, uint32_t old, uint32_t now, const char *why)
{
    hk_line_t l = {.n = 0};
    hk_line_kv(&l, "ace: class ", c);
    hk_line_kv(&l, " (", hk_class_size[c]);
    hk_line_kv(&l, " B) cap ", old >> 16);
    hk_line_kv(&l, " -> ", now >> 16);
    hk_line_kv(&l, ", batch ", old & 0xffff);
    hk_line_kv(&l, " -> ", now & 0xffff);
    hk_line_str(&l, ": ");
    hk_line_str(&l, why);
    hk_line_kv(&l, " (refills ", win[c].refills);
    hk_line_kv(&l, ", flushes ", win[c].flushes);
    hk_line_kv(&l, ", turns ", win[c].turns);
    hk_line_kv(&l, ", exits ", win[c].drains);
    hk_line_kv(&l, ", runs ", win[c].rruns);
    hk_line_kv(&l, "/", win[c].fruns);
    hk_line_str(&l, ")");
    hk_line_log(&l);
}

/* ---- the learner -------------------------------------------------------- */

/* Judges class c from its window: refills, flushes, turns (a refill right
 * after a flush in the same ring, or the reverse: a list went from full to
 * empty or back), runs (the same kind twice in a ring) and exits.
 * docs/ace.md, "The learner's rules", gives the reasoning behind each. */
static void judge(unsigned c, uint32_t now)
{
    unsigned r = win[c].refills, f = win[c].flushes, t = win[c].turns, d = win[c].drains;
    unsigned fcap = fixed_w[c] >> 16, fbatch = fixed_w[c] & 0xffff;
    unsigned most = hk_umax(fcap, hk_umin(hk_umin(GROW_MAX * fcap, GROW_BYTES / hk_class_size[c]), 0xffff));
    uint32_t old = __atomic_load_n(&pub[c], __ATOMIC_RELAXED);
    unsigned cap = old >> 16, batch = old & 0xffff;
    if (!fixed_w[c]) /* an event from a nested malloc during hk_init */
        return;
    unsigned ncap = cap, nbatch = batch;
    unsigned grown = hk_umax(hk_umin(hk_umax(batch, fbatch) * 2, most / 2), 1); /* a batch doubled */
    const char *why = NULL;
    bool short_lived = d * 4 >= r + f;
    if (short_lived) {
        /* Threads exit (or go idle) holding what they refilled: they live
         * too short to use a batch, so a smaller one is carved, touched and
         * handed back for nothing less often. */
        win[c].consumer_since = 0;
        nbatch = hk_umax(fbatch / 2, 2);
        ncap = fcap;
        why = "short-lived threads";
    } else if (t * 4 >= r + f) {
        /* Churn: the list swings between empty and full, and a random walk
         * needs ~(cap/2)^2 steps to reach either end: doubling the cap cuts
         * those misses by four. */
        win[c].consumer_since = 0;
        ncap = hk_umin(hk_umax(cap, fcap) * 2, most);
        nbatch = ncap / 2;
        why = "churn";
    } else if (win[c].rruns * 4 >= r + f && win[c].fruns * 4 >= r + f) {
        /* A pipeline: some threads only refill the class while others only
         * flush it, blocks passing between them through the central
         * exchange in batches. A bigger batch halves both sides' trips. */
        win[c].consumer_since = 0;
        nbatch = grown;
        ncap = hk_umax(fcap, nbatch);
        why = "pipeline";
    } else if (f >= 4 * r) {
        /* Frees alone: the cache is only a waiting room, and whatever it
         * holds when the thread stops pins slabs for good (an idle thread's
         * cache cannot be reached). Keep little while this may be a program
         * tearing down its data; a consumer that keeps going is a pipeline,
         * where the flush count matters: the fixed batch again. */
        if (!win[c].consumer_since)
            win[c].consumer_since = now | 1;
        bool sustained = (now | 1) - win[c].consumer_since >= SUSTAIN_MS;
        ncap = nbatch = sustained ? fbatch : hk_umax(fbatch / 2, 2);
        why = sustained ? "steady consumer" : "consumer";
    } else if (r >= 4 * f && d == 0) {
        /* Mallocs alone, by threads that stay: each refill serves `batch`
         * mallocs, so a bigger batch means fewer refills; the blocks are
         * used at once. */
        win[c].consumer_since = 0;
        nbatch = grown;
        ncap = hk_umax(hk_umax(cap, fcap), nbatch);
        why = "producer";
    } else {
        win[c].consumer_since = 0;
    }
    /* Any other verdict makes every ring heard again at once. */
    settled[c] = short_lived ? (uint8_t)hk_umin(settled[c] + 1u, SETTLED) : 0;
    if (!short_lived)
        __atomic_store_n(&deaf[c], 0, __ATOMIC_RELAXED);
    uint32_t neww = (uint32_t)ncap << 16 | nbatch;
    if (why && neww != old) {
        __atomic_store_n(&pub[c], neww, __ATOMIC_RELAXED);
        count(&decisions);
        if (trace)
            trace_decision(c, old, neww, why);
    }
    win[c].refills = win[c].flushes = win[c].turns = win[c].drains = win[c].rruns = win[c].fruns = 0;
}

void hk_policy_learn(uint32_t now_ms)
{
    if (learning && !__atomic_exchange_n(&learner_busy, 1, __ATOMIC_ACQUIRE))
        learn_locked(now_ms);
}

static unsigned touch(unsigned c, unsigned ntouched)
{
    if (!touched[c]) {
        touched[c] = 1;
        touched_list[ntouched++] = (uint8_t)c;
    }
    return ntouched;
}

/* Caller holds learner_busy; releases it. */
static void learn_locked(uint32_t now_ms)
{
    unsigned ntouched = 0;
    for (unsigned i = 0; i < RINGS; i++) {
        hk_ace_ring_t *r = &rings[i];
        uint32_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE), tail = r->tail;
        for (; tail != head; tail++) {
            uint32_t e = r->ev[tail % RING_SIZE];
            unsigned kind = e & 3, c = (e >> 2) & 0x7f;
            if (kind == HK_EV_DRAIN) {
                /* Every class this thread used since its last drain was
                 * given back: those lists are empty again. */
                for (unsigned w = 0; w < 2; w++)
                    for (uint64_t m = since_drain[i][w]; m; m &= m - 1) {
                        unsigned d = w * 64 + (unsigned)__builtin_ctzll(m);
                        win[d].drains++;
                        last_kind[i][d] = 0;
                        ntouched = touch(d, ntouched);
                    }
                since_drain[i][0] = since_drain[i][1] = 0;
                continue;
            }
            if (c >= HK_NCLASS)
                continue;
            ntouched = touch(c, ntouched);
            since_drain[i][c >> 6] |= 1ull << (c & 63);
            if (kind == HK_EV_REFILL)
                win[c].refills++;
            else
                win[c].flushes++;
            if (last_kind[i][c] && last_kind[i][c] != kind)
                win[c].turns++;
            else if (last_kind[i][c] == HK_EV_REFILL)
                win[c].rruns++;
            else if (last_kind[i][c] == HK_EV_FLUSH)
                win[c].fruns++;
            last_kind[i][c] = (uint8_t)kind;
        }
        __atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
    }
    /* Only classes with new events: a pass costs what it reads. */
    for (unsigned i = 0; i < ntouched; i++) {
        unsigned c = touched_list[i];
        touched[c] = 0;
        if (win[c].refills + win[c].flushes + win[c].drains >= EVIDENCE)
            judge(c, now_ms);
    }
    /* Whole rings are heard, not every k-th event: a heard thread's
     * refills, flushes and exit all count, so the ratios the rules compare
     * stay those of whole thread lives. Other rings next pass, so that no
     * thread goes unheard for long. */
    pass_no++;
    for (unsigned c = 1; c < HK_NCLASS; c++)
        if (settled[c] >= SETTLED) {
            unsigned at = (pass_no * HEARD_RINGS + c * 7) % RINGS;
            uint64_t heard = ((1ull << HEARD_RINGS) - 1) << at | ((1ull << HEARD_RINGS) - 1) >> ((RINGS - at) % RINGS);
            __atomic_store_n(&deaf[c], ~heard, __ATOMIC_RELAXED);
        }
    count(&learns);
    __atomic_store_n(&learner_busy, 0, __ATOMIC_RELEASE);
}

void hk_ace_stats(hk_ace_stats_t *st)
{
    *st = (hk_ace_stats_t){0};
    uint64_t all[4];
    for (unsigned k = 0; k < 4; k++) {
        all[k] = __atomic_load_n(&counted_off[k], __ATOMIC_RELAXED);
        for (unsigned i = 0; i < RINGS; i++) {
            uint64_t kept = __atomic_load_n(&rings[i].kept[k], __ATOMIC_RELAXED);
            uint64_t dropped = __atomic_load_n(&rings[i].dropped[k], __ATOMIC_RELAXED);
            uint64_t skipped = __atomic_load_n(&rings[i].skipped[k], __ATOMIC_RELAXED);
            st->events += kept;
            st->dropped += dropped;
            st->skipped += skipped;
            all[k] += kept + dropped + skipped;
        }
    }
    st->refills = all[HK_EV_REFILL];
    st->flushes = all[HK_EV_FLUSH];
    st->drains = all[HK_EV_DRAIN];
    st->decisions = __atomic_load_n(&decisions, __ATOMIC_RELAXED);
    st->learns = __atomic_load_n(&learns, __ATOMIC_RELAXED);
}

/* HAKMEM_ACE_TRACE=1 ends with the totals (what the benchmarks compare). */
__attribute__((destructor)) static void trace_totals(void)
{
    if (!trace)
        return;
    hk_ace_stats_t st;
    hk_ace_stats(&st);
    hk_line_t l = {.n = 0};
    hk_line_kv(&l, "ace: refills ", st.refills);
    hk_line_kv(&l, " flushes ", st.flushes);
    hk_line_kv(&l, " drains ", st.drains);
    hk_line_kv(&l, " events ", st.events);
    hk_line_kv(&l, " dropped ", st.dropped);
    hk_line_kv(&l, " skipped ", st.skipped);
    hk_line_kv(&l, " decisions ", st.decisions);
    hk_line_log(&l);
}
