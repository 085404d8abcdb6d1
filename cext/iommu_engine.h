/* The C translation engine of iommu: declarations shared by the engine and cffi.
 *
 * The engine owns one remapping unit's translation state (caches, counters, fault
 * recording) and reads tables from an index of 4 KiB frames that Python owns.
 * It mirrors iommu/engine_python.py function for function; both must give equal
 * results, counters and fault records for every request.
 * (This file is read by cffi's cdef: plain declarations only, no #include/#define.)
 */

typedef struct iommu_mem iommu_mem;
typedef struct iommu_unit iommu_unit;

typedef struct {
    uint32_t haw;              /* host address width: pointer bits at and above it reserved */
    uint32_t mgaw;             /* maximum guest address width */
    uint32_t sagaw;            /* CAP.SAGAW bits (bit n: AW value n supported) */
    uint32_t sllps;            /* bit 0: 2 MiB, bit 1: 1 GiB second-level pages */
    uint32_t dt, pt, sc;       /* ECAP device-TLB, pass-through, snoop control */
    uint32_t domain_id_bits;   /* 4 + 2 * CAP.ND */
    uint32_t nfr;              /* fault recording registers (1..256) */
    uint32_t psi;              /* CAP.PSI: page-selective IOTLB invalidation */
    uint32_t mamv;             /* CAP.MAMV: largest address mask */
    uint32_t context_entries;  /* context-cache slots (0: no context cache) */
    uint32_t iotlb_entries;    /* IOTLB slots (0: no IOTLB) */
    uint32_t policy;           /* 0 LRU, 1 FIFO, 2 random */
    uint64_t seed;             /* random replacement seed */
    uint32_t collapse_faults;  /* drop a fault whose source id already has one pending */
    uint32_t track_stale;      /* compare cache-served results with the tables */
    uint32_t psc_entries;      /* paging-structure cache slots (0: none) */
    uint32_t iotlb_ways;       /* IOTLB associativity (0: fully associative) */
    uint32_t cm;               /* CAP.CM: not-present second-level entries are cached too */
} iommu_config;

typedef struct {
    uint64_t translations, faults, faults_recorded;
    uint64_t context_hits, context_misses, context_evictions, context_invalidations;
    uint64_t iotlb_hits, iotlb_misses, iotlb_evictions, iotlb_invalidations;
    uint64_t walks, memory_reads, stale_hits;
    uint64_t psc_hits, psc_misses, psc_evictions, psc_invalidations;
} iommu_counters;

typedef struct {
    uint32_t nfr, next, pending, pfo, fri, fectl;
    uint64_t fault_events;
    uint64_t frcd_lo[256];
    uint64_t frcd_hi[256];
} iommu_fault_regs;

typedef struct {
    uint64_t hpa;
    uint64_t page_size;
    uint8_t fault;             /* 0: none, else the spec's fault reason */
    uint8_t flags;             /* 1 IOTLB hit, 2 context hit, 4 stale, 8 recorded, 16 pass-through */
} iommu_result;

/* Memory index: frame number -> 4 KiB buffer owned by Python. `generation` points at
 * a counter Python bumps on every write. Returns NULL when out of memory. */
iommu_mem *mem_new(uint64_t size, uint64_t *generation);
void mem_free(iommu_mem *m);
int mem_add_frame(iommu_mem *m, uint64_t pfn, uint8_t *frame);   /* 0 ok, -1 no memory */
void mem_remove_frame(iommu_mem *m, uint64_t pfn);

iommu_unit *unit_new(const iommu_config *cfg, iommu_mem *mem);   /* NULL: no memory */
void unit_free(iommu_unit *u);
void unit_set_root_table(iommu_unit *u, uint64_t rtaddr);
void unit_set_enabled(iommu_unit *u, int enabled);
iommu_counters *unit_counters(iommu_unit *u);
iommu_fault_regs *unit_fault_regs(iommu_unit *u);
uint32_t unit_context_occupancy(iommu_unit *u);
uint32_t unit_iotlb_occupancy(iommu_unit *u);
uint32_t unit_psc_occupancy(iommu_unit *u);

/* access: bit 0 write, bit 1 execute, bit 2 privileged */
void unit_translate(iommu_unit *u, uint16_t sid, uint64_t iova, uint32_t access,
                    uint32_t pasid, iommu_result *out);
/* The same request without PASID (one argument less to convert from Python); returns
 * fault | flags << 8 | level << 16, where the page size is 4 KiB << 9 * (level - 1) and
 * level 0 means no page (a fault); the address in *hpa. */
uint32_t unit_translate_packed(iommu_unit *u, uint16_t sid, uint64_t iova, uint32_t access,
                               uint64_t *hpa);
void unit_translate_batch(iommu_unit *u, const uint16_t *sids, const uint64_t *iovas,
                          const uint8_t *accesses, uint64_t n,
                          uint64_t *out_hpa, uint8_t *out_fault, uint8_t *out_flags);

/* Return the granularity performed (0: invalid request). */
uint32_t unit_invalidate_context(iommu_unit *u, uint32_t granularity, uint32_t did,
                                 uint32_t sid, uint32_t fm);
uint32_t unit_invalidate_iotlb(iommu_unit *u, uint32_t granularity, uint32_t did,
                               uint64_t addr, uint32_t am, uint32_t ih);

/* Sizes for reports (`iommu bench`): bytes of the memory index; bytes of one IOTLB entry
 * (the struct); bytes per IOTLB slot with its share of the hash, keys and recency ring. */
uint64_t mem_index_bytes(const iommu_mem *m);
uint32_t unit_iotlb_entry_bytes(void);
uint64_t unit_iotlb_slot_bytes(const iommu_unit *u);
