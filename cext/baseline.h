/* Bare C baselines and a peer walk, compiled with the engine (cext/baseline.c), for
 * `iommu bench`: every engine figure is quoted as a fraction of what the machine does
 * with the same data structures and nothing else. Read by cffi's cdef after
 * iommu_engine.h (plain declarations only).
 */

/* The IOTLB's own hash probe, nothing else: for each address, find the 4 KiB entry
 * (domain `did`) in the unit's IOTLB hash and form the host address. No replacement
 * update, no permission or staleness check, no counters. Returns how many were found. */
uint64_t baseline_iotlb_probe(iommu_unit *u, uint32_t did, const uint64_t *iovas,
                              uint64_t n, uint64_t *out_hpa);

/* The walk's pointer chase, nothing else: from `slpt`, levels `levels` down to
 * `leaf_level`, each entry read through the same iommu_mem frame index behind the same
 * per-level frame memo the engine's walk has; the host address is the leaf's address
 * bits plus the page offset. No checks. Returns the leaves found. */
uint64_t baseline_walk(iommu_mem *m, uint64_t slpt, uint32_t levels, uint32_t leaf_level,
                       const uint64_t *iovas, uint64_t n, uint64_t *out_hpa);

/* The two together, as the engine meets a request: the IOTLB's hash probe (at 4 KiB, and
 * at the leaf's page size when that is larger), then, when it misses, the pointer chase
 * of baseline_walk. No replacement update, no fill, no checks, no counters. Returns the
 * addresses found (in the IOTLB or as a leaf). */
uint64_t baseline_probe_walk(iommu_unit *u, uint32_t did, uint64_t slpt, uint32_t levels,
                             uint32_t leaf_level, const uint64_t *iovas, uint64_t n,
                             uint64_t *out_hpa);

/* A peer: a second-level walk in the style of QEMU's vtd_iova_to_slpte (written from its
 * documented behaviour): range check of the address, then per level one read of the
 * entry through a generic memory-read call (an out-of-line function through a pointer,
 * as a DMA read through an address space is), all-ones as a failed read, the access
 * right, the reserved bits of that level, last-entry test, next table. Returns how many
 * translated without fault; out_hpa is 0 for a fault. `write` selects the right checked. */
uint64_t peer_qemu_style_walk(iommu_unit *u, uint64_t slpt, uint32_t levels, uint32_t width,
                              const uint64_t *iovas, uint64_t n, uint32_t write,
                              uint64_t *out_hpa);
