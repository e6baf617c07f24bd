/* stack.c — the call-stack walker (x86-64 Linux): reads each object's DWARF call-frame table (.eh_frame) itself, found with glibc's lock-free _dl_find_object, so a walk neither allocates nor takes the loader's lock. */
#include "hak_base.h"

#include <dlfcn.h>
#include <link.h>
#include <string.h>

#if defined(__x86_64__) && defined(DLFO_STRUCT_HAS_EH_DBASE)
#define HAVE_WALKER 1
#else
#define HAVE_WALKER 0
#endif

#if HAVE_WALKER

/* DWARF's x86-64 register numbers: the two a walk needs besides the CFA. */
enum { REG_RBP = 6, REG_RSP = 7, REG_RA = 16 };
/* How a register is found in the caller: unchanged, at CFA + off, at
 * rbp + off (gcc's rule for rbp in a function that realigns its stack
 * through a scratch register), or unknown. */
enum { SAME = 0, AT_CFA, AT_RBP, UNDEFINED };

typedef struct {
    uint8_t how;
    int32_t off;
} loc_t;

/* One row of the call-frame table: enough to step one frame. The CFA is
 * reg + off, or with deref (an expression "breg off; deref", which gcc emits
 * for functions that realign the stack) the word at reg + off. */
typedef struct {
    uint8_t cfa_reg;
    bool deref;
    int32_t cfa_off;
    loc_t rbp, ra;
} row_t;

/* ---- reading .eh_frame ------------------------------------------------------ */

/* LEB128: *bits gets the bits read, *last the last byte (its 0x40 is a signed value's sign). */
static uint64_t leb(const uint8_t **pp, unsigned *bits, uint8_t *last)
{
    uint64_t v = 0;
    unsigned s = 0;
    uint8_t b;
    do {
        b = *(*pp)++;
        if (s < 64)
            v |= (uint64_t)(b & 0x7f) << s;
        s += 7;
    } while (b & 0x80);
    *bits = s;
    *last = b;
    return v;
}

static uint64_t uleb(const uint8_t **pp)
{
    unsigned s;
    uint8_t b;
    return leb(pp, &s, &b);
}

static int64_t sleb(const uint8_t **pp)
{
    unsigned s;
    uint8_t b;
    uint64_t v = leb(pp, &s, &b);
    if (s < 64 && (b & 0x40))
        v |= ~0ull << s;
    return (int64_t)v;
}

#define LOAD(type, p) __extension__({ type v_; memcpy(&v_, (p), sizeof v_); v_; })

/* A pointer in DW_EH_PE encoding `enc`; false for an encoding not written by
 * gcc or ld (text- and function-relative, aligned). Indirect ones are not
 * followed: only the personality routine uses them, and a walk skips it. */
static bool read_ptr(const uint8_t **pp, uint8_t enc, uintptr_t datarel, uintptr_t *out)
{
    const uint8_t *p = *pp;
    uintptr_t base;
    switch (enc & 0x70) {
    case 0x00: base = 0; break;
    case 0x10: base = (uintptr_t)p; break;
    case 0x30: base = datarel; break;
    default: return false;
    }
    uint64_t v;
    switch (enc & 0x0f) {
    case 0x00: v = LOAD(uint64_t, p); p += 8; break;
    case 0x01: v = uleb(&p); break;
    case 0x02: v = LOAD(uint16_t, p); p += 2; break;
    case 0x03: v = LOAD(uint32_t, p); p += 4; break;
    case 0x04: v = LOAD(uint64_t, p); p += 8; break;
    case 0x09: v = (uint64_t)sleb(&p); break;
    case 0x0a: v = (uint64_t)(int64_t)LOAD(int16_t, p); p += 2; break;
    case 0x0b: v = (uint64_t)(int64_t)LOAD(int32_t, p); p += 4; break;
    case 0x0c: v = LOAD(uint64_t, p); p += 8; break;
    default: return false;
    }
    *out = base + (uintptr_t)v;
    *pp = p;
    return true;
}

/* The FDE covering pc, through the object's .eh_frame_hdr search table. */
static const uint8_t *find_fde(uintptr_t pc)
{
    struct dl_find_object fo;
    if (_dl_find_object((void *)pc, &fo) != 0 || !fo.dlfo_eh_frame)
        return NULL;
    const uint8_t *hdr = fo.dlfo_eh_frame, *p = hdr + 4;
    uintptr_t ignore, count;
    /* version 1; the table is sorted (initial pc, FDE) pairs, datarel sdata4 */
    if (hdr[0] != 1 || hdr[3] != 0x3b || !read_ptr(&p, hdr[1], (uintptr_t)hdr, &ignore) ||
        !read_ptr(&p, hdr[2], (uintptr_t)hdr, &count) || !count)
        return NULL;
    const int32_t *tab = (const int32_t *)(const void *)p;
    intptr_t rel = (intptr_t)(pc - (uintptr_t)hdr);
    size_t lo = 0, hi = count; /* the last entry starting at or below pc */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (LOAD(int32_t, tab + 2 * mid) <= rel)
            lo = mid;
        else
            hi = mid;
    }
    if (LOAD(int32_t, tab + 2 * lo) > rel)
        return NULL;
    return hdr + LOAD(int32_t, tab + 2 * lo + 1);
}

typedef struct {
    const uint8_t *insns, *end;
    uint64_t code_align;
    int64_t data_align;
    uint8_t fde_enc;
    bool has_z;
} cie_t;

static bool parse_cie(const uint8_t *c, cie_t *cie)
{
    uint32_t len = LOAD(uint32_t, c);
    if (len == 0 || len == 0xffffffffu || LOAD(uint32_t, c + 4) != 0)
        return false;
    const uint8_t *p = c + 8, *end = c + 4 + len;
    uint8_t version = *p++;
    const char *aug = (const char *)p;
    while (*p++)
        ;
    if (version != 1 && version != 3)
        return false;
    cie->code_align = uleb(&p);
    cie->data_align = sleb(&p);
    uint64_t ra = version == 1 ? *p++ : uleb(&p);
    if (ra != REG_RA)
        return false;
    cie->fde_enc = 0;
    cie->has_z = aug[0] == 'z';
    if (cie->has_z) {
        uint64_t n = uleb(&p);
        const uint8_t *q = p;
        for (const char *a = aug + 1; *a; a++) {
            if (*a == 'R')
                cie->fde_enc = *q++;
            else if (*a == 'P') {
                uintptr_t ignore;
                uint8_t enc = *q++;
                if (!read_ptr(&q, enc & 0x7f, 0, &ignore))
                    return false;
            } else if (*a == 'L')
                q++;
            else if (*a == 'S')
                return false; /* a signal frame: where a walk from malloc stops */
            else
                return false;
        }
        p += n;
    } else if (aug[0]) {
        return false;
    }
    cie->insns = p;
    cie->end = end;
    return true;
}

/* Runs call-frame instructions from p to end while the row's address is at
 * or below target. false on an instruction this walker does not follow
 * (a rule it cannot apply to rbp or the return address). */
static bool run_cfi(const uint8_t *p, const uint8_t *end, const cie_t *cie, uintptr_t loc, uintptr_t target,
                    row_t *row, const row_t *initial)
{
    row_t saved[8];
    unsigned nsaved = 0;
    while (p < end) {
        uint8_t op = *p++, arg = op & 0x3f;
        uint64_t reg = 0;
        int64_t off = 0;
        switch (op >> 6) {
        case 1: /* advance_loc */
            loc += arg * cie->code_align;
            if (loc > target)
                return true;
            continue;
        case 2: /* offset */
            reg = arg;
            off = (int64_t)uleb(&p) * cie->data_align;
            goto at_cfa;
        case 3: /* restore */
            reg = arg;
            goto restore;
        }
        switch (op) {
        case 0x00: /* nop */
            break;
        case 0x01: { /* set_loc */
            uintptr_t to;
            if (!read_ptr(&p, cie->fde_enc, 0, &to))
                return false;
            loc = to;
            if (loc > target)
                return true;
            break;
        }
        case 0x02: case 0x03: case 0x04: { /* advance_loc1, 2, 4 */
            uint64_t d = op == 0x02 ? *p : op == 0x03 ? LOAD(uint16_t, p) : LOAD(uint32_t, p);
            p += op == 0x02 ? 1 : op == 0x03 ? 2 : 4;
            loc += d * cie->code_align;
            if (loc > target)
                return true;
            break;
        }
        case 0x05: /* offset_extended */
            reg = uleb(&p);
            off = (int64_t)uleb(&p) * cie->data_align;
            goto at_cfa;
        case 0x11: /* offset_extended_sf */
            reg = uleb(&p);
            off = sleb(&p) * cie->data_align;
            goto at_cfa;
        case 0x2f: /* GNU_negative_offset_extended */
            reg = uleb(&p);
            off = -(int64_t)uleb(&p) * cie->data_align;
            goto at_cfa;
        case 0x06: /* restore_extended */
            reg = uleb(&p);
            goto restore;
        case 0x07: /* undefined */
            reg = uleb(&p);
            if (reg == REG_RBP)
                row->rbp.how = UNDEFINED;
            else if (reg == REG_RA)
                row->ra.how = UNDEFINED;
            break;
        case 0x08: /* same_value */
            reg = uleb(&p);
            if (reg == REG_RBP)
                row->rbp.how = SAME;
            else if (reg == REG_RA)
                return false;
            break;
        case 0x09: /* register: another register holds it */
            reg = uleb(&p);
            (void)uleb(&p);
            if (reg == REG_RBP || reg == REG_RA)
                return false;
            break;
        case 0x0a: /* remember_state */
            if (nsaved == sizeof saved / sizeof saved[0])
                return false;
            saved[nsaved++] = *row;
            break;
        case 0x0b: /* restore_state: the CFA rule too, as gcc's epilogues expect */
            if (!nsaved)
                return false;
            *row = saved[--nsaved];
            break;
        case 0x0c: /* def_cfa */
            row->cfa_reg = (uint8_t)uleb(&p);
            row->cfa_off = (int32_t)uleb(&p);
            row->deref = false;
            break;
        case 0x12: /* def_cfa_sf */
            row->cfa_reg = (uint8_t)uleb(&p);
            row->cfa_off = (int32_t)(sleb(&p) * cie->data_align);
            row->deref = false;
            break;
        case 0x0d: /* def_cfa_register */
            row->cfa_reg = (uint8_t)uleb(&p);
            row->deref = false;
            break;
        case 0x0e: /* def_cfa_offset */
            row->cfa_off = (int32_t)uleb(&p);
            break;
        case 0x13: /* def_cfa_offset_sf */
            row->cfa_off = (int32_t)(sleb(&p) * cie->data_align);
            break;
        case 0x0f: { /* def_cfa_expression: only "bregN off; deref" */
            uint64_t n = uleb(&p);
            const uint8_t *q = p, *qe = p + n;
            p = qe;
            if (n < 2 || *q < 0x70 || *q > 0x8f)
                return false;
            row->cfa_reg = (uint8_t)(*q++ - 0x70);
            row->cfa_off = (int32_t)sleb(&q);
            if (q + 1 != qe || *q != 0x06)
                return false;
            row->deref = true;
            break;
        }
        case 0x10: { /* expression: for rbp, only "breg6 off" */
            reg = uleb(&p);
            uint64_t n = uleb(&p);
            const uint8_t *q = p, *qe = p + n;
            p = qe;
            if (reg == REG_RA)
                return false;
            if (reg == REG_RBP) {
                if (n < 2 || *q++ != 0x76)
                    return false;
                row->rbp = (loc_t){AT_RBP, (int32_t)sleb(&q)};
                if (q != qe)
                    return false;
            }
            break;
        }
        case 0x16: /* val_expression */
            reg = uleb(&p);
            p += uleb(&p);
            if (reg == REG_RBP || reg == REG_RA)
                return false;
            break;
        case 0x14: /* val_offset */
        case 0x15: /* val_offset_sf */
            reg = uleb(&p);
            if (op == 0x14)
                (void)uleb(&p);
            else
                (void)sleb(&p);
            if (reg == REG_RBP || reg == REG_RA)
                return false;
            break;
        case 0x2e: /* GNU_args_size */
            (void)uleb(&p);
            break;
        default:
            return false;
        }
        continue;
    at_cfa:
        if (reg == REG_RBP)
            row->rbp = (loc_t){AT_CFA, (int32_t)off};
        else if (reg == REG_RA)
            row->ra = (loc_t){AT_CFA, (int32_t)off};
        continue;
    restore:
        if (!initial)
            return false;
        if (reg == REG_RBP)
            row->rbp = initial->rbp;
        else if (reg == REG_RA)
            row->ra = initial->ra;
    }
    return true;
}

/* The row for pc (an address inside the frame's function). */
static bool row_for(uintptr_t pc, row_t *row)
{
    const uint8_t *fde = find_fde(pc);
    if (!fde)
        return false;
    uint32_t len = LOAD(uint32_t, fde);
    if (len == 0 || len == 0xffffffffu)
        return false;
    const uint8_t *end = fde + 4 + len, *p = fde + 8;
    cie_t cie;
    if (!parse_cie(fde + 4 - LOAD(uint32_t, fde + 4), &cie))
        return false;
    uintptr_t start, range;
    if (!read_ptr(&p, cie.fde_enc, 0, &start) || !read_ptr(&p, cie.fde_enc & 0x0f, 0, &range))
        return false;
    if (pc < start || pc - start >= range)
        return false;
    if (cie.has_z)
        p += uleb(&p);
    *row = (row_t){.cfa_reg = REG_RSP, .cfa_off = 8, .ra = {AT_CFA, -8}};
    if (!run_cfi(cie.insns, cie.end, &cie, start, (uintptr_t)-1, row, NULL))
        return false;
    row_t initial = *row;
    return run_cfi(p, end, &cie, start, pc, row, &initial);
}

/* ---- code that is never unloaded -------------------------------------------
 * The program and what it needs at start-up (its DT_NEEDED, and theirs):
 * the program holds them, so dlclose never unloads them; and the objects
 * holding hakmem, libc and the loader, with what they need. A walk whose
 * every step is in these can be replayed without asking the loader whether
 * anything was unloaded since (hk_stack_walk_memo). An object is found by
 * address or as the first loaded object of a needed name (a later one of
 * the same name, from a dlopen by path, is not taken for it); another
 * namespace's (dlmopen) come after the first namespace's. */

#define PERM_RANGES 64
#define PERM_NAMES 128
static uintptr_t perm_lo[PERM_RANGES], perm_hi[PERM_RANGES]; /* sorted; [lo, hi] */
static unsigned nperm;
static bool perm_known; /* written under cache_lock, once; read with acquire */
static struct {
    char name[48];
    uintptr_t by; /* the object that answered it, 0 none yet */
} needs[PERM_NAMES];
static unsigned nneeds;
static uintptr_t perm_objs[PERM_NAMES + 4]; /* their dlpi_addr (the program's may be 0) */
static unsigned nperm_objs;

static const char *base_name(const char *path)
{
    const char *b = path;
    for (const char *s = path; *s; s++)
        if (*s == '/')
            b = s + 1;
    return b;
}

static bool same_str(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static void add_needs(const struct dl_phdr_info *info)
{
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    uintptr_t strtab = 0;
    for (const ElfW(Dyn) *d = dyn; d && d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_STRTAB)
            strtab = d->d_un.d_ptr;
    if (!strtab)
        return;
    if (strtab < info->dlpi_addr) /* not relocated in place (the vDSO's) */
        strtab += info->dlpi_addr;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
        if (d->d_tag != DT_NEEDED)
            continue;
        const char *n = (const char *)strtab + d->d_un.d_val;
        unsigned len = 0;
        while (n[len] && len < sizeof needs[0].name)
            len++;
        if (len == sizeof needs[0].name || nneeds == PERM_NAMES)
            continue; /* a name too long to keep: its object is not taken */
        bool known = false;
        for (unsigned k = 0; k < nneeds && !known; k++)
            known = same_str(needs[k].name, n);
        if (!known) {
            for (unsigned c = 0; c <= len; c++)
                needs[nneeds].name[c] = n[c];
            needs[nneeds++].by = 0;
        }
    }
}

static void add_range(uintptr_t lo, uintptr_t hi)
{
    if (nperm == PERM_RANGES)
        return;
    unsigned i = nperm++;
    for (; i && perm_lo[i - 1] > lo; i--) {
        perm_lo[i] = perm_lo[i - 1];
        perm_hi[i] = perm_hi[i - 1];
    }
    perm_lo[i] = lo;
    perm_hi[i] = hi;
}

/* One pass over the loaded objects: how many seen, the needed names known
 * when it began, whether an object joined. */
typedef struct {
    unsigned seen, needs;
    bool grew;
} pass_t;

static int find_perm(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    pass_t *pass = arg;
    bool first = pass->seen++ == 0;
    for (unsigned k = 0; k < nperm_objs; k++)
        if (perm_objs[k] == info->dlpi_addr && (k || first))
            return 0; /* taken in an earlier pass */
    bool keep = first;
    const uintptr_t marks[] = {(uintptr_t)hk_stack_walk_memo, (uintptr_t)dl_iterate_phdr,
                               (uintptr_t)_dl_find_object};
    for (int i = 0; i < info->dlpi_phnum && !keep; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        for (unsigned k = 0; k < sizeof marks / sizeof marks[0]; k++)
            if (ph->p_type == PT_LOAD && marks[k] >= lo && marks[k] - lo < ph->p_memsz)
                keep = true;
    }
    const char *name = base_name(info->dlpi_name ? info->dlpi_name : "");
    /* only the names known when the pass began: each is then matched to the
     * first loaded object of that name (the list is in load order) */
    for (unsigned k = 0; k < pass->needs && !keep && name[0]; k++)
        if (!needs[k].by && same_str(needs[k].name, name)) {
            needs[k].by = info->dlpi_addr;
            keep = true;
        }
    if (!keep || nperm_objs == sizeof perm_objs / sizeof perm_objs[0])
        return 0;
    perm_objs[nperm_objs++] = info->dlpi_addr;
    pass->grew = true;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X))
            add_range(info->dlpi_addr + ph->p_vaddr, info->dlpi_addr + ph->p_vaddr + ph->p_memsz);
    }
    add_needs(info);
    return 0;
}

/* Under cache_lock, once: passes until no object joins (each pass follows
 * one more level of needed names). */
static void find_permanent(void)
{
    for (unsigned pass = 0; pass < 16; pass++) {
        pass_t p = {0, nneeds, false};
        dl_iterate_phdr(find_perm, &p);
        if (!p.grew)
            break;
    }
    __atomic_store_n(&perm_known, true, __ATOMIC_RELEASE);
}

/* pc in a never-unloaded object's code (a return address may be just past
 * its object's last byte: [lo, hi]). */
static bool permanent_pc(uintptr_t pc)
{
    if (!__atomic_load_n(&perm_known, __ATOMIC_ACQUIRE))
        return false;
    unsigned lo = 0, hi = nperm; /* the last range starting at or below pc */
    while (hi - lo > 1) {
        unsigned mid = (lo + hi) / 2;
        if (perm_lo[mid] <= pc)
            lo = mid;
        else
            hi = mid;
    }
    return nperm && perm_lo[lo] <= pc && pc <= perm_hi[lo];
}

/* ---- stepping, and a cache of steps shared by the threads -------------------- */

/* A row as a walk uses it: the return address is at CFA - 8 (where the call
 * put it; a row saying otherwise ends the walk) and rbp's offset fits 16
 * bits. With the address, 16 B a cache slot. */
typedef struct {
    int32_t cfa_off;
    int16_t rbp_off;
    uint8_t cfa_reg;
    uint8_t how; /* deref | rbp's rule << 1, | PERM, or END (| PERM) */
} step_t;
#define END 0x80  /* the walk stops at this address (outermost frame, or a rule not followed) */
#define PERM 0x40 /* the address is in code never unloaded */
#define RULES 0x3f

static HK_NOINLINE step_t step_of(uintptr_t pc)
{
    row_t r;
    uint8_t perm = permanent_pc(pc) ? PERM : 0;
    if (!row_for(pc, &r) || r.ra.how != AT_CFA || r.ra.off != -8 || r.rbp.off != (int16_t)r.rbp.off ||
        (r.cfa_reg != REG_RSP && r.cfa_reg != REG_RBP))
        return (step_t){.how = END | perm};
    return (step_t){r.cfa_off, (int16_t)r.rbp.off, r.cfa_reg, (uint8_t)(r.deref | r.rbp.how << 1 | perm)};
}

/* Direct-mapped by address (16 KiB); a thread that finds it in use walks
 * without it, so no thread waits, and a fork child whose parent was walking
 * still walks. Emptied when the loader has loaded an object since it was
 * filled: code unloaded since may have been replaced at the same address
 * (the frames of a walk are all in code still loaded). */
#define CACHE_BITS 10
typedef struct {
    uintptr_t pc;
    step_t step;
} slot_t;
static slot_t cache[1u << CACHE_BITS];
static hk_lock_t cache_lock = HK_LOCK_INIT;
static unsigned long long cache_adds; /* the loader's count of loads it was filled under */

static int read_adds(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    *(unsigned long long *)arg = info->dlpi_adds;
    return 1;
}

static step_t step_for(uintptr_t pc, bool use_cache)
{
    slot_t *s = &cache[(pc * 0x9e3779b97f4a7c15ull) >> (64 - CACHE_BITS)];
    if (use_cache && s->pc == pc)
        return s->step;
    step_t st = step_of(pc);
    if (use_cache)
        *s = (slot_t){pc, st};
    return st;
}

/* A stack word a walk reads, recorded in rec (if any) for a replay. */
HK_INLINE void note_word(hk_stack_memo_t *rec, uintptr_t a, uintptr_t v)
{
    if (rec->nreads < HK_STACK_MEMO_READS) {
        rec->addr[rec->nreads] = a;
        rec->val[rec->nreads] = v;
    }
    rec->nreads++; /* past the room: no replay of this walk */
}

HK_INLINE uintptr_t read_word(uintptr_t a, hk_stack_memo_t *rec)
{
    uintptr_t v = *(const uintptr_t *)a;
    if (rec)
        note_word(rec, a, v);
    return v;
}

/* Steps from the frame whose registers are pc, sp, fp (pc exact, not a
 * return address), writing each caller's return address. With rec, notes
 * the words the result depends on: every return address and CFA read, and
 * a saved rbp only once a step uses it (code built without frame pointers
 * saves rbp as any register, so its value changes from call to call). */
static unsigned walk_from(uintptr_t pc, uintptr_t sp, uintptr_t fp, void **out, unsigned max, bool use_cache,
                          hk_stack_memo_t *rec)
{
    unsigned n = 0;
    bool fp_given = true; /* fp is still the register the walk began with */
    bool fp_pending = false;
    uintptr_t fp_at = 0;
    for (bool first = true; n < max; first = false) {
        /* a return address may be just past its function's last call */
        step_t st = step_for(first ? pc : pc - 1, use_cache);
        if (rec && !(st.how & PERM))
            rec->mortal = 1; /* a step in code that may be unloaded: no replay */
        if (st.how & END)
            break;
        unsigned rbp = (st.how & RULES) >> 1;
        if (rec && (st.cfa_reg == REG_RBP || rbp == AT_RBP)) { /* this step uses fp */
            if (fp_given)
                rec->needs_fp = 1;
            else if (fp_pending)
                note_word(rec, fp_at, fp);
            fp_pending = false;
        }
        uintptr_t cfa = (st.cfa_reg == REG_RSP ? sp : fp) + (uintptr_t)(intptr_t)st.cfa_off;
        if (st.how & 1)
            cfa = read_word(cfa, rec);
        /* a stack grows down: a caller's frame lies above, and not absurdly far */
        if (cfa <= sp || cfa - sp > ((uintptr_t)1 << 30) || (cfa & 7))
            break;
        if (rbp == AT_CFA || rbp == AT_RBP) {
            fp_at = (rbp == AT_CFA ? cfa : fp) + (uintptr_t)(intptr_t)st.rbp_off;
            fp = *(const uintptr_t *)fp_at;
            fp_pending = true;
            fp_given = false;
        } else if (rbp == UNDEFINED) {
            fp = 0;
            fp_pending = false;
            fp_given = false;
        }
        sp = cfa;
        pc = read_word(cfa - 8, rec);
        if (!pc)
            break;
        out[n++] = (void *)pc;
    }
    return n;
}

/* ---- walks ------------------------------------------------------------------- */

/* Only a walk holding the cache asks the loader (for an instant, under its
 * lock): fork's prepare waits for the cache, so no walk of ours is inside
 * the loader when a child is made. */
HK_INLINE unsigned walk_here(uintptr_t pc, uintptr_t sp, uintptr_t fp, void **out, unsigned max,
                             hk_stack_memo_t *rec)
{
    bool use_cache = !__atomic_exchange_n(&cache_lock.v, 1, __ATOMIC_ACQUIRE);
    unsigned long long adds = ~0ull;
    if (use_cache && (dl_iterate_phdr(read_adds, &adds) != 1 || adds != cache_adds)) {
        for (unsigned i = 0; i < 1u << CACHE_BITS; i++) /* a loop: no libc page faulted in */
            cache[i].pc = 0;
        cache_adds = adds;
    }
    if (use_cache && !perm_known)
        find_permanent(); /* before any step is cached: each carries its PERM */
    unsigned n = walk_from(pc, sp, fp, out, max, use_cache, rec);
    if (rec)
        rec->valid = !rec->mortal && rec->nreads <= HK_STACK_MEMO_READS && n <= HK_STACK_MEMO_FRAMES;
    if (use_cache)
        hk_unlock(&cache_lock);
    return n;
}

HK_NOINLINE unsigned hk_stack_walk(void **out, unsigned max)
{
    uintptr_t pc, sp, fp;
    __asm__ volatile("leaq 0(%%rip), %0\n\tmovq %%rsp, %1\n\tmovq %%rbp, %2" : "=r"(pc), "=r"(sp), "=r"(fp));
    return walk_here(pc, sp, fp, out, max, NULL);
}

HK_NOINLINE unsigned hk_stack_walk_memo(void **out, unsigned max, hk_stack_memo_t *m, bool *replayed)
{
    uintptr_t pc, sp, fp;
    __asm__ volatile("leaq 0(%%rip), %0\n\tmovq %%rsp, %1\n\tmovq %%rbp, %2" : "=r"(pc), "=r"(sp), "=r"(fp));
    /* pc is this function's own, the same every time: the walk is a function
     * of sp, fp (when a step used it before reloading it) and the words read */
    if (m->valid && m->max == max && m->sp == sp && (!m->needs_fp || m->fp == fp)) {
        unsigned i = 0, nr = m->nreads;
        while (i < nr && *(const uintptr_t *)m->addr[i] == m->val[i])
            i++;
        if (i == nr) {
            *replayed = true;
            return m->nframes;
        }
    }
    *replayed = false;
    m->valid = 0;
    m->nreads = 0;
    m->needs_fp = 0;
    m->mortal = 0;
    unsigned n = walk_here(pc, sp, fp, out, max, m);
    if (m->valid) {
        m->sp = sp;
        m->fp = fp;
        m->max = max;
        m->nframes = n;
        for (unsigned k = 0; k < n; k++)
            m->frames[k] = out[k];
    }
    return n;
}

unsigned hk_stack_walk_signal(uintptr_t pc, uintptr_t sp, uintptr_t fp, void **out, unsigned max)
{
    if (!max)
        return 0;
    out[0] = (void *)(pc + 1); /* as if a return address: readers take one off */
    return 1 + walk_from(pc, sp, fp, out + 1, max - 1, false, NULL);
}

void hk_stack_fork(int phase)
{
    hk_lock_fork(&cache_lock, phase);
}

#else /* no _dl_find_object, or not x86-64 */

unsigned hk_stack_walk(void **out, unsigned max)
{
    (void)out;
    (void)max;
    return 0;
}

unsigned hk_stack_walk_signal(uintptr_t pc, uintptr_t sp, uintptr_t fp, void **out, unsigned max)
{
    (void)sp;
    (void)fp;
    if (!max)
        return 0;
    out[0] = (void *)(pc + 1);
    return 1;
}

unsigned hk_stack_walk_memo(void **out, unsigned max, hk_stack_memo_t *m, bool *replayed)
{
    (void)out;
    (void)max;
    (void)m;
    *replayed = false;
    return 0;
}

void hk_stack_fork(int phase) { (void)phase; }

#endif
