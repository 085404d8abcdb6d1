/* The C translation engine of iommu: caches, context fetch, second-level walk, faults.
 *
 * Organised like iommu/engine_python.py, function for function (same names where
 * sensible): that file is the reference, and both engines must give equal results,
 * counters, fault records and cache contents for every request. Comments name the
 * VT-d spec rule a check follows (section numbers of rev. 4.x/5.0).
 *
 * Safety: every table address is checked against the memory size before it is read
 * (a read error fault otherwise), frames are 4 KiB buffers Python owns and entries are
 * 8-byte aligned, so a read never leaves its frame; every loop is bounded.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "iommu_engine.h"

#define PAGE_4K 4096u
#define FRAME_SHIFT 12

/* Flag bits of a result (iommu/engine_config.py). */
#define FLAG_IOTLB_HIT 1u
#define FLAG_CONTEXT_HIT 2u
#define FLAG_STALE 4u
#define FLAG_FAULT_RECORDED 8u
#define FLAG_PASSTHROUGH 16u
#define FLAG_PSC_HIT 32u

/* Access bits of a request. */
#define ACCESS_WRITE 1u
#define ACCESS_EXECUTE 2u
#define ACCESS_PRIVILEGED 4u
#define ACCESS_TRANSLATION_REQUEST 8u  /* an ATS translation request from a device-TLB */
#define ACCESS_TRANSLATED 16u          /* a translated request (already a host address) */

/* Second-level entry bits and context translation types (iommu/entries.py). */
#define SL_R (1ull << 0)
#define SL_W (1ull << 1)
#define SL_PS (1ull << 7)
#define SL_SNP (1ull << 11)
#define SL_TM (1ull << 62)
#define TT_ALL 1u
#define TT_PASSTHROUGH 2u

/* Fault reasons (iommu/faults.py). */
enum {
    FR_ROOT_ENTRY_NOT_PRESENT = 0x1,
    FR_CONTEXT_ENTRY_NOT_PRESENT = 0x2,
    FR_CONTEXT_ENTRY_INVALID = 0x3,
    FR_ADDRESS_BEYOND_WIDTH = 0x4,
    FR_WRITE_NOT_PERMITTED = 0x5,
    FR_READ_NOT_PERMITTED = 0x6,
    FR_PAGING_ENTRY_READ_ERROR = 0x7,
    FR_ROOT_ENTRY_READ_ERROR = 0x8,
    FR_CONTEXT_ENTRY_READ_ERROR = 0x9,
    FR_ROOT_ENTRY_RESERVED = 0xA,
    FR_CONTEXT_ENTRY_RESERVED = 0xB,
    FR_PAGING_ENTRY_RESERVED = 0xC,
    FR_TRANSLATION_REQUEST_BLOCKED = 0xD
};

enum { POLICY_LRU = 0, POLICY_FIFO = 1, POLICY_RANDOM = 2 };

#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#define COLD __attribute__((cold, noinline))
#define HOT_INLINE __attribute__((always_inline)) inline
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define NOINLINE
#define COLD
#define HOT_INLINE inline
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#endif

static inline uint32_t level_shift(uint32_t level) { return 12u + 9u * (level - 1u); }

/* ===================================================================== memory index */

/* Open-addressing hash (linear probing, backward-shift deletion) from frame number to
 * the frame's 4 KiB buffer; an empty cell has frame == NULL. */
typedef struct {
    uint64_t pfn;
    uint8_t *frame;
} mem_cell;

struct iommu_mem {
    uint64_t size;          /* bytes: a table entry at or above it is a read error */
    uint64_t *generation;   /* bumped by Python on every write */
    uint64_t zero_generation;
    mem_cell *cells;
    uint64_t mask;          /* capacity - 1; capacity a power of two */
    uint32_t bits;          /* log2(capacity) */
    uint64_t count;
    /* Walk memo: the frame the last walk read at each level (NULL: none). Frames are
     * found through the index only when the table changes; cleared whenever the index
     * changes (a frame added, replaced or removed). */
    uint64_t level_pfn[6];
    uint8_t *level_frame[6];
};

static inline void mem_forget_walk(iommu_mem *m)
{
    memset(m->level_frame, 0, sizeof m->level_frame);
    memset(m->level_pfn, 0xFF, sizeof m->level_pfn);  /* no frame number: never matches */
}

static inline uint64_t mem_home(const iommu_mem *m, uint64_t pfn)
{
    return (pfn * 0x9E3779B97F4A7C15ull) >> (64u - m->bits);
}

iommu_mem *mem_new(uint64_t size, uint64_t *generation)
{
    iommu_mem *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->bits = 6;
    m->mask = (1ull << m->bits) - 1;
    m->cells = calloc(m->mask + 1, sizeof *m->cells);
    if (!m->cells) {
        free(m);
        return NULL;
    }
    m->size = size;
    m->generation = generation ? generation : &m->zero_generation;
    mem_forget_walk(m);
    return m;
}

void mem_free(iommu_mem *m)
{
    if (!m)
        return;
    free(m->cells);
    free(m);
}

static inline uint8_t *mem_frame(const iommu_mem *m, uint64_t pfn)
{
    uint64_t i = mem_home(m, pfn);
    for (;;) {  /* bounded: the table is at most half full */
        const mem_cell *c = &m->cells[i];
        if (c->frame == NULL)
            return NULL;
        if (c->pfn == pfn)
            return c->frame;
        i = (i + 1) & m->mask;
    }
}

static void mem_place(mem_cell *cells, uint64_t mask, uint32_t bits, uint64_t pfn,
                      uint8_t *frame)
{
    uint64_t i = (pfn * 0x9E3779B97F4A7C15ull) >> (64u - bits);
    while (cells[i].frame != NULL && cells[i].pfn != pfn)
        i = (i + 1) & mask;
    cells[i].pfn = pfn;
    cells[i].frame = frame;
}

int mem_add_frame(iommu_mem *m, uint64_t pfn, uint8_t *frame)
{
    if (!m || !frame)
        return -1;
    mem_forget_walk(m);
    if ((m->count + 1) * 2 > m->mask + 1) {  /* grow: keep the load at most 1/2 */
        if (m->bits >= 62)
            return -1;
        uint32_t bits = m->bits + 1;
        uint64_t mask = (1ull << bits) - 1;
        mem_cell *cells = calloc(mask + 1, sizeof *cells);
        if (!cells)
            return -1;
        for (uint64_t i = 0; i <= m->mask; i++)
            if (m->cells[i].frame)
                mem_place(cells, mask, bits, m->cells[i].pfn, m->cells[i].frame);
        free(m->cells);
        m->cells = cells;
        m->mask = mask;
        m->bits = bits;
    }
    uint64_t i = mem_home(m, pfn);
    while (m->cells[i].frame != NULL) {
        if (m->cells[i].pfn == pfn) {  /* already indexed: the buffer is replaced */
            m->cells[i].frame = frame;
            return 0;
        }
        i = (i + 1) & m->mask;
    }
    m->cells[i].pfn = pfn;
    m->cells[i].frame = frame;
    m->count++;
    return 0;
}

void mem_remove_frame(iommu_mem *m, uint64_t pfn)
{
    if (!m)
        return;
    mem_forget_walk(m);
    uint64_t i = mem_home(m, pfn);
    while (m->cells[i].frame != NULL && m->cells[i].pfn != pfn)
        i = (i + 1) & m->mask;
    if (m->cells[i].frame == NULL)
        return;
    /* Backward-shift deletion: move later cells of the probe run into the hole. */
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & m->mask;
        if (m->cells[j].frame == NULL)
            break;
        uint64_t k = mem_home(m, m->cells[j].pfn);
        int stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        m->cells[i] = m->cells[j];
        i = j;
    }
    m->cells[i].frame = NULL;
    m->cells[i].pfn = 0;
    m->count--;
}

/* An 8-byte aligned little-endian read; a frame never written reads as zero. The caller
 * has checked addr + 8 <= size; alignment keeps the read inside one 4 KiB frame. */
static inline uint64_t mem_read_u64(const iommu_mem *m, uint64_t addr)
{
    const uint8_t *frame = mem_frame(m, addr >> FRAME_SHIFT);
    if (!frame)
        return 0;
    const uint8_t *p = frame + (addr & (PAGE_4K - 8u));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    uint64_t v = 0;
    for (int b = 7; b >= 0; b--)
        v = v << 8 | p[b];
    return v;
#endif
}

/* mem_read_u64 for a walk at `level`: the frame comes from the walk memo when the
 * table is the one the last walk read at that level. */
static inline uint64_t mem_read_u64_at_level(iommu_mem *m, uint64_t addr, uint32_t level)
{
    uint64_t pfn = addr >> FRAME_SHIFT;
    const uint8_t *frame = m->level_frame[level];
    if (m->level_pfn[level] != pfn) {  /* a memo'd pfn always has its frame */
        frame = mem_frame(m, pfn);
        if (!frame)
            return 0;
        m->level_pfn[level] = pfn;
        m->level_frame[level] = (uint8_t *)frame;
    }
    uint64_t v;
    memcpy(&v, frame + (addr & (PAGE_4K - 8u)), 8);
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* ============================================================ replacement caches */

/* Sets of at most this many slots keep their order as stamps (see slot_cache). */
#define STAMP_WAYS 32

/* SlotCache: `size` slots in sets of `ways`; free slots as a stack per set (the set's
 * lowest slot on top at start). Keys are (a, b).
 *
 * The hash from key to slot chains slots: a bucket holds the first slot of its chain,
 * each slot the next one. Buckets are a power of two >= 8 * size, so that a miss mostly
 * finds an empty bucket and its branch is predictable (with 4 * size, misses through a
 * full IOTLB ran about 15% slower). A fill and an eviction are two or three stores each,
 * with no probing run to repair.
 *
 * Order (LRU: of last use; FIFO: of filling) is a recency ring per set: every use (LRU)
 * or fill appends the slot to its set's ring and notes where (ring_pos). A record is
 * current while it is its slot's newest and the slot is occupied; older records are
 * skipped when met. The victim is the set's oldest current record, popped from the head.
 * A full ring is compacted in place (current records kept, in order) at a cost per slot,
 * not per record. A use costs two stores and no pointer chase, and replacement stays
 * exact. Random replacement keeps no ring.
 *
 * Set-associative caches with small sets (at most STAMP_WAYS slots) keep stamps instead:
 * a use (LRU) or fill stamps the slot with the next value of one clock, and the victim is
 * the set's slot with the smallest stamp, found by looking at its few slots. A use is one
 * store, with none of the per-set ring ends a run of uses in random sets would load
 * right after storing. */
typedef struct {
    uint32_t size, used, policy;
    uint32_t ways, nsets;  /* set k owns slots k*ways .. k*ways + ways - 1 */
    uint32_t ways_shift;   /* log2(ways) when ways is a power of two, else 32 */
    uint32_t nsets_mask;   /* nsets - 1 when nsets is a power of two, else 0 */
    uint64_t rng;
    uint32_t *free_stack;  /* per set: its free slots, a stack at free_stack[k*ways] */
    uint32_t *set_nfree;   /* per set: how many free slots its stack holds */
    uint32_t *ring;        /* per set: ring_mask + 1 records (slot numbers) */
    uint32_t *ring_pos;    /* per slot: the ring index of its newest record */
    uint64_t *ring_head;   /* per set: position of its oldest record (index: & ring_mask) */
    uint64_t *ring_tail;   /* per set: position after its newest record */
    uint32_t ring_mask;    /* records per set's ring - 1: a power of two >= 8 * ways, - 1 */
    uint64_t *ring_marks;  /* one bit per place of a ring, for compaction */
    uint64_t *stamp;       /* instead of rings, for sets of at most STAMP_WAYS slots: per
                            * slot, the clock at its last use (LRU) or fill (FIFO) */
    uint64_t clock;        /* the last stamp given */
    uint64_t *key_a;
    uint32_t *key_b;
    uint8_t *valid;
    int32_t *bucket;       /* hmask + 1 chains' first slots (-1: empty) */
    int32_t *chain;        /* per slot: the next slot in its bucket's chain (-1: last) */
    uint32_t *home;        /* per occupied slot: its bucket (no rehash to unlink it) */
    uint64_t hmask;
    uint32_t hbits;
    int32_t last;  /* the slot the last lookup found (-1: none), and its key: checked */
    uint32_t last_b;  /* before the hash; reset when that slot is emptied or refilled */
    uint64_t last_a;
} slot_cache;

/* xorshift64: the random-replacement generator both engines share. */
static inline uint64_t rng_next(uint64_t s)
{
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

/* Fibonacci hashing of the key: the top bits of one multiply. */
/* The hash of a key (a, b): key_part(b) once per b (a loop keeps it for its domain), then
 * key_home with the cache's shift, 64 - hbits. */
static inline uint64_t key_part(uint32_t b) { return (uint64_t)b << 44 ^ (uint64_t)b; }

static inline uint64_t key_home(uint64_t a, uint64_t part, uint32_t shift)
{
    return ((a ^ part) * 0x9E3779B97F4A7C15ull) >> shift;
}

static inline uint64_t cache_home(const slot_cache *c, uint64_t a, uint32_t b)
{
    return key_home(a, key_part(b), 64u - c->hbits);
}

static int cache_init(slot_cache *c, uint32_t size, uint32_t policy, uint64_t seed,
                      uint32_t ways)
{
    memset(c, 0, sizeof *c);
    if (ways == 0 || ways > size || size % ways)
        ways = size;  /* fully associative */
    c->size = size;
    c->ways = ways;
    c->nsets = ways ? size / ways : 1;
    c->ways_shift = 32;
    for (uint32_t k = 0; k < 32; k++)
        if (ways == 1u << k)
            c->ways_shift = k;
    c->nsets_mask = (c->nsets & (c->nsets - 1)) == 0 ? c->nsets - 1 : 0;
    c->policy = policy;
    c->rng = seed ? seed : 1;
    c->hbits = 1;
    c->last = -1;
    while (c->hbits < 32 && (1ull << c->hbits) < 8ull * size)  /* a bucket fits home[] */
        c->hbits++;
    c->hmask = (1ull << c->hbits) - 1;
    c->free_stack = malloc(((size_t)size + 1) * sizeof *c->free_stack);
    c->set_nfree = calloc((size_t)c->nsets, sizeof *c->set_nfree);
    uint32_t ring = 16;  /* 8 records a slot: a compaction every 7/8 ring of uses */
    while (ring < 8u * ways && ring < (1u << 30))
        ring <<= 1;
    c->ring_mask = ring - 1;
    if (policy != POLICY_RANDOM && size && c->nsets > 1 && ways <= STAMP_WAYS) {
        c->stamp = calloc((size_t)size + 1, sizeof *c->stamp);
        if (!c->stamp)
            return -1;
    } else if (policy != POLICY_RANDOM && size) {
        c->ring = malloc((size_t)c->nsets * ring * sizeof *c->ring);
        c->ring_pos = calloc((size_t)size, sizeof *c->ring_pos);
        c->ring_head = calloc((size_t)c->nsets, sizeof *c->ring_head);
        c->ring_tail = calloc((size_t)c->nsets, sizeof *c->ring_tail);
        c->ring_marks = calloc(((size_t)c->ring_mask >> 6) + 1, sizeof *c->ring_marks);
        if (!c->ring || !c->ring_pos || !c->ring_head || !c->ring_tail || !c->ring_marks)
            return -1;
    }
    c->key_a = calloc((size_t)size + 1, sizeof *c->key_a);
    c->key_b = calloc((size_t)size + 1, sizeof *c->key_b);
    c->valid = calloc((size_t)size + 1, 1);
    c->bucket = malloc((size_t)(c->hmask + 1) * sizeof *c->bucket);
    c->chain = malloc(((size_t)size + 1) * sizeof *c->chain);
    c->home = calloc((size_t)size + 1, sizeof *c->home);
    if (!c->free_stack || !c->set_nfree || !c->key_a || !c->key_b ||
        !c->valid || !c->bucket || !c->chain || !c->home)
        return -1;
    for (uint32_t set = 0; set < c->nsets; set++) {
        uint32_t base = set * ways;
        for (uint32_t k = 0; k < ways; k++)  /* pop order: the set's lowest slot first */
            c->free_stack[base + k] = base + ways - 1 - k;
        c->set_nfree[set] = ways;
    }
    for (uint64_t i = 0; i <= c->hmask; i++)
        c->bucket[i] = -1;
    return 0;
}

static void cache_release(slot_cache *c)
{
    free(c->free_stack);
    free(c->set_nfree);
    free(c->ring);
    free(c->ring_pos);
    free(c->ring_head);
    free(c->ring_tail);
    free(c->ring_marks);
    free(c->stamp);
    free(c->key_a);
    free(c->key_b);
    free(c->valid);
    free(c->bucket);
    free(c->chain);
    free(c->home);
}

/* The set slot `s` belongs to (no division when fully associative). */
static inline uint32_t cache_set(const slot_cache *c, int32_t s)
{
    if (c->nsets == 1)
        return 0;
    return c->ways_shift < 32 ? (uint32_t)s >> c->ways_shift : (uint32_t)s / c->ways;
}

/* The set a key belongs to: a set-associative cache indexes its sets by the low bits of
 * the key's page number (a mask, not a division, for a power-of-two number of sets). */
static inline uint32_t cache_set_of(const slot_cache *c, uint64_t a)
{
    if (c->nsets == 1)
        return 0;
    return c->nsets_mask ? (uint32_t)(a & c->nsets_mask) : (uint32_t)(a % c->nsets);
}

/* The index of the lowest set bit of a non-zero word. */
static inline uint32_t lowest_bit(uint64_t w)
{
#if defined(__GNUC__)
    return (uint32_t)__builtin_ctzll(w);
#else
    uint32_t k = 0;
    while (!(w >> k & 1))
        k++;
    return k;
#endif
}

/* Keep the current records of a full ring, in order, from its head on. The current
 * records are the occupied slots' newest, at ring_pos: mark those places in a bitmap of
 * the ring (relative to the head), then copy them down in order. The work is per slot,
 * not per record: most records of a full ring are old uses. Writing never overtakes
 * reading (the k-th current record is at least k places from the head). */
NOINLINE static void ring_compact(slot_cache *c, uint32_t set)
{
    uint32_t *ring = c->ring + (size_t)set * (c->ring_mask + 1);
    uint32_t *pos = c->ring_pos;
    uint64_t *marks = c->ring_marks;
    const uint32_t mask = c->ring_mask, words = (mask >> 6) + 1;
    const uint64_t head = c->ring_head[set];
    const uint32_t head_idx = (uint32_t)head & mask;
    memset(marks, 0, (size_t)words * sizeof *marks);
    const uint32_t first = set * c->ways;
    for (uint32_t s = first; s < first + c->ways; s++) {
        if (c->valid[s]) {
            uint32_t rel = (pos[s] - head_idx) & mask;
            marks[rel >> 6] |= 1ull << (rel & 63);
        }
    }
    uint64_t w = head;
    for (uint32_t k = 0; k < words; k++) {
        for (uint64_t bits = marks[k]; bits; bits &= bits - 1) {
            uint32_t idx = (head_idx + (k << 6) + lowest_bit(bits)) & mask;
            uint32_t s = ring[idx], to = (uint32_t)w & mask;
            ring[to] = s;
            pos[s] = to;
            w++;
        }
    }
    c->ring_tail[set] = w;
}

/* Append slot s (occupied) to its set's ring: it is now the newest. A full ring is
 * compacted first. */
static HOT_INLINE void ring_push(slot_cache *c, int32_t s)
{
    uint32_t set = cache_set(c, s);
    uint64_t t = c->ring_tail[set];
    if (UNLIKELY(t - c->ring_head[set] > c->ring_mask)) {
        ring_compact(c, set);
        t = c->ring_tail[set];
    }
    uint32_t idx = (uint32_t)t & c->ring_mask;
    c->ring[(size_t)set * (c->ring_mask + 1) + idx] = (uint32_t)s;
    c->ring_pos[s] = idx;
    c->ring_tail[set] = t + 1;
}

/* Pop the set's oldest current record: its slot (the set is full, so one exists). */
static HOT_INLINE int32_t ring_pop_oldest(slot_cache *c, uint32_t set)
{
    const uint32_t *ring = c->ring + (size_t)set * (c->ring_mask + 1);
    for (uint64_t r = c->ring_head[set]; r != c->ring_tail[set]; r++) {
        uint32_t idx = (uint32_t)r & c->ring_mask, s = ring[idx];
        if (c->valid[s] && c->ring_pos[s] == idx) {
            c->ring_head[set] = r + 1;
            return (int32_t)s;
        }
    }
    c->ring_head[set] = c->ring_tail[set];
    return -1;  /* not reached: a full set has a current record per slot */
}

/* Whether slot s (occupied) is its set's newest: an LRU lookup would not reorder. The
 * newest record is always current. */
static inline int ring_is_newest(const slot_cache *c, int32_t s)
{
    uint32_t set = cache_set(c, s);
    uint64_t t = c->ring_tail[set];
    return t != c->ring_head[set] &&
           c->ring[(size_t)set * (c->ring_mask + 1) + ((uint32_t)(t - 1) & c->ring_mask)] ==
               (uint32_t)s;
}

/* The set's slot with the smallest stamp (the set is full: every slot occupied). */
static HOT_INLINE int32_t stamp_oldest(const slot_cache *c, uint32_t set)
{
    const uint32_t base = set * c->ways;
    const uint64_t *st = c->stamp + base;
    uint32_t best = 0;
    for (uint32_t k = 1; k < c->ways; k++)
        if (st[k] < st[best])
            best = k;
    return (int32_t)(base + best);
}

/* The replacement order, rings or stamps: slot s (occupied) is now the newest ... */
static HOT_INLINE void order_touch(slot_cache *c, int32_t s)
{
    if (c->stamp)
        c->stamp[s] = ++c->clock;
    else
        ring_push(c, s);
}

/* ... the set's oldest (the set is full), taken out of the order ... */
static HOT_INLINE int32_t order_pop_oldest(slot_cache *c, uint32_t set)
{
    return c->stamp ? stamp_oldest(c, set) : ring_pop_oldest(c, set);
}

/* ... and whether slot s (occupied) is its set's newest. */
static inline int order_is_newest(const slot_cache *c, int32_t s)
{
    return c->stamp ? c->stamp[s] == c->clock : ring_is_newest(c, s);
}

/* The slot holding a key, or -1; no replacement state is touched (a peek). */
static HOT_INLINE int32_t cache_find(const slot_cache *c, uint64_t a, uint32_t b)
{
    int32_t s = c->bucket[cache_home(c, a, b)];
    while (s >= 0 && !(c->key_a[s] == a && c->key_b[s] == b))
        s = c->chain[s];  /* bounded: a chain holds each occupied slot at most once */
    return s;
}

static HOT_INLINE int32_t cache_lookup(slot_cache *c, uint64_t a, uint32_t b)
{
    int32_t s = c->last;
    if (s >= 0 && c->last_a == a && c->last_b == b) {
        /* the same slot as last time (keys are unique: it is the hash's answer too) */
    } else {
        s = cache_find(c, a, b);  /* an empty cache has only empty buckets: -1 */
        if (s < 0)
            return -1;
        c->last = s;
        c->last_a = a;
        c->last_b = b;
    }
    if (c->policy == POLICY_LRU)
        order_touch(c, s);  /* LRU: most recently used goes last */
    return s;
}

/* Take occupied slot s out of its bucket's chain. */
static HOT_INLINE void hash_unlink_in(int32_t *bucket, int32_t *chain, const uint32_t *home,
                                      int32_t s)
{
    int32_t *at = &bucket[home[s]];
    while (*at != s) {
        if (*at < 0)
            return;  /* not reached: an occupied slot is in its chain */
        at = &chain[*at];
    }
    *at = chain[s];
}

/* Put slot s first in bucket `h`'s chain (h: cache_home of its key). */
static HOT_INLINE void hash_link_in(int32_t *bucket, int32_t *chain, uint32_t *home, uint64_t h,
                                    int32_t s)
{
    chain[s] = bucket[h];
    bucket[h] = s;
    home[s] = (uint32_t)h;
}

/* The same on a cache's own arrays (a loop that keeps them in locals calls the above). */
static HOT_INLINE void hash_unlink(slot_cache *c, int32_t s)
{
    hash_unlink_in(c->bucket, c->chain, c->home, s);
}

static HOT_INLINE void hash_link(slot_cache *c, uint64_t home, int32_t s)
{
    hash_link_in(c->bucket, c->chain, c->home, home, s);
}

/* Take a slot of set `set` for a new key (its bucket `home`, from cache_home, which a
 * caller that has just probed already holds): a free one, else the policy's victim in
 * the set (*evicted set; the victim's value is still in the caller's array). -1 when the
 * cache has no slots. */
static HOT_INLINE int32_t cache_insert(slot_cache *c, uint64_t a, uint32_t b, uint64_t home,
                                       uint32_t set, int *evicted)
{
    int32_t s;
    *evicted = 0;
    if (c->size == 0)
        return -1;
    if (set >= c->nsets)
        set = 0;  /* callers pass a set below nsets; stay inside the arrays regardless */
    uint32_t base = set * c->ways;
    if (c->set_nfree[set]) {
        s = (int32_t)c->free_stack[base + --c->set_nfree[set]];
        c->valid[s] = 1;
        c->used++;
    } else {  /* the victim's slot stays occupied, by the new key */
        if (c->policy == POLICY_RANDOM) {
            c->rng = rng_next(c->rng);
            s = (int32_t)(base + c->rng % c->ways);
        } else {
            s = order_pop_oldest(c, set);  /* the oldest in the set */
            if (s < 0)
                return -1;
        }
        *evicted = 1;
        if (c->last == s)
            c->last = -1;
        hash_unlink(c, s);
    }
    c->key_a[s] = a;
    c->key_b[s] = b;
    hash_link(c, home, s);
    if (c->policy != POLICY_RANDOM)
        order_touch(c, s);
    return s;
}

/* Drop one occupied slot (remove_where does this for each match, in slot order). */
static void cache_remove_slot(slot_cache *c, int32_t s)
{
    if (c->last == s)
        c->last = -1;
    hash_unlink(c, s);
    c->valid[s] = 0;  /* its records are no longer current */
    c->key_a[s] = 0;
    c->key_b[s] = 0;
    uint32_t set = cache_set(c, s);
    c->free_stack[set * c->ways + c->set_nfree[set]++] = (uint32_t)s;
    c->used--;
}

/* ===================================================================== unit state */

/* A cached, validated context entry (tagged by source id; DID for invalidation). */
typedef struct {
    uint64_t slpt, gen;
    uint32_t sid, did, tt, aw, width, fpd;
} context_entry;

/* A cached leaf translation, tagged by domain id, leaf level and page number: 32 bytes.
 * bits: permission R/W/X in 2:0, SNP in 3, TM in 4. */
typedef struct {
    uint64_t vpn, base, gen;
    uint32_t tag;  /* iotlb_tag(did, level), as the hash key; did up to 18 bits (CAP.ND 7) */
    uint8_t bits;
} iotlb_entry;

static inline uint32_t iotlb_level(const iotlb_entry *e) { return e->tag & 3u; }
static inline uint32_t iotlb_did(const iotlb_entry *e) { return e->tag >> 2; }
static inline uint32_t iotlb_perm(const iotlb_entry *e) { return e->bits & 7u; }
static inline uint32_t iotlb_snp(const iotlb_entry *e) { return e->bits >> 3 & 1u; }
static inline uint32_t iotlb_tm(const iotlb_entry *e) { return e->bits >> 4 & 1u; }

/* A cached non-leaf entry (paging-structure cache, spec 6.2.4): the next table and the
 * rights granted down to it, tagged by domain id, level and the address bits above the
 * region the entry covers. */
typedef struct {
    uint64_t vpn, table, gen;
    uint32_t did;
    uint8_t level, perm;
} psc_entry;

typedef struct {
    uint32_t fault, level, perm, snp, tm;
    uint64_t base;
} walk_leaf;

/* The leaf of a walk that ended at `level` on `entry`, with rights `perm` down to it:
 * its base is the entry's address bits above the page offset, `page_mask`. */
static inline walk_leaf leaf_of(uint32_t level, uint64_t perm, uint64_t entry,
                                uint64_t addr_mask, uint64_t page_mask)
{
    const walk_leaf leaf = {0, level, (uint32_t)(perm & 7), (uint32_t)(entry >> 11 & 1),
                            (uint32_t)(entry >> 62 & 1), entry & addr_mask & ~page_mask};
    return leaf;
}

/* An IOTLB entry's bits: the rights R/W/X (perm), and SNP and TM from the leaf entry's
 * bits 11 and 62. */
static inline uint8_t iotlb_bits(uint64_t perm, uint64_t leaf_entry)
{
    return (uint8_t)((perm & 7) | (leaf_entry >> 8 & 8) | (leaf_entry >> 58 & 16));
}

/* The counters the hot path bumps, kept in locals (registers) for one call or one batch
 * and added to the unit's counters at its end; nothing reads counters in between. */
typedef struct {
    uint64_t translations, context_hits, iotlb_hits, iotlb_misses, walks, memory_reads,
        iotlb_evictions;
} hot_counters;


struct iommu_unit {
    iommu_config cfg;
    iommu_mem *mem;
    iommu_counters counters;
    iommu_fault_regs faults;
    uint64_t root_table;
    int enabled;
    slot_cache context_cache;
    context_entry *context_values;
    slot_cache iotlb;
    iotlb_entry *iotlb_values;
    uint32_t iotlb_level_count[4];  /* valid IOTLB entries per leaf level (1..3) */
    slot_cache psc;
    psc_entry *psc_values;
    uint32_t psc_level_count[6];  /* valid paging-structure entries per level (2..5) */
    uint64_t addr_mask, did_mask;
    uint64_t sl_reserved[6][2];
    uint64_t root_reserved_lo, context_reserved_lo, context_reserved_hi;
};

static inline void hot_counters_add(iommu_unit *u, const hot_counters *h)
{
    iommu_counters *c = &u->counters;
    c->translations += h->translations;
    c->context_hits += h->context_hits;
    c->iotlb_hits += h->iotlb_hits;
    c->iotlb_misses += h->iotlb_misses;
    c->walks += h->walks;
    c->memory_reads += h->memory_reads;
    c->iotlb_evictions += h->iotlb_evictions;
}

/* masks[level][ps]: reserved bits of a present second-level entry (spec 9.8). */
static void second_level_reserved_masks(iommu_unit *u, uint32_t haw)
{
    const iommu_config *cfg = &u->cfg;
    uint64_t above_haw = ((1ull << 52) - 1) & ~((1ull << haw) - 1);  /* bits 51:HAW */
    uint64_t leaf_extra = (cfg->sc ? 0 : SL_SNP) | (cfg->dt ? 0 : SL_TM);
    memset(u->sl_reserved, 0, sizeof u->sl_reserved);
    for (uint32_t level = 1; level < 6; level++) {
        u->sl_reserved[level][0] = above_haw | (level == 1 ? leaf_extra : 0);
        if (level == 2 && (cfg->sllps & 1))  /* 2 MiB leaf: address bits 20:12 reserved */
            u->sl_reserved[level][1] = above_haw | leaf_extra | 0x1FF000ull;
        else if (level == 3 && (cfg->sllps & 2))  /* 1 GiB leaf: bits 29:12 reserved */
            u->sl_reserved[level][1] = above_haw | leaf_extra | 0x3FFFF000ull;
        else if (level == 1)
            u->sl_reserved[level][1] = u->sl_reserved[level][0];  /* bit 7 ignored at 4K */
        else
            u->sl_reserved[level][1] = above_haw | SL_PS;  /* PS where no such page size */
    }
}

iommu_unit *unit_new(const iommu_config *cfg, iommu_mem *mem)
{
    if (!cfg || !mem)
        return NULL;
    iommu_unit *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->cfg = *cfg;
    u->mem = mem;
    /* The ring has 1..256 registers (the Python engine would fail on 0). */
    u->faults.nfr = cfg->nfr == 0 ? 1 : (cfg->nfr > 256 ? 256 : cfg->nfr);
    u->faults.fectl = 1u << 31;  /* IM set at reset (spec: FECTL reset value) */
    uint32_t haw = cfg->haw < 52 ? cfg->haw : 52;
    u->addr_mask = ((1ull << haw) - 1) & ~0xFFFull;
    u->did_mask = cfg->domain_id_bits >= 64 ? ~0ull : (1ull << cfg->domain_id_bits) - 1;
    second_level_reserved_masks(u, haw);
    /* Root entry (legacy, spec 9.1): low 11:1 and 63:HAW reserved; high half reserved. */
    u->root_reserved_lo = 0xFFEull | ~((1ull << haw) - 1);
    /* Context entry (legacy, spec 9.3): low 11:4 and 63:HAW; high 7 and 63:24. */
    u->context_reserved_lo = 0xFF0ull | ~((1ull << haw) - 1);
    u->context_reserved_hi = 0x80ull | ~((1ull << 24) - 1);
    int bad = cache_init(&u->context_cache, cfg->context_entries, cfg->policy, cfg->seed, 0);
    bad |= cache_init(&u->iotlb, cfg->iotlb_entries, cfg->policy, cfg->seed ^ 0x5DEECE66Dull,
                      cfg->iotlb_ways);
    u->context_values = calloc((size_t)cfg->context_entries + 1, sizeof *u->context_values);
    u->iotlb_values = calloc((size_t)cfg->iotlb_entries + 1, sizeof *u->iotlb_values);
    bad |= cache_init(&u->psc, cfg->psc_entries, cfg->policy, cfg->seed ^ 0x2545F4914F6CDD1Dull,
                      0);
    u->psc_values = calloc((size_t)cfg->psc_entries + 1, sizeof *u->psc_values);
    if (bad || !u->context_values || !u->iotlb_values || !u->psc_values) {
        unit_free(u);
        return NULL;
    }
    return u;
}

void unit_free(iommu_unit *u)
{
    if (!u)
        return;
    cache_release(&u->context_cache);
    cache_release(&u->iotlb);
    cache_release(&u->psc);
    free(u->psc_values);
    free(u->context_values);
    free(u->iotlb_values);
    free(u);
}

void unit_set_root_table(iommu_unit *u, uint64_t rtaddr) { u->root_table = rtaddr & u->addr_mask; }
void unit_set_enabled(iommu_unit *u, int enabled) { u->enabled = enabled != 0; }
iommu_counters *unit_counters(iommu_unit *u) { return &u->counters; }
iommu_fault_regs *unit_fault_regs(iommu_unit *u) { return &u->faults; }
uint32_t unit_context_occupancy(iommu_unit *u) { return u->context_cache.used; }
uint32_t unit_iotlb_occupancy(iommu_unit *u) { return u->iotlb.used; }
uint32_t unit_psc_occupancy(iommu_unit *u) { return u->psc.used; }

/* ======================================================================== context */

/* Root entry then context entry for `sid` (spec 3.4.2). Returns the fault (0: *e filled);
 * *fpd is the context entry's FPD once it was read. */
COLD static uint32_t fetch_context(iommu_unit *u, uint32_t sid, int count, context_entry *e,
                              uint32_t *fpd)
{
    const iommu_mem *mem = u->mem;
    *fpd = 0;
    uint64_t raddr = u->root_table + (uint64_t)(sid >> 8) * 16;
    if (raddr + 16 > mem->size)
        return FR_ROOT_ENTRY_READ_ERROR;
    uint64_t rlo = mem_read_u64(mem, raddr), rhi = mem_read_u64(mem, raddr + 8);
    if (count)
        u->counters.memory_reads++;
    if (!(rlo & 1))
        return FR_ROOT_ENTRY_NOT_PRESENT;
    if ((rlo & u->root_reserved_lo) || rhi)
        return FR_ROOT_ENTRY_RESERVED;
    uint64_t caddr = (rlo & u->addr_mask) + (uint64_t)(sid & 0xFF) * 16;
    if (caddr + 16 > mem->size)
        return FR_CONTEXT_ENTRY_READ_ERROR;
    uint64_t clo = mem_read_u64(mem, caddr), chi = mem_read_u64(mem, caddr + 8);
    if (count)
        u->counters.memory_reads++;
    *fpd = (uint32_t)(clo >> 1 & 1);  /* FPD is evaluated even when P is clear (spec 9.3) */
    if (!(clo & 1))
        return FR_CONTEXT_ENTRY_NOT_PRESENT;
    if ((clo & u->context_reserved_lo) || (chi & u->context_reserved_hi))
        return FR_CONTEXT_ENTRY_RESERVED;
    uint32_t tt = (uint32_t)(clo >> 2 & 3), aw = (uint32_t)(chi & 7);
    const iommu_config *cfg = &u->cfg;
    if (aw > 3  /* SAGAW bit 4 is reserved: at most 5 levels */
        || !(cfg->sagaw >> aw & 1) || tt == 3 || (tt == TT_ALL && !cfg->dt) ||
        (tt == TT_PASSTHROUGH && !cfg->pt))
        return FR_CONTEXT_ENTRY_INVALID;
    /* DID bits above the ND width are not implemented (spec 9.3): ignore them. */
    e->sid = sid;
    e->did = (uint32_t)((chi >> 8) & u->did_mask);
    e->tt = tt;
    e->aw = aw;
    e->width = cfg->mgaw < 30 + 9 * aw ? cfg->mgaw : 30 + 9 * aw;
    e->slpt = clo & u->addr_mask;
    e->fpd = *fpd;
    e->gen = *mem->generation;
    return 0;
}

static inline int context_same_as(const context_entry *a, const context_entry *b)
{
    return a->did == b->did && a->tt == b->tt && a->aw == b->aw && a->slpt == b->slpt &&
           a->fpd == b->fpd;
}

/* Input address above 2^width - 1 (spec 3.6); a width of 64 or more holds every address. */
static inline int beyond_width(uint64_t iova, uint32_t width)
{
    return width < 64 && (iova >> width) != 0;
}

/* ============================================================= second-level walk */

/* Walk from the top level down (spec 3.6); loops in the tables cannot run away: there
 * are at most `levels` (<= 5) reads. Returns the fault; leaf filled on success. */
static void psc_fill(iommu_unit *u, uint32_t did, uint32_t level, uint64_t iova, uint64_t table,
                     uint32_t perm);

/* `perm`: the rights granted above the first table read (7 from the top); psc_did >= 0:
 * every non-leaf entry passed goes into the paging-structure cache of that domain. */
static HOT_INLINE uint32_t second_level_walk(iommu_unit *u, uint64_t slpt, uint32_t levels,
                                         uint64_t iova, uint32_t write, uint64_t *reads,
                                         walk_leaf *leaf, uint64_t perm, int32_t psc_did)
{
    iommu_mem *mem = u->mem;
    const uint64_t size = mem->size;
    const uint64_t need = write ? SL_W : SL_R;
    uint64_t table = slpt;
    for (uint32_t level = levels; level >= 1; level--) {
        uint64_t addr = table + ((iova >> level_shift(level)) & 511) * 8;
        if (addr + 8 > size)
            return FR_PAGING_ENTRY_READ_ERROR;
        uint64_t entry = mem_read_u64_at_level(mem, addr, level);
        if (reads)
            (*reads)++;
        /* The request's right at this level first (a not-present entry has neither);
         * where it stopped and that entry's R/W bits (0: not present) go to leaf. */
        if (!(entry & need)) {
            leaf->level = level;
            leaf->perm = (uint32_t)(entry & (SL_R | SL_W));
            return write ? FR_WRITE_NOT_PERMITTED : FR_READ_NOT_PERMITTED;
        }
        uint32_t ps = (entry & SL_PS) ? 1 : 0;
        if (entry & u->sl_reserved[level][ps])
            return FR_PAGING_ENTRY_RESERVED;
        perm &= entry;
        if (level == 1 || ps) {
            uint64_t page_mask = (1ull << level_shift(level)) - 1;
            leaf->level = level;
            leaf->base = entry & u->addr_mask & ~page_mask;
            leaf->perm = (uint32_t)(perm & 7);
            leaf->snp = (uint32_t)(entry >> 11 & 1);
            leaf->tm = (uint32_t)(entry >> 62 & 1);
            return 0;
        }
        table = entry & u->addr_mask;
        if (psc_did >= 0)
            psc_fill(u, (uint32_t)psc_did, level, iova, table, (uint32_t)(perm & 7));
    }
    return FR_PAGING_ENTRY_READ_ERROR;  /* unreachable: level 1 is always a leaf */
}

/* ====================================================== paging-structure cache */

static inline uint32_t psc_tag(uint32_t did, uint32_t level) { return did << 3 | level; }

/* The deepest cached non-leaf entry on iova's path (a PDE before a PDPE...). `touch`:
 * LRU update (a lookup) or not (a peek). */
static psc_entry *psc_lookup(iommu_unit *u, uint32_t did, uint64_t iova, uint32_t levels,
                             int touch)
{
    for (uint32_t level = 2; level <= levels && level <= 5; level++) {
        if (u->psc_level_count[level]) {
            uint64_t vpn = iova >> level_shift(level);
            int32_t s = touch ? cache_lookup(&u->psc, vpn, psc_tag(did, level))
                              : cache_find(&u->psc, vpn, psc_tag(did, level));
            if (s >= 0)
                return &u->psc_values[s];
        }
    }
    return NULL;
}

static void psc_fill(iommu_unit *u, uint32_t did, uint32_t level, uint64_t iova, uint64_t table,
                     uint32_t perm)
{
    if (u->psc.size == 0)
        return;
    uint64_t vpn = iova >> level_shift(level);
    int evicted;
    uint32_t tag = psc_tag(did, level);
    int32_t s = cache_insert(&u->psc, vpn, tag, cache_home(&u->psc, vpn, tag), 0, &evicted);
    if (s < 0)
        return;  /* not reached: a cache with slots always gives one */
    psc_entry *e = &u->psc_values[s];
    if (evicted) {
        u->counters.psc_evictions++;
        u->psc_level_count[e->level]--;
    }
    e->did = did;
    e->level = (uint8_t)level;
    e->perm = (uint8_t)perm;
    e->vpn = vpn;
    e->table = table;
    e->gen = *u->mem->generation;
    u->psc_level_count[level]++;
}

/* ========================================================================= IOTLB */

static inline uint32_t iotlb_tag(uint32_t did, uint32_t level) { return did << 2 | level; }

/* 4 KiB first, then 2 MiB, then 1 GiB (from level `first` on: 2 skips 4 KiB), skipping
 * levels with no entries. `touch`: LRU update (a lookup) or not (a peek). */
static HOT_INLINE iotlb_entry *iotlb_lookup(iommu_unit *u, uint32_t did, uint64_t iova,
                                             uint32_t first, int touch)
{
    for (uint32_t level = first; level <= 3; level++) {
        if (u->iotlb_level_count[level]) {
            uint64_t vpn = iova >> level_shift(level);
            int32_t s = touch ? cache_lookup(&u->iotlb, vpn, iotlb_tag(did, level))
                              : cache_find(&u->iotlb, vpn, iotlb_tag(did, level));
            if (s >= 0)
                return &u->iotlb_values[s];
        }
    }
    return NULL;
}

/* Cache a walk's leaf for iova in domain did. `home`: the key's bucket when the caller has
 * it (a batch's 4 KiB probe), else NO_HOME. */
#define NO_HOME (~0ull)
static HOT_INLINE void iotlb_fill_home(iommu_unit *u, uint32_t did, uint64_t iova,
                                       const walk_leaf *leaf, uint64_t home, hot_counters *h)
{
    if (u->iotlb.size == 0)
        return;
    uint64_t vpn = iova >> level_shift(leaf->level);
    uint32_t tag = iotlb_tag(did, leaf->level);
    if (home == NO_HOME)
        home = cache_home(&u->iotlb, vpn, tag);
    int evicted;
    int32_t s = cache_insert(&u->iotlb, vpn, tag, home, cache_set_of(&u->iotlb, vpn), &evicted);
    if (s < 0)
        return;  /* not reached: a cache with slots always gives one */
    iotlb_entry *e = &u->iotlb_values[s];
    if (evicted) {
        h->iotlb_evictions++;
        u->iotlb_level_count[iotlb_level(e)]--;
    }
    e->tag = tag;
    e->vpn = vpn;
    e->base = leaf->base;
    e->bits = iotlb_bits(leaf->perm, (uint64_t)leaf->snp << 11 | (uint64_t)leaf->tm << 62);
    e->gen = *u->mem->generation;
    u->iotlb_level_count[leaf->level]++;
}

static HOT_INLINE void iotlb_fill(iommu_unit *u, uint32_t did, uint64_t iova, const walk_leaf *leaf,
                                  hot_counters *h)
{
    iotlb_fill_home(u, did, iova, leaf, NO_HOME, h);
}

/* ========================================================================= faults */

static void fault_event(iommu_fault_regs *f)
{
    if (f->fectl >> 31 & 1)  /* IM: hold the interrupt pending */
        f->fectl |= 1u << 30;
    else
        f->fault_events++;
}

/* Primary fault logging (spec 7.2.1): the ring of fault recording registers. Python may
 * have written any value into nfr/next: they are clamped into the 256 registers. */
static int record_fault(iommu_unit *u, uint32_t reason, uint32_t sid, uint64_t iova,
                        uint32_t access)
{
    iommu_fault_regs *f = &u->faults;
    uint32_t nfr = f->nfr == 0 ? 1 : (f->nfr > 256 ? 256 : f->nfr);
    if (u->cfg.collapse_faults && f->pending) {
        for (uint32_t i = 0; i < nfr; i++)
            if ((f->frcd_hi[i] >> 63) && (f->frcd_hi[i] & 0xFFFF) == sid)
                return 0;
    }
    if (f->pfo)
        return 0;
    uint32_t i = f->next < nfr ? f->next : f->next % nfr;
    if (f->frcd_hi[i] >> 63) {
        f->pfo = 1;
        fault_event(f);
        return 0;
    }
    f->frcd_lo[i] = iova & ~0xFFFull;
    f->frcd_hi[i] = 1ull << 63 | (access & ACCESS_WRITE ? 0 : 1ull << 62)  /* T: 0 write */
                    | (uint64_t)reason << 32 | (access & ACCESS_EXECUTE ? 1ull << 30 : 0) |
                    (access & ACCESS_PRIVILEGED ? 1ull << 29 : 0) | sid;
    f->next = (i + 1) % nfr;
    f->pending++;
    if (f->pending == 1) {
        f->fri = i;
        fault_event(f);
    }
    return 1;
}

COLD static void fault(iommu_unit *u, uint32_t reason, uint32_t sid, uint64_t iova,
                  uint32_t access, uint32_t fpd, uint32_t flags, iommu_result *out)
{
    u->counters.faults++;
    /* A translation request that meets a not-present entry or lacks the right is answered
     * with a completion granting nothing (R=W=0), not a recorded fault (spec 4.2.3). */
    int answered = (access & ACCESS_TRANSLATION_REQUEST) &&
                   (reason == FR_WRITE_NOT_PERMITTED || reason == FR_READ_NOT_PERMITTED);
    if (!fpd && !answered && record_fault(u, reason, sid, iova, access)) {
        u->counters.faults_recorded++;
        flags |= FLAG_FAULT_RECORDED;
    }
    out->fault = (uint8_t)reason;
    out->hpa = 0;
    out->page_size = 0;
    out->flags = (uint8_t)flags;
}

/* ==================================================================== translation */

/* Request type, address width, then pass-through, IOTLB or walk. A fault is returned
 * in out, not recorded; *hit is the IOTLB entry that served the request (or NULL).
 * Context TT (spec 9.3): 00 blocks translation and translated requests; 01 allows
 * them; 10 (pass-through) blocks them. */
static HOT_INLINE void translate_with_context(iommu_unit *u, const context_entry *ctx,
                                          uint64_t iova, uint32_t access, uint32_t flags,
                                          iommu_result *out, iotlb_entry **hit,
                                          psc_entry **psc_hit, psc_entry *psc_seen,
                                          hot_counters *c, int known_miss)
{
    const uint32_t write = access & ACCESS_WRITE;
    *hit = NULL;
    *psc_hit = NULL;
    out->hpa = 0;
    out->page_size = 0;
    if (UNLIKELY(access & (ACCESS_TRANSLATION_REQUEST | ACCESS_TRANSLATED))) {
        if (ctx->tt != TT_ALL) {
            out->fault = FR_TRANSLATION_REQUEST_BLOCKED;
            out->flags = (uint8_t)flags;
            return;
        }
        if (access & ACCESS_TRANSLATED) {  /* already a host address: passes as it is */
            out->fault = 0;
            out->hpa = iova;
            out->page_size = PAGE_4K;
            out->flags = (uint8_t)(flags | FLAG_PASSTHROUGH);
            return;
        }
    }
    if (beyond_width(iova, ctx->width)) {  /* spec 3.6 */
        out->fault = FR_ADDRESS_BEYOND_WIDTH;
        out->flags = (uint8_t)flags;
        return;
    }
    if (ctx->tt == TT_PASSTHROUGH) {
        out->fault = 0;
        out->hpa = iova;
        out->page_size = PAGE_4K;
        out->flags = (uint8_t)(flags | FLAG_PASSTHROUGH);
        return;
    }
    iotlb_entry *e = known_miss ? NULL : iotlb_lookup(u, ctx->did, iova, 1, 1);
    if (e) {
        c->iotlb_hits++;
        *hit = e;
        out->flags = (uint8_t)(flags | FLAG_IOTLB_HIT);
        /* A cached translation without the right faults; hardware does not re-walk. */
        if (!(iotlb_perm(e) & (write ? SL_W : SL_R))) {
            out->fault = write ? FR_WRITE_NOT_PERMITTED : FR_READ_NOT_PERMITTED;
            return;
        }
        uint64_t size = 1ull << level_shift(iotlb_level(e));
        out->fault = 0;
        out->hpa = e->base | (iova & (size - 1));
        out->page_size = size;
        return;
    }
    c->iotlb_misses++;
    c->walks++;
    uint64_t table = ctx->slpt, perm = 7;
    uint32_t levels = ctx->aw + 2;
    int32_t psc_did = -1;
    if (u->psc.size) {
        psc_did = (int32_t)ctx->did;
        psc_entry *pe = psc_lookup(u, ctx->did, iova, levels, 1);
        if (!pe) {
            u->counters.psc_misses++;
        } else {
            u->counters.psc_hits++;
            flags |= FLAG_PSC_HIT;
            /* A copy: the walk below may refill this very slot (a small cache), and the
             * stale check must see the entry the walk started from. */
            *psc_seen = *pe;
            *psc_hit = psc_seen;
            if (!(pe->perm & (write ? SL_W : SL_R))) {  /* cached rights: no re-walk */
                out->fault = write ? FR_WRITE_NOT_PERMITTED : FR_READ_NOT_PERMITTED;
                out->flags = (uint8_t)flags;
                return;
            }
            table = pe->table;
            levels = pe->level - 1u;
            perm = pe->perm;
        }
    }
    walk_leaf leaf = {0, 0, 0, 0, 0, 0};
    uint32_t f = second_level_walk(u, table, levels, iova, write, &c->memory_reads, &leaf, perm,
                                   psc_did);
    out->flags = (uint8_t)flags;
    if (f) {
        if (u->cfg.cm && leaf.level && !leaf.perm) {
            /* Caching mode (CAP.CM): a not-present entry may be cached too; software must
             * invalidate after making it present (spec 6.1). */
            walk_leaf none = {0, 1, 0, 0, 0, 0};
            iotlb_fill(u, ctx->did, iova, &none, c);
        }
        out->fault = (uint8_t)f;
        return;
    }
    iotlb_fill(u, ctx->did, iova, &leaf, c);
    uint64_t size = 1ull << level_shift(leaf.level);
    out->fault = 0;
    out->hpa = leaf.base | (iova & (size - 1));
    out->page_size = size;
}

/* Compare a cache-served result with the tables as they are now (no counted reads).
 * Cache entries remember the memory generation they were checked at; only when memory
 * was written since is the fresh walk done. Equal entries are re-stamped. */
COLD static void check_stale(iommu_unit *u, context_entry *ctx, iotlb_entry *hit,
                        const psc_entry *psc_hit, uint32_t sid, uint64_t iova, uint32_t access,
                        iommu_result *out)
{
    uint64_t gen = *u->mem->generation;
    if (ctx->gen == gen && (hit == NULL || hit->gen == gen) &&
        (psc_hit == NULL || psc_hit->gen == gen))
        return;
    context_entry fresh_ctx;
    uint32_t fpd;
    uint32_t ctx_fault = fetch_context(u, sid, 0, &fresh_ctx, &fpd);
    uint32_t fresh_fault = ctx_fault;
    uint64_t fresh_hpa = 0;
    int have_leaf = 0;
    walk_leaf leaf = {0, 0, 0, 0, 0, 0};
    if (!ctx_fault) {
        if ((access & (ACCESS_TRANSLATION_REQUEST | ACCESS_TRANSLATED)) &&
            fresh_ctx.tt != TT_ALL) {
            fresh_fault = FR_TRANSLATION_REQUEST_BLOCKED;
        } else if (access & ACCESS_TRANSLATED) {
            fresh_hpa = iova;
        } else if (beyond_width(iova, fresh_ctx.width)) {
            fresh_fault = FR_ADDRESS_BEYOND_WIDTH;
        } else if (fresh_ctx.tt == TT_PASSTHROUGH) {
            fresh_hpa = iova;
        } else {
            leaf.fault = second_level_walk(u, fresh_ctx.slpt, fresh_ctx.aw + 2, iova,
                                           access & ACCESS_WRITE, NULL, &leaf, 7, -1);
            have_leaf = 1;
            if (leaf.fault) {
                fresh_fault = leaf.fault;
            } else {
                uint64_t size = 1ull << level_shift(leaf.level);
                fresh_hpa = leaf.base | (iova & (size - 1));
            }
        }
    }
    if (fresh_fault != out->fault || fresh_hpa != out->hpa) {
        u->counters.stale_hits++;
        out->flags |= FLAG_STALE;
        return;
    }
    if (!ctx_fault && context_same_as(ctx, &fresh_ctx))
        ctx->gen = gen;
    if (hit && have_leaf && !leaf.fault && fresh_ctx.did == ctx->did &&
        iotlb_level(hit) == leaf.level && hit->base == leaf.base && iotlb_perm(hit) == leaf.perm &&
        iotlb_snp(hit) == leaf.snp && iotlb_tm(hit) == leaf.tm)
        hit->gen = gen;
}

/* Everything after the context: the translation, then the stale check and the fault
 * recording. Touches no context-cache state (check_stale only reads the tables). */
static HOT_INLINE void translate_from_context(iommu_unit *u, context_entry *ctx, uint32_t sid,
                                          uint64_t iova, uint32_t access, uint32_t flags,
                                          iommu_result *out, hot_counters *c, int known_miss)
{
    iotlb_entry *hit;
    psc_entry *psc_hit, psc_seen;  /* psc_seen: the paging-structure entry the walk started
                                    * from, as it was then */
    translate_with_context(u, ctx, iova, access, flags, out, &hit, &psc_hit, &psc_seen, c,
                           known_miss);
    if (u->cfg.track_stale &&
        (out->flags & (FLAG_CONTEXT_HIT | FLAG_IOTLB_HIT | FLAG_PSC_HIT))) {
        uint64_t gen = *u->mem->generation;  /* unchanged since they were checked: served */
        if (ctx->gen != gen || (hit != NULL && hit->gen != gen) ||
            (psc_hit != NULL && psc_hit->gen != gen))
            check_stale(u, ctx, hit, psc_hit, sid, iova, access, out);
    }
    if (out->fault)
        fault(u, out->fault, sid, iova, access, ctx->fpd, out->flags, out);
}

/* One request (legacy mode: translated without PASID); the hot counters go to *c. */
static HOT_INLINE void translate(iommu_unit *u, uint32_t sid, uint64_t iova, uint32_t access,
                             iommu_result *out, hot_counters *c)
{
    c->translations++;
    if (UNLIKELY(!u->enabled)) {  /* translation disabled (GSTS.TES=0): untranslated */
        out->fault = 0;
        out->hpa = iova;
        out->page_size = PAGE_4K;
        out->flags = FLAG_PASSTHROUGH;
        return;
    }
    uint32_t flags = 0;
    context_entry fetched;
    context_entry *ctx;
    int32_t s = cache_lookup(&u->context_cache, sid, 0);
    if (LIKELY(s >= 0)) {
        c->context_hits++;
        flags |= FLAG_CONTEXT_HIT;
        ctx = &u->context_values[s];
    } else {
        u->counters.context_misses++;
        uint32_t fpd;
        uint32_t f = fetch_context(u, sid, 1, &fetched, &fpd);
        if (f) {
            fault(u, f, sid, iova, access, fpd, flags, out);
            return;
        }
        int evicted;
        s = cache_insert(&u->context_cache, sid, 0, cache_home(&u->context_cache, sid, 0), 0,
                         &evicted);
        if (evicted)
            u->counters.context_evictions++;
        if (s >= 0) {
            u->context_values[s] = fetched;
            ctx = &u->context_values[s];
        } else {
            ctx = &fetched;  /* no context cache */
        }
    }
    translate_from_context(u, ctx, sid, iova, access, flags, out, c, 0);
}

uint32_t unit_translate_packed(iommu_unit *u, uint16_t sid, uint64_t iova, uint32_t access,
                               uint64_t *hpa)
{
    hot_counters h = {0, 0, 0, 0, 0, 0, 0};
    iommu_result r;
    translate(u, sid, iova, access, &r, &h);
    hot_counters_add(u, &h);
    *hpa = r.hpa;
    uint32_t level = 0;
    for (uint64_t size = r.page_size; size >= PAGE_4K && level < 7; size >>= 9)
        level++;  /* 4 KiB: 1, 2 MiB: 2, 1 GiB: 3 */
    return (uint32_t)r.fault | (uint32_t)r.flags << 8 | level << 16;
}

/* The context entry a lookup would find through the memo without changing replacement
 * state (for LRU: it is already the most recently used), and its source id; or NULL. */
static inline context_entry *context_memo_mru(iommu_unit *u, uint32_t *sid)
{
    const slot_cache *c = &u->context_cache;
    int32_t s = c->last;
    if (!u->enabled || s < 0 || c->last_b != 0)
        return NULL;
    if (c->policy == POLICY_LRU && !order_is_newest(c, s))
        return NULL;
    *sid = (uint32_t)c->last_a;
    return &u->context_values[s];
}

/* What the batch loop knows of the context it serves without a context lookup: the
 * memo'd context-cache entry that is already the most recently used (so a lookup would
 * change nothing), and what its requests need, computed once. */
typedef struct {
    context_entry *ctx;  /* NULL: every request takes the general path */
    uint32_t sid;
    uint32_t levels;     /* of its second-level tables */
    uint32_t tag;        /* the IOTLB tag of a 4 KiB entry of its domain */
    uint64_t key;        /* the tag's part of the IOTLB hash key (as cache_home) */
    uint64_t high;       /* address bits beyond its width */
    int fast;            /* its requests may take the short paths (hit and miss runs) */
    int walk;            /* a miss may take miss_run */
} fast_context;

static void fast_context_set(iommu_unit *u, fast_context *f)
{
    f->ctx = context_memo_mru(u, &f->sid);
    if (!f->ctx)
        return;
    const context_entry *ctx = f->ctx;
    f->levels = ctx->aw + 2;
    f->tag = iotlb_tag(ctx->did, 1);
    f->key = key_part(f->tag);
    f->high = ctx->width < 64 ? ~0ull << ctx->width : 0;
    /* Pass-through never uses the IOTLB; a context entry changed in memory since it was
     * cached needs the stale check on every request. (A flag of its own: an address mask
     * cannot say "never", as address 0 has no bits to meet it.) */
    f->fast = !(ctx->tt == TT_PASSTHROUGH ||
                (u->cfg.track_stale && ctx->gen != *u->mem->generation));
    f->walk = 1;
}

/* The request and result arrays of a batch (they do not overlap each other or the unit). */
typedef struct {
    const uint16_t *sids;
    const uint64_t *iovas;
    const uint8_t *accesses;
    uint64_t *out_hpa;
    uint8_t *out_fault, *out_flags;
} batch_io;

/* The IOTLB entry with this key further along a chain from slot s, or -1. */
NOINLINE static int32_t iotlb_chain_find(const int32_t *chain, const iotlb_entry *values,
                                         int32_t s, uint64_t vpn, uint32_t tag)
{
    do
        s = chain[s];
    while (s >= 0 && !(values[s].vpn == vpn && values[s].tag == tag));
    return s;
}

/* The IOTLB entry bit (R 1, W 2) an untranslated request needs, by its access byte; a
 * translation or translated request needs a bit no entry has (0x80): not a plain hit.
 * One load instead of testing the request type and then choosing the right. */
static const uint8_t right_needed[256] = {
#define ONE(a) (((a) & (ACCESS_TRANSLATION_REQUEST | ACCESS_TRANSLATED)) ? 0x80 \
                : ((a) & ACCESS_WRITE) ? 2 : 1)
#define FOUR(a) ONE(a), ONE(a + 1), ONE(a + 2), ONE(a + 3)
#define SIXTEEN(a) FOUR(a), FOUR(a + 4), FOUR(a + 8), FOUR(a + 12)
    SIXTEEN(0), SIXTEEN(16), SIXTEEN(32), SIXTEEN(48), SIXTEEN(64), SIXTEEN(80),
    SIXTEEN(96), SIXTEEN(112), SIXTEEN(128), SIXTEEN(144), SIXTEEN(160), SIXTEEN(176),
    SIXTEEN(192), SIXTEEN(208), SIXTEEN(224), SIXTEEN(240)
#undef SIXTEEN
#undef FOUR
#undef ONE
};

/* LRU bookkeeping of a hit run: none (FIFO, random), the one set's ring with its tail in
 * a register, or ring_push (several sets). */
enum { TOUCH_NONE = 0, TOUCH_ONE_RING = 1, TOUCH_SET_RINGS = 2, TOUCH_STAMPS = 3 };

/* The state of a hit run, in locals of hit_run (hit_span is inlined into it). */
typedef struct {
    const int32_t *bucket, *chain;
    const iotlb_entry *values;
    uint32_t hshift, tag, ctx_did, ring_mask, ways_shift;
    uint64_t key, gen, gen_mask;
    uint32_t *ring, *ring_pos;
    uint64_t *ring_head, *ring_tail, *stamp;
    uint64_t t, clock;  /* the one ring's tail (TOUCH_ONE_RING), the stamp clock */
} hit_state;

/* Requests i .. end-1 of a hit run (see hit_run); the first not served, or end. With
 * `checked`, the caller has found the span plain (block_is_plain), its requests needing
 * entry bit `need`; else each request is checked here. */
static HOT_INLINE uint64_t hit_span(iommu_unit *u, hit_state *st, const batch_io *io,
                                    uint64_t i, const uint64_t end, const uint32_t sid,
                                    const uint64_t high, const uint32_t need, const int checked,
                                    const int stale, const int touch, const int large)
{
    slot_cache *tlb = &u->iotlb;
    const int32_t *const bucket = st->bucket;
    const iotlb_entry *const values = st->values;
    const uint32_t hshift = st->hshift, tag = st->tag;
    const uint64_t key = st->key, gen = st->gen, gen_mask = st->gen_mask;
    uint32_t *const ring = st->ring, *const ring_pos = st->ring_pos;
    const uint32_t ring_mask = st->ring_mask;
    const uint64_t t_minus_i = st->t - i;  /* the ring's tail moves with i */
    uint64_t clock = st->clock;
    const uint64_t first = i;
    const uint16_t *const sids = io->sids;
    const uint64_t *const iovas = io->iovas;
    const uint8_t *const accesses = io->accesses;
    uint64_t *const out_hpa = io->out_hpa;
    uint8_t *const out_fault = io->out_fault, *const out_flags = io->out_flags;
    for (; i < end; i++) {
        const uint64_t iova = iovas[i];
        if (!checked && (sids[i] != sid || (iova & high)))
            break;
        const uint64_t vpn = iova >> 12;
        /* cache_find, with the keys read from the entries (the same values); the rest of
         * a chain out of line, so the loop keeps its registers */
        int32_t s = bucket[key_home(vpn, key, hshift)];
        if (s >= 0 && !(values[s].vpn == vpn && values[s].tag == tag))
            s = iotlb_chain_find(st->chain, values, s, vpn, tag);
        uint64_t page_mask = PAGE_4K - 1;
        if (large) {  /* a run of 2 MiB and 1 GiB hits: a 4 KiB hit ends it */
            if (s >= 0)
                break;
            const iotlb_entry *large_hit = iotlb_lookup(u, st->ctx_did, iova, 2, 0);  /* a peek */
            if (large_hit) {
                s = (int32_t)(large_hit - values);
                page_mask = (1ull << level_shift(iotlb_level(large_hit))) - 1;
            }
        }
        if (s < 0)
            break;
        const iotlb_entry *e = &values[s];
        const uint32_t right = checked ? need : right_needed[accesses[i]];
        if (!(e->bits & right))
            break;  /* no right (a fault), or not a plain request */
        if (checked ? (stale && e->gen != gen) : ((e->gen ^ gen) & gen_mask) != 0)
            break;  /* the stale check is due */
        if (touch == TOUCH_ONE_RING) {  /* cache_lookup's LRU update, as ring_push */
            uint32_t idx = (uint32_t)(i + t_minus_i) & ring_mask;
            ring[idx] = (uint32_t)s;
            ring_pos[s] = idx;
        } else if (touch == TOUCH_SET_RINGS) {  /* ring_push, its fields in locals */
            const uint32_t set = st->ways_shift < 32 ? (uint32_t)s >> st->ways_shift
                                                     : (uint32_t)s / tlb->ways;
            const uint64_t set_tail = st->ring_tail[set];
            if (UNLIKELY(set_tail - st->ring_head[set] > ring_mask))
                break;  /* the set's ring is full: the general path compacts it */
            const uint32_t idx = (uint32_t)set_tail & ring_mask;
            ring[(size_t)set * (ring_mask + 1) + idx] = (uint32_t)s;
            ring_pos[s] = idx;
            st->ring_tail[set] = set_tail + 1;
        } else if (touch == TOUCH_STAMPS) {  /* order_touch */
            st->stamp[s] = ++clock;
        }
        out_hpa[i] = e->base | (iova & page_mask);
        if (!checked) {
            out_fault[i] = 0;
            out_flags[i] = FLAG_CONTEXT_HIT | FLAG_IOTLB_HIT;
        }
    }
    if (checked) {  /* the bytes of the requests served, at once (fewer live pointers) */
        memset(out_fault + first, 0, i - first);
        memset(out_flags + first, FLAG_CONTEXT_HIT | FLAG_IOTLB_HIT, i - first);
    }
    if (touch == TOUCH_ONE_RING)
        st->t = i + t_minus_i;
    st->clock = clock;
    return i;
}

/* Hit and miss runs look at requests in blocks of this many: a block that is all one
 * device's plain requests of one access kind inside the width (block_is_plain) takes
 * a loop without per-request checks. */
#define RUN_BLOCK 64

/* Whether requests i .. end-1 are all one device's untranslated requests of one access
 * kind inside the width: then *need is the right they need (the IOTLB entry's bit, as
 * right_needed, and the paging entry's: R 1, W 2). A vectorised look at the block. */
static HOT_INLINE int block_is_plain(const batch_io *io, uint64_t i, uint64_t end,
                                     uint32_t sid, uint64_t high, uint64_t *need)
{
    uint32_t other = 0, acc_or = 0, acc_and = 0xFF;
    uint64_t wide = 0;
    for (uint64_t k = i; k < end; k++) {
        other |= io->sids[k] ^ sid;
        wide |= io->iovas[k] & high;
        acc_or |= io->accesses[k];
        acc_and &= io->accesses[k];
    }
    *need = (acc_or & ACCESS_WRITE) ? SL_W : SL_R;
    return !other && !wide && acc_or == acc_and &&
           !(acc_or & (ACCESS_TRANSLATION_REQUEST | ACCESS_TRANSLATED));
}

/* Serve requests from i on while each is, for the fast context, an untranslated request
 * inside its width that an IOTLB entry serves with the right permission, the entry
 * unchanged since it was checked: exactly the IOTLB-hit path of translate() for it.
 * `large` 0: 4 KiB entries; 1: 2 MiB and 1 GiB ones (a 4 KiB hit ends such a run, as the
 * lookup order says). Returns the first request not served (nothing was touched for it):
 * a miss, a fault, a stale check due, another device, or an LRU ring about to overflow
 * (the run is cut there; the general path compacts the ring). A small function of its
 * own, so the loop lives in registers. A hit changes no key, bucket or entry, only the
 * order and the outputs, so a block's checks may be made before any of it is served. */
static HOT_INLINE uint64_t hit_run(iommu_unit *u, const fast_context *f, const batch_io *io,
                                   uint64_t i, uint64_t n, const int touch, const int large)
{
    slot_cache *tlb = &u->iotlb;
    hit_state st;
    st.bucket = tlb->bucket;
    st.chain = tlb->chain;
    st.values = u->iotlb_values;
    st.hshift = 64u - tlb->hbits;
    st.tag = f->tag;
    st.ctx_did = f->ctx->did;
    st.ring_mask = tlb->ring_mask;
    st.ways_shift = tlb->ways_shift;
    st.key = f->key;
    st.gen = *u->mem->generation;
    st.gen_mask = u->cfg.track_stale ? ~0ull : 0;  /* 0: generations ignored */
    st.ring = tlb->ring;
    st.ring_pos = tlb->ring_pos;
    st.ring_head = tlb->ring_head;
    st.ring_tail = tlb->ring_tail;
    st.stamp = tlb->stamp;
    st.t = 0;
    st.clock = tlb->clock;
    const uint32_t sid = f->sid;
    const uint64_t high = f->high;
    if (touch == TOUCH_ONE_RING) {
        st.t = tlb->ring_tail[0];
        const uint64_t ring_end = tlb->ring_head[0] + st.ring_mask + 1;
        if (ring_end - st.t < n - i)  /* stop where the ring is full: the general path compacts */
            n = i + (ring_end - st.t);
    }
    while (i < n) {
        const uint64_t end = n - i > RUN_BLOCK ? i + RUN_BLOCK : n;
        uint64_t need, j;
        if (!block_is_plain(io, i, end, sid, high, &need))
            j = hit_span(u, &st, io, i, end, sid, high, 0, 0, 0, touch, large);
        else if (st.gen_mask)
            j = hit_span(u, &st, io, i, end, sid, high, (uint32_t)need, 1, 1, touch, large);
        else
            j = hit_span(u, &st, io, i, end, sid, high, (uint32_t)need, 1, 0, touch, large);
        i = j;
        if (j < end)
            break;
    }
    if (touch == TOUCH_ONE_RING)
        tlb->ring_tail[0] = st.t;
    if (touch == TOUCH_STAMPS)
        tlb->clock = st.clock;
    return i;
}

/* The run functions, one per kind of LRU bookkeeping, for 4 KiB pages and for larger. */
typedef uint64_t (*hit_runner)(iommu_unit *, const fast_context *, const batch_io *, uint64_t,
                               uint64_t);

#define HIT_RUNNER(name, touch, large)                                                     \
    NOINLINE static uint64_t name(iommu_unit *u, const fast_context *f, const batch_io *io, \
                                  uint64_t i, uint64_t n)                                  \
    {                                                                                      \
        return hit_run(u, f, io, i, n, touch, large);                                      \
    }
HIT_RUNNER(hit_run_untouched, TOUCH_NONE, 0)
HIT_RUNNER(hit_run_one_ring, TOUCH_ONE_RING, 0)
HIT_RUNNER(hit_run_set_rings, TOUCH_SET_RINGS, 0)
HIT_RUNNER(hit_run_stamps, TOUCH_STAMPS, 0)
HIT_RUNNER(hit_run_large_untouched, TOUCH_NONE, 1)
HIT_RUNNER(hit_run_large_one_ring, TOUCH_ONE_RING, 1)
HIT_RUNNER(hit_run_large_set_rings, TOUCH_SET_RINGS, 1)
HIT_RUNNER(hit_run_large_stamps, TOUCH_STAMPS, 1)
#undef HIT_RUNNER

/* The walk of the batch miss loops: translate_with_context's walk for an untranslated
 * request of the fast context, through a walk memo kept in locals for the run (the frame
 * each level read last, and the reserved-bit masks), written back to the memory index at
 * the run's end. */
typedef struct {
    iommu_mem *m;
    uint64_t pfn_below;       /* frames below this end inside memory: each entry can be read */
    uint64_t addr_mask;
    uint64_t pfn[6];          /* per level: the frame read last (~0: none) ... */
    const uint8_t *frame[6];  /* ... and its buffer */
    uint64_t rsv_table[6], rsv_large[6];  /* sl_reserved[level][0] and [1] */
} walk_memo;

static HOT_INLINE void walk_memo_load(walk_memo *w, const iommu_unit *u)
{
    iommu_mem *m = u->mem;
    w->m = m;
    w->pfn_below = m->size >> FRAME_SHIFT;
    w->addr_mask = u->addr_mask;
    for (uint32_t level = 1; level <= 5; level++) {  /* a memo'd frame is below the bound */
        w->pfn[level] = m->level_pfn[level] < w->pfn_below ? m->level_pfn[level] : ~0ull;
        w->frame[level] = m->level_frame[level];
        w->rsv_table[level] = u->sl_reserved[level][0];
        w->rsv_large[level] = u->sl_reserved[level][1];
    }
}

static HOT_INLINE void walk_memo_store(const walk_memo *w)
{
    for (uint32_t level = 1; level <= 5; level++) {
        if (w->pfn[level] != ~0ull) {
            w->m->level_pfn[level] = w->pfn[level];
            w->m->level_frame[level] = (uint8_t *)w->frame[level];
        }
    }
}

/* Walk from `table` at level `top` (rights *perm granted above it): the leaf's level, with
 * *entry the leaf entry and *perm the rights down to it, when the walk meets only present,
 * permitted, well-formed entries in memory; else 0, having changed nothing but the memo
 * (the general path then does it all again and reports the fault). With `next`, each
 * non-leaf level passed notes the table it points to and the rights down to it, in
 * next[level] and granted[level]. A constant `top` unrolls the loop. */
static HOT_INLINE uint32_t walk_plain(walk_memo *w, uint64_t table, const uint32_t top,
                                      uint64_t iova, uint64_t need, uint64_t *perm,
                                      uint64_t *entry, uint64_t *next, uint64_t *granted)
{
    uint64_t e = 0, p = *perm;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 5
#endif
    for (uint32_t level = top; level >= 1; level--) {
        const uint64_t pfn = table >> FRAME_SHIFT;
        if (pfn != w->pfn[level]) {
            const uint8_t *frame = pfn < w->pfn_below ? mem_frame(w->m, pfn) : NULL;
            if (!frame)
                return 0;  /* beyond memory (the general path checks the entry), or a
                            * frame never written (zero: not present) */
            w->pfn[level] = pfn;
            w->frame[level] = frame;
        }
        memcpy(&e, w->frame[level] + ((iova >> level_shift(level)) & 511) * 8, 8);
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
        e = __builtin_bswap64(e);
#endif
        /* The right present and no reserved bit of a table (or 4 KiB) entry; a large page
         * then has more reserved bits (rsv_large holds rsv_table's too). */
        if (UNLIKELY((e ^ need) & (need | w->rsv_table[level])))
            return 0;  /* not present, no right, or a reserved bit */
        p &= e;
        if (level == 1 || (e & SL_PS)) {
            if (level > 1 && (e & w->rsv_large[level]))
                return 0;  /* PS where there is no such page size, or address bits set */
            *perm = p;
            *entry = e;
            return level;
        }
        table = e & w->addr_mask;
        if (next) {
            next[level] = table;
            granted[level] = p & 7;
        }
    }
    return 0;  /* unreachable: level 1 is always a leaf */
}

/* How a miss loop fills the IOTLB: written out in the loop, evicting the oldest of the
 * victim's set from a ring (one set: its ends in locals for the run; several: each fill
 * reads and writes its set's ends) or by stamps; or through the general iotlb_fill_home
 * (random replacement); or not at all (no IOTLB: nothing to probe or fill). A fill into
 * a set with a free slot always takes iotlb_fill_home. */
enum { FILL_ONE_RING = 0, FILL_SET_RINGS = 1, FILL_STAMPS = 2, FILL_GENERAL = 3, FILL_NONE = 4 };

/* A miss served at request i, its walk ended at leaf_level: its host address, and (not
 * `checked`: a plain block writes them once for all its requests) its fault and flag
 * bytes. Returns the reads its walk saved by ending above level 1. */
static HOT_INLINE uint64_t miss_served(const batch_io *io, uint64_t i, uint64_t hpa,
                                       uint32_t leaf_level, const int checked)
{
    io->out_hpa[i] = hpa;
    if (!checked) {
        io->out_fault[i] = 0;
        io->out_flags[i] = FLAG_CONTEXT_HIT;
    }
    return leaf_level - 1;
}

/* Serve requests from i on while each is, for the fast context, an untranslated request
 * inside its width that misses the IOTLB at every level and whose walk is plain
 * (walk_plain): the miss path of translate() for it, with the same answers, unit state
 * and counters. `levels` is a constant, so the walk unrolls. Returns the first request
 * not served, with nothing touched for it but the walk memo; a hit stops the run too (a
 * hit run takes it). */
static HOT_INLINE uint64_t miss_run_levels(iommu_unit *u, const fast_context *f,
                                           const batch_io *io, uint64_t i, uint64_t n,
                                           const uint32_t levels, const int mode,
                                           const int checked, const uint64_t checked_need,
                                           hot_counters *counters)
{
    slot_cache *tlb = &u->iotlb;
    iommu_mem *m = u->mem;
    int32_t *const bucket = tlb->bucket, *const chain = tlb->chain;
    uint32_t *const slot_home = tlb->home;
    uint64_t *const key_a = tlb->key_a;
    uint32_t *const key_b = tlb->key_b;
    uint32_t *const ring = tlb->ring, *const ring_pos = tlb->ring_pos;
    const uint32_t ring_mask = tlb->ring_mask, hshift = 64u - tlb->hbits;
    /* FILL_ONE_RING: the one ring's ends, in locals (with stamps, there are no rings) */
    uint64_t head = mode == FILL_ONE_RING ? tlb->ring_head[0] : 0;
    uint64_t tail = mode == FILL_ONE_RING ? tlb->ring_tail[0] : 0;
    uint64_t *const ring_head = tlb->ring_head, *const ring_tail = tlb->ring_tail;
    const uint32_t *const set_nfree = tlb->set_nfree;
    iotlb_entry *const values = u->iotlb_values;
    uint32_t *const level_count = u->iotlb_level_count;
    uint32_t large = level_count[2] | level_count[3];
    const uint64_t gen = *m->generation;
    const uint32_t sid = f->sid, tag = f->tag, did = f->ctx->did;
    const uint64_t key = f->key, high = f->high;
    const uint64_t slpt = f->ctx->slpt;
    const uint16_t *const sids = io->sids;
    const uint64_t *const iovas = io->iovas;
    const uint8_t *const accesses = io->accesses;
    const batch_io out = *io;  /* (a local copy: its pointers stay in registers) */
    walk_memo w;
    walk_memo_load(&w, u);
    const uint64_t addr_mask = w.addr_mask;
    tlb->last = -1;  /* the lookup memo: it may be a slot this run refills (a memo only) */
    const uint64_t first = i;
    uint64_t large_leaves = 0;  /* walks ending above level 1 (fewer memory reads) */
    uint64_t evictions = 0;
    for (; i < n; i++) {
        const uint64_t iova = iovas[i];
        if (!checked && (sids[i] != sid ||
                         ((accesses[i] & (ACCESS_TRANSLATION_REQUEST | ACCESS_TRANSLATED)) |
                          (iova & high))))
            break;
        const uint64_t need =
            checked ? checked_need : (accesses[i] & ACCESS_WRITE) ? SL_W : SL_R;
        const uint64_t vpn = iova >> 12;
        uint64_t home = 0;
        int32_t s = -1;
        if (mode != FILL_NONE) {
            home = key_home(vpn, key, hshift);
            s = bucket[home];
            while (s >= 0 && !(key_a[s] == vpn && key_b[s] == tag))
                s = chain[s];
            if (s >= 0 || (large && iotlb_lookup(u, did, iova, 2, 0)))
                break;  /* a hit (at any level): for a hit run */
        }

        uint64_t perm = 7, entry = 0;
        const uint32_t leaf_level = walk_plain(&w, slpt, levels, iova, need, &perm, &entry,
                                               NULL, NULL);
        if (UNLIKELY(!leaf_level))
            break;  /* not a plain walk: the general path does it again and faults */

        const uint64_t page_mask = (1ull << level_shift(leaf_level)) - 1;
        const walk_leaf leaf = leaf_of(leaf_level, perm, entry, addr_mask, page_mask);
        const uint64_t hpa = leaf.base | (iova & page_mask);
        if (mode == FILL_NONE) {
            large_leaves += miss_served(&out, i, hpa, leaf_level, checked);
            continue;
        }

        /* The fill: the oldest current record's slot takes the new key. */
        const uint64_t leaf_vpn = iova >> level_shift(leaf_level);
        const uint32_t leaf_tag = tag + (leaf_level - 1);  /* iotlb_tag(did, leaf_level) */
        if (leaf_level != 1)
            home = key_home(leaf_vpn, key_part(leaf_tag), hshift);
        const uint32_t set = mode == FILL_ONE_RING ? 0 : cache_set_of(tlb, leaf_vpn);
        if (mode == FILL_GENERAL || UNLIKELY(set_nfree[set] != 0)) {  /* (a free slot) */
            if (mode == FILL_ONE_RING) {  /* the ring's ends, through the unit */
                tlb->ring_head[0] = head;
                tlb->ring_tail[0] = tail;
            }
            iotlb_fill_home(u, did, iova, &leaf, home, counters);
            if (mode == FILL_ONE_RING) {
                head = tlb->ring_head[0];
                tail = tlb->ring_tail[0];
            }
            large = level_count[2] | level_count[3];
            large_leaves += miss_served(&out, i, hpa, leaf_level, checked);
            continue;
        }
        uint32_t *const set_ring =
            mode == FILL_SET_RINGS ? ring + (size_t)set * (ring_mask + 1) : ring;
        uint64_t set_tail = 0, r = 0;
        if (mode == FILL_STAMPS) {
            s = stamp_oldest(tlb, set);
        } else {
            set_tail = mode == FILL_SET_RINGS ? ring_tail[set] : tail;
            for (r = mode == FILL_SET_RINGS ? ring_head[set] : head;; r++) {
                if (UNLIKELY(r == set_tail))
                    goto out;  /* not reached: a full set has a current record per slot */
                uint32_t idx = (uint32_t)r & ring_mask;
                s = (int32_t)set_ring[idx];
                if (ring_pos[s] == idx)  /* its newest record (a full set: all occupied) */
                    break;
            }
        }
        hash_unlink_in(bucket, chain, slot_home, s);
        hash_link_in(bucket, chain, slot_home, home, s);
        key_a[s] = leaf_vpn;
        key_b[s] = leaf_tag;
        if (mode == FILL_STAMPS) {
            tlb->stamp[s] = ++tlb->clock;
        } else {
            const uint32_t idx = (uint32_t)set_tail & ring_mask;  /* the pop made room */
            set_ring[idx] = (uint32_t)s;
            ring_pos[s] = idx;
            if (mode == FILL_SET_RINGS) {
                ring_head[set] = r + 1;
                ring_tail[set] = set_tail + 1;
            } else {
                head = r + 1;
                tail = set_tail + 1;
            }
        }
        evictions++;
        iotlb_entry *e = &values[s];
        const uint32_t old_level = iotlb_level(e);
        if (old_level != leaf_level) {
            level_count[old_level]--;
            level_count[leaf_level]++;
            large = level_count[2] | level_count[3];
        }
        e->vpn = leaf_vpn;
        e->base = leaf.base;
        e->gen = gen;
        e->tag = leaf_tag;
        e->bits = iotlb_bits(perm, entry);
        large_leaves += miss_served(&out, i, hpa, leaf_level, checked);
    }
out:
    if (checked) {  /* the bytes of the requests served, at once */
        memset(io->out_fault + first, 0, i - first);
        memset(io->out_flags + first, FLAG_CONTEXT_HIT, i - first);
    }
    if (mode == FILL_ONE_RING) {
        tlb->ring_head[0] = head;
        tlb->ring_tail[0] = tail;
    }
    walk_memo_store(&w);
    const uint64_t served = i - first;  /* each a miss, a walk and a fill (evictions: those
                                        * written out here; iotlb_fill_home counts its own) */
    counters->translations += served;
    counters->context_hits += served;
    counters->iotlb_misses += served;
    counters->walks += served;
    counters->iotlb_evictions += evictions;
    counters->memory_reads += served * levels - large_leaves;
    return i;
}

/* miss_run for a unit with a paging-structure cache: each request's miss path of
 * translate_with_context, with its checks made first and without side effects (the IOTLB
 * and the paging-structure cache peeked, the walk from the deepest cached entry read
 * only: walk_plain), so that a request this loop does not serve ends the run
 * with nothing touched for it but the memo: a hit, a cached entry without the right or
 * changed in memory since it was cached (the stale check is due), a walk that is not
 * plain. Then the same steps as the general path, in its order: the cache lookup (its LRU
 * update), the paging-structure fills of the levels walked, the IOTLB fill. */
NOINLINE static uint64_t miss_run_psc(iommu_unit *u, const fast_context *f, const batch_io *io,
                                      uint64_t i, uint64_t n, hot_counters *counters)
{
    slot_cache *tlb = &u->iotlb;
    const uint32_t sid = f->sid, did = f->ctx->did, levels = f->levels;
    const uint64_t high = f->high;
    const uint64_t gen = *u->mem->generation;
    walk_memo w;
    walk_memo_load(&w, u);
    const int stale_check = u->cfg.track_stale != 0;
    hot_counters h = *counters;
    for (; i < n; i++) {
        const uint64_t iova = io->iovas[i];
        const uint32_t access = io->accesses[i];
        if (io->sids[i] != sid ||
            ((access & (ACCESS_TRANSLATION_REQUEST | ACCESS_TRANSLATED)) | (iova & high)))
            break;
        if (tlb->size && iotlb_lookup(u, did, iova, 1, 0))
            break;  /* a hit: for a hit run */
        const uint64_t need = (access & ACCESS_WRITE) ? SL_W : SL_R;
        const psc_entry *pe = psc_lookup(u, did, iova, levels, 0);  /* a peek */
        uint64_t table = f->ctx->slpt, perm = 7;
        uint32_t top = levels;
        if (pe) {
            if (!(pe->perm & need) || (stale_check && pe->gen != gen))
                break;  /* a fault from the cached rights, or the stale check: general */
            table = pe->table;
            top = pe->level - 1u;
            perm = pe->perm;
        }
        /* The walk, read only; the tables passed and the rights down to them kept for the
         * paging-structure fills. */
        uint64_t next[6], granted[6], entry = 0;
        const uint32_t leaf_level = walk_plain(&w, table, top, iova, need, &perm, &entry, next,
                                               granted);
        if (!leaf_level)
            break;  /* not a plain walk: the general path does it again and faults */

        /* The general path's steps, in its order. */
        h.iotlb_misses++;
        h.walks++;
        if (pe) {  /* psc_lookup's answer was the entry peeked: now its LRU update */
            u->counters.psc_hits++;
            if (u->psc.policy == POLICY_LRU)
                order_touch(&u->psc, (int32_t)(pe - u->psc_values));
        } else {
            u->counters.psc_misses++;
        }
        for (uint32_t level = top; level > leaf_level; level--)
            psc_fill(u, did, level, iova, next[level], (uint32_t)granted[level]);
        h.memory_reads += top - leaf_level + 1;
        const uint64_t page_mask = (1ull << level_shift(leaf_level)) - 1;
        const walk_leaf leaf = leaf_of(leaf_level, perm, entry, w.addr_mask, page_mask);
        iotlb_fill(u, did, iova, &leaf, &h);
        h.translations++;
        h.context_hits++;
        io->out_hpa[i] = leaf.base | (iova & page_mask);
        io->out_fault[i] = 0;
        io->out_flags[i] = (uint8_t)(FLAG_CONTEXT_HIT | (pe ? FLAG_PSC_HIT : 0));
    }
    walk_memo_store(&w);
    *counters = h;
    return i;
}

/* A miss run in blocks of RUN_BLOCK requests: a plain block (block_is_plain) without the
 * per-request checks. */
static HOT_INLINE uint64_t miss_run_blocks(iommu_unit *u, const fast_context *f,
                                           const batch_io *io, uint64_t i, uint64_t n,
                                           const uint32_t levels, const int mode,
                                           hot_counters *h)
{
    while (i < n) {
        const uint64_t end = n - i > RUN_BLOCK ? i + RUN_BLOCK : n;
        uint64_t need, j;
        if (block_is_plain(io, i, end, f->sid, f->high, &need))
            j = miss_run_levels(u, f, io, i, end, levels, mode, 1, need, h);
        else
            j = miss_run_levels(u, f, io, i, end, levels, mode, 0, 0, h);
        i = j;
        if (j < end)
            break;
    }
    return i;
}

/* The miss loops, one function per fill kind (small functions: the compiler keeps each
 * loop's state in registers), each with one loop per level count. */
#define MISS_RUNNER(name, mode)                                                            \
    NOINLINE static uint64_t name(iommu_unit *u, const fast_context *f, const batch_io *io, \
                                  uint64_t i, uint64_t n, hot_counters *h)                 \
    {                                                                                      \
        switch (f->levels) {                                                               \
        case 2: return miss_run_blocks(u, f, io, i, n, 2, mode, h);                        \
        case 3: return miss_run_blocks(u, f, io, i, n, 3, mode, h);                        \
        case 4: return miss_run_blocks(u, f, io, i, n, 4, mode, h);                        \
        case 5: return miss_run_blocks(u, f, io, i, n, 5, mode, h);                        \
        default: return i;                                                                 \
        }                                                                                  \
    }
MISS_RUNNER(miss_run_one_ring, FILL_ONE_RING)
MISS_RUNNER(miss_run_set_rings, FILL_SET_RINGS)
MISS_RUNNER(miss_run_stamps, FILL_STAMPS)
MISS_RUNNER(miss_run_general, FILL_GENERAL)
MISS_RUNNER(miss_run_no_iotlb, FILL_NONE)
#undef MISS_RUNNER

static uint64_t miss_run(iommu_unit *u, const fast_context *f, const batch_io *io, uint64_t i,
                         uint64_t n, hot_counters *h)
{
    const slot_cache *tlb = &u->iotlb;
    if (u->psc.size)
        return miss_run_psc(u, f, io, i, n, h);
    if (!tlb->size)
        return miss_run_no_iotlb(u, f, io, i, n, h);
    if (tlb->stamp)
        return miss_run_stamps(u, f, io, i, n, h);
    if (!tlb->ring)
        return miss_run_general(u, f, io, i, n, h);
    if (tlb->nsets == 1)
        return miss_run_one_ring(u, f, io, i, n, h);
    return miss_run_set_rings(u, f, io, i, n, h);
}

/* The batch loop: requests in order, exactly as one unit_translate call each; the hot
 * counters stay in locals until the end (the arrays do not overlap the unit).
 * Requests of the fast context (see fast_context) take the short paths, chosen by a peek
 * at the IOTLB: runs of hits (hit_run, on 4 KiB entries or on larger ones), and runs of
 * misses (miss_run).
 * Anything else, and anything those paths meet that is not plain, goes through
 * translate_from_context or translate, which see the unit exactly as the short paths
 * left it. */
static void translate_many(iommu_unit *restrict u, const uint16_t *restrict sids,
                           const uint64_t *restrict iovas, const uint8_t *restrict accesses,
                           uint64_t n, uint64_t *restrict out_hpa, uint8_t *restrict out_fault,
                           uint8_t *restrict out_flags)
{
    hot_counters h = {0, 0, 0, 0, 0, 0, 0};
    iommu_result r;
    fast_context f = {NULL, 0, 0, 0, 0, ~0ull, 0, 0};
    const batch_io io = {sids, iovas, accesses, out_hpa, out_fault, out_flags};
    const slot_cache *tlb = &u->iotlb;
    const int touch = tlb->policy != POLICY_LRU ? TOUCH_NONE
                      : tlb->stamp              ? TOUCH_STAMPS
                      : !tlb->ring              ? TOUCH_NONE
                      : tlb->nsets == 1         ? TOUCH_ONE_RING
                                                : TOUCH_SET_RINGS;
    static const hit_runner runners_4k[4] = {hit_run_untouched, hit_run_one_ring,
                                             hit_run_set_rings, hit_run_stamps};
    static const hit_runner runners_large[4] = {hit_run_large_untouched, hit_run_large_one_ring,
                                                hit_run_large_set_rings, hit_run_large_stamps};
    const hit_runner run_4k = runners_4k[touch], run_large = runners_large[touch];
    uint64_t fast_hits = 0;  /* requests served by hit runs */
    uint64_t i = 0;
    while (i < n) {
        uint32_t sid = sids[i];
        uint64_t iova = iovas[i];
        uint32_t access = accesses[i];
        int known_miss = 0;
        if (f.ctx && f.fast && sid == f.sid &&
            !((access & (ACCESS_TRANSLATION_REQUEST | ACCESS_TRANSLATED)) | (iova & f.high))) {
            const iotlb_entry *e = iotlb_lookup(u, f.ctx->did, iova, 1, 0);  /* a peek */
            if (e != NULL) {
                uint64_t j = (iotlb_level(e) == 1 ? run_4k : run_large)(u, &f, &io, i, n);
                if (j > i) {
                    fast_hits += j - i;
                    i = j;
                    continue;
                }  /* else not a plain hit (no right, stale check, full ring): below */
            } else {
                if (f.walk) {
                    uint64_t j = miss_run(u, &f, &io, i, n, &h);
                    if (j > i) {
                        i = j;
                        continue;
                    }  /* else the walk is not plain: below */
                }
                known_miss = 1;  /* the peek missed at every level */
            }
        }
        if (f.ctx && sid == f.sid) {
            h.translations++;
            h.context_hits++;
            translate_from_context(u, f.ctx, sid, iova, access, FLAG_CONTEXT_HIT, &r, &h,
                                   known_miss);
        } else {
            translate(u, sid, iova, access, &r, &h);
        }
        fast_context_set(u, &f);
        out_hpa[i] = r.hpa;
        out_fault[i] = r.fault;
        out_flags[i] = r.flags;
        i++;
    }
    h.translations += fast_hits;
    h.context_hits += fast_hits;
    h.iotlb_hits += fast_hits;
    hot_counters_add(u, &h);
}

void unit_translate(iommu_unit *u, uint16_t sid, uint64_t iova, uint32_t access,
                    uint32_t pasid, iommu_result *out)
{
    (void)pasid;  /* legacy mode: requests are translated without PASID */
    hot_counters h = {0, 0, 0, 0, 0, 0, 0};
    translate(u, sid, iova, access, out, &h);
    hot_counters_add(u, &h);
}

void unit_translate_batch(iommu_unit *u, const uint16_t *sids, const uint64_t *iovas,
                          const uint8_t *accesses, uint64_t n, uint64_t *out_hpa,
                          uint8_t *out_fault, uint8_t *out_flags)
{
    translate_many(u, sids, iovas, accesses, n, out_hpa, out_fault, out_flags);
}

/* =================================================================== invalidation */

/* Context-cache invalidation (spec 6.5.1.1). Returns the granularity performed. */
uint32_t unit_invalidate_context(iommu_unit *u, uint32_t granularity, uint32_t did,
                                 uint32_t sid, uint32_t fm)
{
    if (granularity < 1 || granularity > 3)
        return 0;
    /* FM (CCMD bits 33:32) masks the 1, 2 or 3 most significant function bits. */
    fm &= 3;
    uint32_t mask = 0xFFFFu & ~(((1u << fm) - 1) << (3 - fm));
    slot_cache *c = &u->context_cache;
    uint64_t removed = 0;
    for (uint32_t s = 0; s < c->size; s++) {
        if (!c->valid[s])
            continue;
        const context_entry *e = &u->context_values[s];
        int match = granularity == 1 ||
                    (granularity == 2 && e->did == did) ||
                    (granularity == 3 && (e->sid & mask) == (sid & mask) && e->did == did);
        if (match) {
            cache_remove_slot(c, (int32_t)s);
            removed++;
        }
    }
    u->counters.context_invalidations += removed;
    return granularity;
}

/* Whether an IOTLB or paging-structure entry (domain, level, address bits above the
 * region it covers) falls under an invalidation: all, its domain, or a page range
 * [start, last] of its domain that overlaps the entry's region. */
static int tagged_match(uint32_t granularity, uint32_t did, uint64_t start, uint64_t last,
                        uint32_t e_did, uint32_t e_level, uint64_t e_vpn)
{
    if (granularity == 1)
        return 1;
    if (e_did != did)
        return 0;
    if (granularity == 2)
        return 1;
    uint32_t shift = level_shift(e_level);
    uint64_t e_start = e_vpn << shift;
    uint64_t e_last = e_start + ((1ull << shift) - 1);
    return e_start <= last && start <= e_last;
}

/* IOTLB invalidation (spec 6.5.1.2). Returns the granularity performed. */
uint32_t unit_invalidate_iotlb(iommu_unit *u, uint32_t granularity, uint32_t did,
                               uint64_t addr, uint32_t am, uint32_t ih)
{
    if (granularity == 3 && (!u->cfg.psi || am > u->cfg.mamv))
        granularity = 2;  /* page-selective not possible: invalidate the whole domain */
    if (granularity < 1 || granularity > 3)
        return 0;
    /* Page-selective: the 2^AM pages at addr (aligned); [start, last] inclusive so that
     * a span reaching 2^64 does not overflow. */
    uint64_t start = 0, last = ~0ull;
    if (granularity == 3 && am < 52u) {  /* else the span covers all of 2^64 */
        uint64_t span = 1ull << (12 + am);
        start = addr & ~(span - 1);
        last = start + (span - 1);
    }
    uint64_t removed = 0;
    for (uint32_t s = 0; s < u->iotlb.size; s++) {
        const iotlb_entry *e = &u->iotlb_values[s];
        if (u->iotlb.valid[s] && tagged_match(granularity, did, start, last, iotlb_did(e),
                                              iotlb_level(e), e->vpn)) {
            u->iotlb_level_count[iotlb_level(e)]--;
            cache_remove_slot(&u->iotlb, (int32_t)s);
            removed++;
        }
    }
    u->counters.iotlb_invalidations += removed;
    /* Paging-structure caches go too, except for a page-selective invalidation with IH
     * (only leaf entries changed, spec 6.5.1.2). */
    if (u->psc.size && !(granularity == 3 && ih)) {
        removed = 0;
        for (uint32_t s = 0; s < u->psc.size; s++) {
            const psc_entry *e = &u->psc_values[s];
            if (u->psc.valid[s] && tagged_match(granularity, did, start, last, e->did, e->level,
                                                e->vpn)) {
                u->psc_level_count[e->level]--;
                cache_remove_slot(&u->psc, (int32_t)s);
                removed++;
            }
        }
        u->counters.psc_invalidations += removed;
    }
    return granularity;
}

/* ======================================================================== reports */

uint64_t mem_index_bytes(const iommu_mem *m)
{
    return m ? sizeof *m + (m->mask + 1) * sizeof *m->cells : 0;
}

uint32_t unit_iotlb_entry_bytes(void) { return (uint32_t)sizeof(iotlb_entry); }

uint64_t unit_iotlb_slot_bytes(const iommu_unit *u)
{
    const slot_cache *c = &u->iotlb;
    if (c->size == 0)
        return 0;
    uint64_t per_slot = sizeof(iotlb_entry) + sizeof *c->free_stack + sizeof *c->key_a +
                        sizeof *c->key_b + sizeof *c->valid;
    if (c->ring)  /* the slot's ring position and its share of the rings and their marks */
        per_slot += sizeof *c->ring_pos +
                    ((uint64_t)c->nsets * (c->ring_mask + 1) * sizeof *c->ring +
                     (((uint64_t)c->ring_mask >> 6) + 1) * sizeof *c->ring_marks + c->size - 1) /
                        c->size;
    per_slot += sizeof *c->chain + sizeof *c->home;
    if (c->stamp)
        per_slot += sizeof *c->stamp;
    uint64_t buckets = (c->hmask + 1) * sizeof *c->bucket;
    return per_slot + (buckets + c->size - 1) / c->size;
}
