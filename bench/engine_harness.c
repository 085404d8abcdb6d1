/* The C engine without Python, for profiling (callgrind, perf) and quick timing.
 *
 * It includes the engine and the baselines as one translation unit (as cext/build_ffi.py
 * does), builds a legacy-mode 4-level domain in the engine's own memory index, and times
 * unit_translate_batch against the bare baseline of the same workload, run by run (and,
 * for walks, against the bare probe + chase too):
 *
 *   gcc -O3 -std=gnu99 -g -fwrapv -fPIC -Icext bench/engine_harness.c -o /tmp/harness
 *   /tmp/harness hit|random|sequential|walk-only [repeats]
 *   valgrind --tool=callgrind /tmp/harness random 1      # instructions per function/line
 *
 * Workloads as in iommu/bench.py: `hit` is 512 resident 4 KiB pages in random order through
 * a 512-entry IOTLB; `random` and `sequential` are 64 Ki pages through it (every request
 * misses, walks, fills and evicts); `walk-only` is `random` with no IOTLB. Environment:
 * IOMMU_POLICY (0 LRU, 1 FIFO, 2 random), IOMMU_TRACK_STALE (0 or 1), IOTLB (entries,
 * 512), IOTLB_WAYS (0: fully associative), PSC (paging-structure cache entries, 0). Every answer is
 * checked once before timing. The figures are for looking at the engine, not for quoting:
 * `iommu bench` is the reference (it runs the engine as users do, through cffi).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "iommu_engine.c"
#include "baseline.c"

#define IOVA_BASE (1ull << 32)
#define HPA_BASE (1ull << 40)
#define DOMAIN_ID 1
#define SOURCE_ID 0x0300

static iommu_mem *memory;
#define FIRST_PFN 0x1000
static uint64_t next_pfn = FIRST_PFN;

static uint64_t new_table(void)
{
    uint8_t *frame = calloc(1, PAGE_4K);
    if (!frame || mem_add_frame(memory, next_pfn, frame) != 0) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return next_pfn++ << FRAME_SHIFT;
}

/* The tables' frames belong to the caller of mem_add_frame (here, to this program). */
static void free_tables(void)
{
    for (uint64_t pfn = FIRST_PFN; pfn < next_pfn; pfn++)
        free(mem_frame(memory, pfn));
    mem_free(memory);
}

static uint64_t get(uint64_t addr) { return mem_read_u64(memory, addr); }

static void put(uint64_t addr, uint64_t value)
{
    memcpy(mem_frame(memory, addr >> FRAME_SHIFT) + (addr & (PAGE_4K - 1)), &value, 8);
}

static void map_4k(uint64_t root, uint64_t iova, uint64_t hpa)
{
    uint64_t table = root;
    for (uint32_t level = 4; level > 1; level--) {
        uint64_t at = table + ((iova >> level_shift(level)) & 511) * 8;
        uint64_t entry = get(at);
        if (!entry) {
            entry = new_table() | SL_R | SL_W;
            put(at, entry);
        }
        table = entry & ~0xFFFull;
    }
    put(table + ((iova >> 12) & 511) * 8, hpa | SL_R | SL_W);
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "random";
    int repeats = argc > 2 ? atoi(argv[2]) : 5;
    int hit = !strcmp(mode, "hit"), sequential = !strcmp(mode, "sequential");
    int walk_only = !strcmp(mode, "walk-only");
    if (!hit && !sequential && !walk_only && strcmp(mode, "random")) {
        fprintf(stderr, "usage: %s hit|random|sequential|walk-only [repeats]\n", argv[0]);
        return 2;
    }
    if (repeats < 1 || repeats > 99)
        repeats = 5;
    const uint64_t pages = hit ? 512 : 65536, n = hit ? 1u << 20 : 1u << 19;
    uint64_t generation = 0;
    memory = mem_new(1ull << 48, &generation);
    uint64_t root = new_table(), context = new_table(), slpt = new_table();
    put(root + (SOURCE_ID >> 8) * 16, context | 1);
    put(context + (SOURCE_ID & 0xFF) * 16, slpt | 1);
    put(context + (SOURCE_ID & 0xFF) * 16 + 8, 2 | DOMAIN_ID << 8);  /* AW 2: 4 levels */
    for (uint64_t p = 0; p < pages; p++)
        map_4k(slpt, IOVA_BASE + p * PAGE_4K, HPA_BASE + p * PAGE_4K);

    iommu_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.haw = cfg.mgaw = 48;
    cfg.sagaw = 0x4 | 0x8;
    cfg.sllps = 3;
    cfg.dt = cfg.pt = cfg.sc = 1;
    cfg.domain_id_bits = 16;
    cfg.nfr = 8;
    cfg.psi = 1;
    cfg.mamv = 63;
    cfg.context_entries = 128;
    cfg.iotlb_entries = walk_only ? 0 : 512;
    if (!walk_only && getenv("IOTLB"))
        cfg.iotlb_entries = (uint32_t)atoi(getenv("IOTLB"));
    if (getenv("IOTLB_WAYS"))
        cfg.iotlb_ways = (uint32_t)atoi(getenv("IOTLB_WAYS"));
    cfg.track_stale = 1;
    if (getenv("IOMMU_POLICY"))
        cfg.policy = (uint32_t)atoi(getenv("IOMMU_POLICY"));
    if (getenv("PSC"))
        cfg.psc_entries = (uint32_t)atoi(getenv("PSC"));
    if (getenv("IOMMU_TRACK_STALE"))
        cfg.track_stale = (uint32_t)atoi(getenv("IOMMU_TRACK_STALE"));
    iommu_unit *u = unit_new(&cfg, memory);
    if (!u)
        return 2;
    unit_set_root_table(u, root);
    unit_set_enabled(u, 1);

    uint16_t *sids = malloc(n * sizeof *sids);
    uint64_t *iovas = malloc(n * sizeof *iovas), *hpa = malloc(n * sizeof *hpa);
    uint8_t *accesses = calloc(n, 1), *fault = malloc(n), *flags = malloc(n);
    if (!sids || !iovas || !hpa || !accesses || !fault || !flags)
        return 2;
    uint64_t rng = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        rng = rng_next(rng);
        uint64_t page = sequential ? i % pages : rng % pages;
        sids[i] = SOURCE_ID;
        iovas[i] = IOVA_BASE + page * PAGE_4K + 0x123;
    }
    unit_translate_batch(u, sids, iovas, accesses, n, hpa, fault, flags);
    for (uint64_t i = 0; i < n; i++) {
        if (fault[i] || hpa[i] != iovas[i] - IOVA_BASE + HPA_BASE) {
            fprintf(stderr, "request %llu: wrong answer\n", (unsigned long long)i);
            return 1;
        }
    }
    double engine[99], base[99], ratio[99], probe_chase[99] = {0}, ratio2[99] = {0};
    for (int r = 0; r < repeats; r++) {  /* engine and baseline take turns */
        double t0 = seconds();
        unit_translate_batch(u, sids, iovas, accesses, n, hpa, fault, flags);
        engine[r] = seconds() - t0;
        t0 = seconds();
        if (hit)
            baseline_iotlb_probe(u, DOMAIN_ID, iovas, n, hpa);
        else
            baseline_walk(memory, slpt, 4, 1, iovas, n, hpa);
        base[r] = seconds() - t0;
        ratio[r] = base[r] / engine[r];
        if (!hit) {
            t0 = seconds();
            baseline_probe_walk(u, DOMAIN_ID, slpt, 4, 1, iovas, n, hpa);
            probe_chase[r] = seconds() - t0;
            ratio2[r] = probe_chase[r] / engine[r];
        }
    }
    qsort(engine, (size_t)repeats, sizeof *engine, cmp_double);
    qsort(base, (size_t)repeats, sizeof *base, cmp_double);
    qsort(ratio, (size_t)repeats, sizeof *ratio, cmp_double);
    qsort(probe_chase, (size_t)repeats, sizeof *probe_chase, cmp_double);
    qsort(ratio2, (size_t)repeats, sizeof *ratio2, cmp_double);
    const iommu_counters *c = unit_counters(u);
    printf("%s: engine %.2f ns, bare %s %.2f ns, share %.3f (IOTLB hits %llu, misses %llu)\n",
           mode, engine[repeats / 2] / n * 1e9, hit ? "probe" : "chase",
           base[repeats / 2] / n * 1e9, ratio[repeats / 2],
           (unsigned long long)c->iotlb_hits, (unsigned long long)c->iotlb_misses);
    if (!hit)
        printf("%s: bare probe + chase %.2f ns, share %.3f\n", mode,
               probe_chase[repeats / 2] / n * 1e9, ratio2[repeats / 2]);
    unit_free(u);
    free_tables();
    free(sids);
    free(iovas);
    free(hpa);
    free(accesses);
    free(fault);
    free(flags);
    return 0;
}
