/* tls.c — Box 1's slow half: thread start, refill on a miss, flush on overflow, and the give-back at thread exit. */
#include "hak_tls.h"
#include "hak_refill.h"
#include "hak_policy.h"

#include <pthread.h>

__thread hk_tls_t hk_tls __attribute__((tls_model("initial-exec")));
uintptr_t hk_tls_secret;

static pthread_key_t exit_key;
static bool exit_key_ok;

static void thread_exit(void *arg)
{
    (void)arg;
    hk_tls_drain();
    /* Later frees (libc's buffers, other destructors) take the global path:
     * room 0 and empty heads send both hit paths to the slow path. */
    for (unsigned c = 0; c < HK_NCLASS; c++)
        hk_tls.room[c] = 0;
    hk_tls.state = HK_TLS_DEAD;
}

void hk_tls_process_init(void)
{
    if (pthread_key_create(&exit_key, thread_exit) == 0)
        exit_key_ok = true;
}

static void thread_start(void)
{
    for (unsigned c = 1; c < HK_NCLASS; c++) {
        hk_tls.cap[c] = (uint16_t)hk_policy_cap(c);
        hk_tls.room[c] = hk_tls.cap[c];
    }
    hk_tls.state = HK_TLS_LIVE;
    /* May allocate (keys >= 32 take a calloc'd block): the state is live now,
     * so that nested malloc is served normally. */
    if (exit_key_ok)
        pthread_setspecific(exit_key, (void *)1);
}

void *hk_tls_refill(unsigned c)
{
    if (HK_UNLIKELY(hk_tls.state != HK_TLS_LIVE)) {
        if (hk_tls.state == HK_TLS_DEAD) {
            void **p = hk_refill_alloc_one(c);
            if (p)
                p[1] = NULL; /* as hk_tls_pop: a live block carries no tag */
            return p;
        }
        thread_start();
        if (hk_tls.head[c]) /* a nested malloc during thread start refilled c */
            return hk_tls_pop(c);
    }
    unsigned cap = hk_policy_cap(c); /* contract B: new parameters apply here */
    void *head;
    unsigned n = hk_refill_take(c, hk_policy_batch(c), &head);
    if (!n)
        return NULL;
    hk_tls.cap[c] = (uint16_t)(cap >= n ? cap : n);
    hk_tls.room[c] = (uint16_t)(hk_tls.cap[c] - n);
    hk_tls.head[c] = head;
    return hk_tls_pop(c);
}

void hk_tls_overflow(unsigned c, void *p)
{
    if (HK_UNLIKELY(hk_tls.state != HK_TLS_LIVE)) {
        if (hk_tls.state == HK_TLS_DEAD) {
            ((uintptr_t *)p)[1] = hk_tls_tag(p);
            hk_refill_free_one(c, p);
            return;
        }
        thread_start();
        if (hk_tls_push(c, p))
            return;
    }
    /* The list holds cap blocks: send the newest batch to Box 2 in one move. */
    unsigned batch = hk_policy_batch(c), held = hk_tls.cap[c];
    if (batch > held)
        batch = held;
    void **cut = hk_tls.head[c];
    for (unsigned i = 1; i < batch; i++)
        cut = *cut;
    void *give = hk_tls.head[c];
    hk_tls.head[c] = *cut;
    *cut = NULL;
    hk_refill_give(c, give, batch, batch);
    unsigned cap = hk_policy_cap(c), left = held - batch;
    hk_tls.cap[c] = (uint16_t)(cap > left ? cap : left + 1);
    hk_tls.room[c] = (uint16_t)(hk_tls.cap[c] - left);
    hk_tls_push(c, p);
}

void hk_tls_drain(void)
{
    if (hk_tls.state != HK_TLS_LIVE)
        return;
    for (unsigned c = 1; c < HK_NCLASS; c++) {
        void *head = hk_tls.head[c];
        if (!head)
            continue;
        unsigned n = hk_tls.cap[c] - hk_tls.room[c];
        hk_tls.head[c] = NULL;
        hk_tls.room[c] = hk_tls.cap[c];
        hk_refill_give(c, head, n, hk_policy_batch(c));
    }
}
