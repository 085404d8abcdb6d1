/* Bare baselines and a QEMU-style peer walk for `iommu bench` (declared in baseline.h).
 *
 * Compiled in the same translation unit as iommu_engine.c (cext/build_ffi.py includes
 * both), so the baselines call the engine's own static inline primitives: the IOTLB hash
 * probe (cache_find over the unit's IOTLB) and the memory index (mem_frame). What the
 * engine adds on top of them (replacement, checks, counters, fault recording, stale
 * tracking) is what the ratio "engine / baseline" measures.
 */
#include "baseline.h"

uint64_t baseline_iotlb_probe(iommu_unit *u, uint32_t did, const uint64_t *iovas,
                              uint64_t n, uint64_t *out_hpa)
{
    const slot_cache *c = &u->iotlb;
    const iotlb_entry *values = u->iotlb_values;
    const uint32_t tag = iotlb_tag(did, 1);
    uint64_t found = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t iova = iovas[i];
        int32_t s = c->size ? cache_find(c, iova >> 12, tag) : -1;
        uint64_t hpa = 0;
        if (s >= 0) {
            hpa = values[s].base | (iova & 0xFFFu);
            found++;
        }
        out_hpa[i] = hpa;
    }
    return found;
}

/* The per-level frame memo of a chase: the frame each level read last. */
typedef struct {
    uint64_t pfn[6];
    const uint8_t *frame[6];
} chase_memo;

/* One chase from `slpt`, levels `levels` down to `leaf_level`: the host address (the leaf's
 * address bits plus the page offset); *entry is the last entry read (0: a frame never
 * written). The caller checks the level numbers. */
static HOT_INLINE uint64_t chase(iommu_mem *m, chase_memo *memo, uint64_t slpt,
                                 const uint32_t levels, const uint32_t leaf_level,
                                 uint64_t iova, uint64_t *entry)
{
    const uint64_t addr_mask = 0x000FFFFFFFFFF000ull;
    const uint64_t page_mask = (1ull << level_shift(leaf_level)) - 1;
    uint64_t table = slpt, e = 0;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 5
#endif
    for (uint32_t level = levels; level >= leaf_level; level--) {
        uint64_t pfn = table >> FRAME_SHIFT;
        const uint8_t *frame = memo->frame[level];
        if (!(frame && memo->pfn[level] == pfn)) {
            frame = mem_frame(m, pfn);
            memo->pfn[level] = pfn;
            memo->frame[level] = frame;
        }
        if (!frame) {
            e = 0;
            break;
        }
        memcpy(&e, frame + ((iova >> level_shift(level)) & 511) * 8, 8);
        table = e & addr_mask;
    }
    *entry = e;
    return (table & ~page_mask) | (iova & page_mask);
}

static HOT_INLINE uint64_t chase_run(iommu_mem *m, uint64_t slpt, const uint32_t levels,
                                     const uint32_t leaf_level, const uint64_t *iovas,
                                     uint64_t n, uint64_t *out_hpa)
{
    uint64_t found = 0, entry;
    chase_memo memo = {{0}, {NULL}};  /* the engine's walk memo, kept locally */
    for (uint64_t i = 0; i < n; i++) {
        out_hpa[i] = chase(m, &memo, slpt, levels, leaf_level, iovas[i], &entry);
        found += entry != 0;
    }
    return found;
}

/* The level numbers as constants where the workloads use them (the loop unrolls, as the
 * engine's walk does for its level count), else as variables. */
#define LEVEL_CASES(run, ...)                                                              \
    switch (levels * 8 + leaf_level) {                                                     \
    case 3 * 8 + 1: return run(__VA_ARGS__, 3, 1);                                         \
    case 3 * 8 + 2: return run(__VA_ARGS__, 3, 2);                                         \
    case 4 * 8 + 1: return run(__VA_ARGS__, 4, 1);                                         \
    case 4 * 8 + 2: return run(__VA_ARGS__, 4, 2);                                         \
    case 5 * 8 + 1: return run(__VA_ARGS__, 5, 1);                                         \
    case 5 * 8 + 2: return run(__VA_ARGS__, 5, 2);                                         \
    default: return run(__VA_ARGS__, levels, leaf_level);                                  \
    }

#define CHASE_RUN(m, slpt, iovas, n, out, lv, leaf) chase_run(m, slpt, lv, leaf, iovas, n, out)

uint64_t baseline_walk(iommu_mem *m, uint64_t slpt, uint32_t levels, uint32_t leaf_level,
                       const uint64_t *iovas, uint64_t n, uint64_t *out_hpa)
{
    if (levels < 1 || levels > 5 || leaf_level < 1 || leaf_level > levels)
        return 0;
    LEVEL_CASES(CHASE_RUN, m, slpt, iovas, n, out_hpa)
}

static HOT_INLINE uint64_t probe_chase_run(iommu_unit *u, uint32_t did, uint64_t slpt,
                                           const uint64_t *iovas, uint64_t n, uint64_t *out_hpa,
                                           const uint32_t levels, const uint32_t leaf_level)
{
    const slot_cache *c = &u->iotlb;
    const iotlb_entry *values = u->iotlb_values;
    uint64_t found = 0, entry;
    chase_memo memo = {{0}, {NULL}};
    const uint32_t shift = level_shift(leaf_level);
    for (uint64_t i = 0; i < n; i++) {
        const uint64_t iova = iovas[i];
        int32_t s = -1;
        if (c->size) {
            s = cache_find(c, iova >> 12, iotlb_tag(did, 1));
            if (s < 0 && leaf_level > 1)
                s = cache_find(c, iova >> shift, iotlb_tag(did, leaf_level));
        }
        if (s >= 0) {
            const uint64_t mask = (1ull << level_shift(iotlb_level(&values[s]))) - 1;
            out_hpa[i] = values[s].base | (iova & mask);
            found++;
            continue;
        }
        out_hpa[i] = chase(u->mem, &memo, slpt, levels, leaf_level, iova, &entry);
        found += entry != 0;
    }
    return found;
}

uint64_t baseline_probe_walk(iommu_unit *u, uint32_t did, uint64_t slpt, uint32_t levels,
                             uint32_t leaf_level, const uint64_t *iovas, uint64_t n,
                             uint64_t *out_hpa)
{
    if (levels < 1 || levels > 5 || leaf_level < 1 || leaf_level > levels)
        return 0;
    LEVEL_CASES(probe_chase_run, u, did, slpt, iovas, n, out_hpa)
}

#undef CHASE_RUN
#undef LEVEL_CASES

/* ------------------------------------------------------------ QEMU-style peer walk */

/* A generic DMA read: address space in, bytes out, a result code (as a memory
 * transaction result). Called through a pointer so that it stays a real call. */
typedef int (*peer_dma_read_fn)(void *as, uint64_t addr, void *buf, uint64_t len);

#if defined(__GNUC__)
__attribute__((noinline))
#endif
static int peer_dma_read(void *as, uint64_t addr, void *buf, uint64_t len)
{
    const iommu_mem *m = as;
    if (addr + len > m->size || len > PAGE_4K - (addr & (PAGE_4K - 1)))
        return -1;
    const uint8_t *frame = mem_frame(m, addr >> FRAME_SHIFT);
    if (frame)
        memcpy(buf, frame + (addr & (PAGE_4K - 1)), len);
    else
        memset(buf, 0, len);
    return 0;
}

static peer_dma_read_fn volatile peer_read = peer_dma_read;

/* Read one entry: all-ones when the read fails (the peer's convention). */
static inline uint64_t peer_get_slpte(iommu_mem *m, uint64_t table, uint32_t index)
{
    uint64_t v;
    if (peer_read(m, table + index * 8u, &v, 8) != 0)
        return ~0ull;
    return v;  /* little-endian host: le64_to_cpu is the identity */
}

/* Reserved bits by level as the peer keeps them: a table indexed by level, a second for
 * large-page leaves; computed once per call from the unit's configuration. */
static int peer_slpte_reserved(const uint64_t rsvd[6][2], uint64_t slpte, uint32_t level)
{
    if (slpte & SL_PS)
        return (slpte & rsvd[level][1]) != 0;
    return (slpte & rsvd[level][0]) != 0;
}

static int peer_is_last_slpte(uint64_t slpte, uint32_t level)
{
    return level == 1 || (slpte & SL_PS) != 0;
}

/* One translation: 0 and *hpa, or a fault reason. */
static uint32_t peer_iova_to_slpte(iommu_unit *u, uint64_t slpt, uint32_t levels,
                                   uint32_t width, uint64_t iova, uint32_t write,
                                   uint64_t *hpa)
{
    if (width < 64 && (iova >> width) != 0)  /* range check first */
        return FR_ADDRESS_BEYOND_WIDTH;
    const uint64_t access_right_check = write ? SL_W : SL_R;
    int reads = 1, writes = 1;
    uint64_t addr = slpt;
    uint32_t level = levels;
    for (;;) {
        uint32_t offset = (uint32_t)((iova >> level_shift(level)) & 511);
        uint64_t slpte = peer_get_slpte(u->mem, addr, offset);
        if (slpte == ~0ull)
            return FR_PAGING_ENTRY_READ_ERROR;
        reads = reads && (slpte & SL_R);
        writes = writes && (slpte & SL_W);
        if (!(slpte & access_right_check))
            return write ? FR_WRITE_NOT_PERMITTED : FR_READ_NOT_PERMITTED;
        if (peer_slpte_reserved(u->sl_reserved, slpte, level))
            return FR_PAGING_ENTRY_RESERVED;
        if (peer_is_last_slpte(slpte, level)) {
            uint64_t mask = (1ull << level_shift(level)) - 1;
            *hpa = (slpte & u->addr_mask & ~mask) | (iova & mask);
            (void)reads;
            (void)writes;
            return 0;
        }
        addr = slpte & u->addr_mask;
        level--;
    }
}

uint64_t peer_qemu_style_walk(iommu_unit *u, uint64_t slpt, uint32_t levels, uint32_t width,
                              const uint64_t *iovas, uint64_t n, uint32_t write,
                              uint64_t *out_hpa)
{
    uint64_t ok = 0;
    if (levels < 1 || levels > 5)
        return 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t hpa = 0;
        if (peer_iova_to_slpte(u, slpt, levels, width, iovas[i], write, &hpa) == 0)
            ok++;
        out_hpa[i] = hpa;
    }
    return ok;
}
