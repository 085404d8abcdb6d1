"""The pure-Python translation engine: the readable reference the C engine must equal.

It is organised like ``cext/iommu_engine.c``, function for function: replacement-policy
caches, context fetch, second-level walk, fault recording, translate, invalidation.
Comments name the VT-d spec rule each check follows (section numbers of rev. 4.x/5.0).
"""
from __future__ import annotations

from collections import OrderedDict

from iommu.engine_config import (
    ACCESS_EXECUTE,
    ACCESS_PRIVILEGED,
    ACCESS_TRANSLATED,
    ACCESS_TRANSLATION_REQUEST,
    ACCESS_WRITE,
    FLAG_CONTEXT_HIT,
    FLAG_FAULT_RECORDED,
    FLAG_IOTLB_HIT,
    FLAG_PASSTHROUGH,
    FLAG_PSC_HIT,
    FLAG_STALE,
    NO_PASID,
    EngineConfig,
)
from iommu.entries import SL_PS, SL_R, SL_SNP, SL_TM, SL_W, TT_ALL, TT_PASSTHROUGH
from iommu.faults import FaultReason as FR
from iommu.memory import PhysicalMemory

POLICY_LRU, POLICY_FIFO, POLICY_RANDOM = 0, 1, 2
_M64 = (1 << 64) - 1
_PAGE_4K = 4096

COUNTER_NAMES = (
    "translations",
    "faults",
    "faults_recorded",
    "context_hits",
    "context_misses",
    "context_evictions",
    "context_invalidations",
    "iotlb_hits",
    "iotlb_misses",
    "iotlb_evictions",
    "iotlb_invalidations",
    "walks",
    "memory_reads",
    "stale_hits",
    "psc_hits",
    "psc_misses",
    "psc_evictions",
    "psc_invalidations",
)


class Counters:
    """Event counters; the same fields as ``iommu_counters`` in C."""

    __slots__ = COUNTER_NAMES

    def __init__(self):
        for name in COUNTER_NAMES:
            setattr(self, name, 0)


class FaultRegisters:
    """Primary fault logging state; the same fields as ``iommu_fault_regs`` in C.

    ``pfo``, ``fri`` and the pending count make up FSTS (PPF is "any F bit set");
    ``frcd_lo``/``frcd_hi`` are the 128-bit fault recording registers; ``fectl`` holds
    IM (bit 31) and IP (bit 30); ``fault_events`` counts interrupts the unit signalled.
    """

    __slots__ = ("nfr", "next", "pending", "pfo", "fri", "fectl", "fault_events",
                 "frcd_lo", "frcd_hi")

    def __init__(self, nfr: int):
        self.nfr = nfr
        self.next = 0
        self.pending = 0
        self.pfo = 0
        self.fri = 0
        self.fectl = 1 << 31  # IM set at reset (spec: FECTL reset value)
        self.fault_events = 0
        self.frcd_lo = [0] * 256  # 256 registers as in C; the unit uses the first nfr
        self.frcd_hi = [0] * 256


def rng_next(state: int) -> int:
    """xorshift64: the random-replacement generator both engines share."""
    state ^= (state << 13) & _M64
    state ^= state >> 7
    state ^= (state << 17) & _M64
    return state


class SlotCache:
    """A cache of ``size`` slots in sets of ``ways`` (fully associative by default) with
    LRU, FIFO or random replacement within a set.

    Set ``k`` owns slots ``k*ways`` to ``k*ways + ways - 1``. Each set keeps its free slots
    as a stack (its lowest slot first at start; freed slots pushed in slot order) and its
    occupied slots oldest first; LRU and FIFO evict the oldest of the set, random evicts
    slot ``set*ways + rng % ways``. The C engine follows the same rules, so contents stay
    equal. A ``ways`` that does not divide ``size`` means fully associative.
    """

    __slots__ = ("size", "ways", "nsets", "policy", "rng", "index", "keys", "values",
                 "orders", "free")

    def __init__(self, size: int, policy: int, seed: int, ways: int = 0):
        if ways <= 0 or ways > size or size % ways:
            ways = size
        self.size = size
        self.ways = ways
        self.nsets = size // ways if ways else 1
        self.policy = policy
        self.rng = seed or 1
        self.index: dict = {}
        self.keys: list = [None] * size
        self.values: list = [None] * size
        self.orders = [OrderedDict() for _ in range(self.nsets)]
        self.free = [list(range(base + ways - 1, base - 1, -1))
                     for base in range(0, size, ways)] if size else [[]]

    def lookup(self, key):
        slot = self.index.get(key)
        if slot is None:
            return None
        if self.policy == POLICY_LRU:
            self.orders[slot // self.ways].move_to_end(slot)
        return self.values[slot]

    def insert(self, key, value, set_index: int = 0):
        """Fill a slot of set ``set_index``; returns the valid entry evicted to make room,
        or None."""
        if self.size == 0:
            return None
        evicted = None
        free = self.free[set_index]
        order = self.orders[set_index]
        if free:
            slot = free.pop()
        else:
            if self.policy == POLICY_RANDOM:
                self.rng = rng_next(self.rng)
                slot = set_index * self.ways + self.rng % self.ways
            else:
                slot = next(iter(order))
            evicted = self.values[slot]
            del self.index[self.keys[slot]]
            del order[slot]
        self.keys[slot] = key
        self.values[slot] = value
        self.index[key] = slot
        order[slot] = None
        return evicted

    def remove_where(self, predicate) -> int:
        removed = 0
        for slot in range(self.size):
            value = self.values[slot]
            if value is not None and predicate(value):
                del self.index[self.keys[slot]]
                del self.orders[slot // self.ways][slot]
                self.keys[slot] = None
                self.values[slot] = None
                self.free[slot // self.ways].append(slot)
                removed += 1
        return removed

    def __len__(self) -> int:
        return len(self.index)


class ContextCacheEntry:
    """A cached, validated context entry (tagged by source id; DID for invalidation)."""

    __slots__ = ("sid", "did", "tt", "aw", "width", "slpt", "fpd", "gen")

    def __init__(self, sid, did, tt, aw, width, slpt, fpd, gen):
        self.sid, self.did, self.tt, self.aw = sid, did, tt, aw
        self.width, self.slpt, self.fpd, self.gen = width, slpt, fpd, gen

    def same_as(self, other: "ContextCacheEntry") -> bool:
        return (self.did, self.tt, self.aw, self.slpt, self.fpd) == (
            other.did, other.tt, other.aw, other.slpt, other.fpd)


class PscEntry:
    """A cached non-leaf second-level entry (paging-structure cache, spec 6.2.4): the
    next table's address and the rights granted down to it, tagged by domain id, the
    entry's level and the address bits above the region it covers."""

    __slots__ = ("did", "level", "vpn", "table", "perm", "gen")

    def __init__(self, did, level, vpn, table, perm, gen):
        self.did, self.level, self.vpn = did, level, vpn
        self.table, self.perm, self.gen = table, perm, gen


class IotlbEntry:
    """A cached leaf translation, tagged by domain id, PASID, leaf level and page number."""

    __slots__ = ("did", "pasid", "level", "vpn", "base", "perm", "snp", "tm", "gen")

    def __init__(self, did, pasid, level, vpn, base, perm, snp, tm, gen):
        self.did, self.pasid, self.level, self.vpn = did, pasid, level, vpn
        self.base, self.perm, self.snp, self.tm, self.gen = base, perm, snp, tm, gen

    def same_leaf(self, level, base, perm, snp, tm) -> bool:
        return (self.level, self.base, self.perm, self.snp, self.tm) == (level, base, perm, snp, tm)


def _level_shift(level: int) -> int:
    return 12 + 9 * (level - 1)


def _remove_counted(cache: SlotCache, level_count: list, predicate) -> int:
    """Remove the entries ``predicate`` selects, keeping the per-level counts right."""

    def removing(entry) -> bool:
        if predicate(entry):
            level_count[entry.level] -= 1
            return True
        return False

    return cache.remove_where(removing)


class PythonEngine:
    """Translation, caches and fault recording of one remapping unit, in Python."""

    name = "python"

    def __init__(self, memory: PhysicalMemory, config: EngineConfig):
        self.memory = memory
        self.config = config
        self.counters = Counters()
        self.faults = FaultRegisters(min(max(config.nfr, 1), 256))  # NFR + 1 is 1..256
        self.root_table = 0
        self.enabled = False
        self.context_cache = SlotCache(config.context_entries, config.policy, config.seed)
        self.iotlb = SlotCache(config.iotlb_entries, config.policy, config.seed ^ 0x5DEECE66D,
                               config.iotlb_ways)
        self._iotlb_level_count = [0, 0, 0, 0]  # valid IOTLB entries per leaf level (1..3)
        self.psc = SlotCache(config.psc_entries, config.policy, config.seed ^ 0x2545F4914F6CDD1D)
        self._psc_level_count = [0] * 6  # valid paging-structure entries per level (2..5)
        self._psc_used = None  # the paging-structure entry the current request started from
        haw = min(config.haw, 52)
        self._addr_mask = ((1 << haw) - 1) & ~0xFFF
        self._did_mask = (1 << config.domain_id_bits) - 1
        self._sl_reserved = self._second_level_reserved_masks(haw)
        # Root entry (legacy, spec 9.1): low 11:1 and 63:HAW reserved; high half reserved.
        self._root_reserved_lo = 0xFFE | (_M64 & ~((1 << haw) - 1))
        # Context entry (legacy, spec 9.3): low 11:4 and 63:HAW; high 7 and 63:24.
        self._context_reserved_lo = 0xFF0 | (_M64 & ~((1 << haw) - 1))
        self._context_reserved_hi = 0x80 | (_M64 & ~((1 << 24) - 1))

    # -- reserved bits ------------------------------------------------------------
    def _second_level_reserved_masks(self, haw: int) -> list[list[int]]:
        """masks[level][ps]: reserved bits of a present second-level entry (spec 9.8)."""
        cfg = self.config
        above_haw = ((1 << 52) - 1) & ~((1 << haw) - 1)  # bits 51:HAW
        leaf_extra = (0 if cfg.sc else SL_SNP) | (0 if cfg.dt else SL_TM)
        masks = [[0, 0] for _ in range(6)]
        for level in range(1, 6):
            masks[level][0] = above_haw | (leaf_extra if level == 1 else 0)
            if level == 2 and cfg.sllps & 1:  # 2 MiB leaf: address bits 20:12 reserved
                masks[level][1] = above_haw | leaf_extra | 0x1FF000
            elif level == 3 and cfg.sllps & 2:  # 1 GiB leaf: address bits 29:12 reserved
                masks[level][1] = above_haw | leaf_extra | 0x3FFFF000
            elif level == 1:
                masks[level][1] = masks[level][0]  # bit 7 of a 4 KiB entry is ignored
            else:
                masks[level][1] = above_haw | SL_PS  # PS where no such page size exists
        return masks

    # -- unit state --------------------------------------------------------------
    def set_root_table(self, rtaddr: int) -> None:
        self.root_table = rtaddr & self._addr_mask

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    # -- context ------------------------------------------------------------------
    def _fetch_context(self, sid: int, count: bool):
        """Root entry then context entry for ``sid`` (spec 3.4.2). Returns (fault, entry, fpd)."""
        mem = self.memory
        raddr = self.root_table + (sid >> 8) * 16
        if raddr + 16 > mem.size:
            return FR.ROOT_ENTRY_READ_ERROR, None, 0
        rlo, rhi = mem.read_u64(raddr), mem.read_u64(raddr + 8)
        if count:
            self.counters.memory_reads += 1
        if not rlo & 1:
            return FR.ROOT_ENTRY_NOT_PRESENT, None, 0
        if rlo & self._root_reserved_lo or rhi:
            return FR.ROOT_ENTRY_RESERVED, None, 0
        caddr = (rlo & self._addr_mask) + (sid & 0xFF) * 16
        if caddr + 16 > mem.size:
            return FR.CONTEXT_ENTRY_READ_ERROR, None, 0
        clo, chi = mem.read_u64(caddr), mem.read_u64(caddr + 8)
        if count:
            self.counters.memory_reads += 1
        fpd = clo >> 1 & 1  # FPD is evaluated even when P is clear (spec 9.3)
        if not clo & 1:
            return FR.CONTEXT_ENTRY_NOT_PRESENT, None, fpd
        if clo & self._context_reserved_lo or chi & self._context_reserved_hi:
            return FR.CONTEXT_ENTRY_RESERVED, None, fpd
        tt, aw = clo >> 2 & 3, chi & 7
        cfg = self.config
        if (
            aw > 3  # SAGAW bit 4 is reserved: at most 5 levels
            or not cfg.sagaw >> aw & 1
            or tt == 3
            or (tt == TT_ALL and not cfg.dt)
            or (tt == TT_PASSTHROUGH and not cfg.pt)
        ):
            return FR.CONTEXT_ENTRY_INVALID, None, fpd
        # DID bits above the ND width are not implemented (spec 9.3): ignore them.
        entry = ContextCacheEntry(
            sid, (chi >> 8) & self._did_mask, tt, aw, min(cfg.mgaw, 30 + 9 * aw),
            clo & self._addr_mask, fpd, mem.generation,
        )
        return 0, entry, fpd

    # -- second-level walk ------------------------------------------------------
    def _second_level_walk(self, slpt: int, levels: int, iova: int, write: int, count: bool,
                           perm: int = 7, psc_did: int | None = None):
        """Walk from ``levels`` down (spec 3.6). Returns (fault, level, base, perm, snp, tm);
        for a permission fault, ``level`` is where it stopped and ``perm`` that entry's R/W
        bits (0: not present).

        ``perm`` is the rights granted above the first table read (all, from the top);
        with ``psc_did`` every non-leaf entry passed is put in the paging-structure cache.
        """
        mem = self.memory
        size = mem.size
        need = SL_W if write else SL_R
        table = slpt
        for level in range(levels, 0, -1):
            addr = table + ((iova >> (12 + 9 * (level - 1))) & 511) * 8
            if addr + 8 > size:
                return FR.PAGING_ENTRY_READ_ERROR, 0, 0, 0, 0, 0
            entry = mem.read_u64(addr)
            if count:
                self.counters.memory_reads += 1
            # The request's right at this level first (a not-present entry has neither).
            if not entry & need:
                fault = FR.WRITE_NOT_PERMITTED if write else FR.READ_NOT_PERMITTED
                return fault, level, 0, entry & (SL_R | SL_W), 0, 0
            ps = 1 if entry & SL_PS else 0
            if entry & self._sl_reserved[level][ps]:
                return FR.PAGING_ENTRY_RESERVED, 0, 0, 0, 0, 0
            perm &= entry
            if level == 1 or ps:
                page_mask = (1 << (12 + 9 * (level - 1))) - 1
                base = entry & self._addr_mask & ~page_mask
                return 0, level, base, perm & 7, entry >> 11 & 1, entry >> 62 & 1
            table = entry & self._addr_mask
            if psc_did is not None:
                self._psc_fill(psc_did, level, iova, table, perm & 7)
        raise AssertionError("unreachable: level 1 is always a leaf")

    # -- paging-structure cache ---------------------------------------------------
    def _psc_lookup(self, did: int, iova: int, levels: int):
        """The deepest cached non-leaf entry on iova's path (a PDE before a PDPE...)."""
        counts = self._psc_level_count
        for level in range(2, levels + 1):
            if counts[level]:
                entry = self.psc.lookup((did, level, iova >> _level_shift(level)))
                if entry is not None:
                    return entry
        return None

    def _psc_fill(self, did: int, level: int, iova: int, table: int, perm: int) -> None:
        vpn = iova >> _level_shift(level)
        entry = PscEntry(did, level, vpn, table, perm, self.memory.generation)
        evicted = self.psc.insert((did, level, vpn), entry)
        if evicted is not None:
            self.counters.psc_evictions += 1
            self._psc_level_count[evicted.level] -= 1
        self._psc_level_count[level] += 1

    # -- IOTLB --------------------------------------------------------------------
    def _iotlb_lookup(self, did: int, pasid: int, iova: int):
        counts = self._iotlb_level_count
        for level in (1, 2, 3):  # 4 KiB first, then 2 MiB, then 1 GiB
            if counts[level]:
                entry = self.iotlb.lookup((did, pasid, level, iova >> _level_shift(level)))
                if entry is not None:
                    return entry
        return None

    def _iotlb_fill(self, did, pasid, iova, level, base, perm, snp, tm) -> None:
        if self.iotlb.size == 0:
            return
        vpn = iova >> _level_shift(level)
        entry = IotlbEntry(did, pasid, level, vpn, base, perm, snp, tm, self.memory.generation)
        # Set-associative IOTLBs index their sets by the low bits of the page number.
        evicted = self.iotlb.insert((did, pasid, level, vpn), entry, vpn % self.iotlb.nsets)
        if evicted is not None:
            self.counters.iotlb_evictions += 1
            self._iotlb_level_count[evicted.level] -= 1
        self._iotlb_level_count[level] += 1

    # -- faults -------------------------------------------------------------------
    def _record_fault(self, reason: int, sid: int, iova: int, access: int) -> bool:
        """Primary fault logging (spec 7.2.1): the ring of fault recording registers."""
        f = self.faults
        nfr = min(max(f.nfr, 1), 256)  # software may have written these; stay in range
        if self.config.collapse_faults and f.pending:
            for i in range(nfr):
                if f.frcd_hi[i] >> 63 and f.frcd_hi[i] & 0xFFFF == sid:
                    return False
        if f.pfo:
            return False
        i = f.next % nfr
        if f.frcd_hi[i] >> 63:
            f.pfo = 1
            self._fault_event()
            return False
        f.frcd_lo[i] = iova & ~0xFFF & _M64
        f.frcd_hi[i] = (
            1 << 63
            | (0 if access & ACCESS_WRITE else 1 << 62)  # T: 0 write, 1 read
            | reason << 32
            | (1 << 30 if access & ACCESS_EXECUTE else 0)
            | (1 << 29 if access & ACCESS_PRIVILEGED else 0)
            | sid
        )
        f.next = (i + 1) % nfr
        f.pending += 1
        if f.pending == 1:
            f.fri = i
            self._fault_event()
        return True

    def _fault_event(self) -> None:
        f = self.faults
        if f.fectl >> 31 & 1:  # IM: hold the interrupt pending
            f.fectl |= 1 << 30
        else:
            f.fault_events += 1

    def _fault(self, reason, sid, iova, access, fpd, flags):
        self.counters.faults += 1
        # A translation request that meets a not-present entry or lacks the right is
        # answered with a completion granting nothing (R=W=0), not a recorded fault
        # (spec 4.2.3); only the other conditions are recorded.
        answered = access & ACCESS_TRANSLATION_REQUEST and reason in (
            FR.WRITE_NOT_PERMITTED, FR.READ_NOT_PERMITTED)
        if not fpd and not answered and self._record_fault(reason, sid, iova, access):
            self.counters.faults_recorded += 1
            flags |= FLAG_FAULT_RECORDED
        return int(reason), 0, 0, flags

    # -- translation --------------------------------------------------------------
    def translate(self, sid: int, iova: int, access: int = 0, pasid: int = NO_PASID):
        """One request. Returns (fault, hpa, page_size, flags); fault 0 means success."""
        c = self.counters
        c.translations += 1
        if not self.enabled:  # translation disabled: requests pass untranslated (GSTS.TES=0)
            return 0, iova, _PAGE_4K, FLAG_PASSTHROUGH
        flags = 0
        write = access & ACCESS_WRITE
        pasid = NO_PASID  # legacy mode: requests are translated without PASID
        ctx = self.context_cache.lookup(sid)
        if ctx is not None:
            c.context_hits += 1
            flags |= FLAG_CONTEXT_HIT
        else:
            c.context_misses += 1
            fault, ctx, fpd = self._fetch_context(sid, True)
            if fault:
                return self._fault(fault, sid, iova, access, fpd, flags)
            if self.context_cache.insert(sid, ctx) is not None:
                c.context_evictions += 1
        self._psc_used = None
        result = self._translate_with_context(ctx, sid, iova, access, write, pasid, flags)
        if self.config.track_stale and result[3] & (FLAG_CONTEXT_HIT | FLAG_IOTLB_HIT
                                                    | FLAG_PSC_HIT):
            result = self._check_stale(ctx, sid, iova, access, result)
        if result[0]:
            return self._fault(result[0], sid, iova, access, ctx.fpd, result[3])
        return result

    def _translate_with_context(self, ctx, sid, iova, access, write, pasid, flags):
        """Request type, address width, then pass-through, IOTLB or walk.

        A fault is returned, not recorded. Context TT (spec 9.3): 00 blocks translation
        and translated requests; 01 allows them; 10 (pass-through) blocks them.
        """
        if access & (ACCESS_TRANSLATION_REQUEST | ACCESS_TRANSLATED):
            if ctx.tt != TT_ALL:
                return FR.TRANSLATION_REQUEST_BLOCKED, 0, 0, flags
            if access & ACCESS_TRANSLATED:  # already a host address: passes as it is
                return 0, iova, _PAGE_4K, flags | FLAG_PASSTHROUGH
        if iova >> ctx.width:  # spec 3.6: input address above 2^min(MGAW, AGAW) - 1
            return FR.ADDRESS_BEYOND_WIDTH, 0, 0, flags
        if ctx.tt == TT_PASSTHROUGH:
            return 0, iova, _PAGE_4K, flags | FLAG_PASSTHROUGH
        c = self.counters
        hit = self._iotlb_lookup(ctx.did, pasid, iova)
        if hit is not None:
            c.iotlb_hits += 1
            flags |= FLAG_IOTLB_HIT
            # A cached translation without the right faults; hardware does not re-walk.
            if not hit.perm & (SL_W if write else SL_R):
                return (FR.WRITE_NOT_PERMITTED if write else FR.READ_NOT_PERMITTED), 0, 0, flags
            size = 1 << _level_shift(hit.level)
            return 0, hit.base | (iova & (size - 1)), size, flags
        c.iotlb_misses += 1
        c.walks += 1
        table, levels, perm, psc_did = ctx.slpt, ctx.aw + 2, 7, None
        if self.psc.size:
            psc_did = ctx.did
            cached = self._psc_lookup(ctx.did, iova, levels)
            if cached is None:
                c.psc_misses += 1
            else:
                c.psc_hits += 1
                flags |= FLAG_PSC_HIT
                self._psc_used = cached
                if not cached.perm & (SL_W if write else SL_R):  # cached rights: no re-walk
                    return (FR.WRITE_NOT_PERMITTED if write else FR.READ_NOT_PERMITTED), 0, 0, flags
                table, levels, perm = cached.table, cached.level - 1, cached.perm
        fault, level, base, perm, snp, tm = self._second_level_walk(
            table, levels, iova, write, True, perm, psc_did)
        if fault:
            if self.config.cm and level and not perm:
                # Caching mode (CAP.CM): a not-present entry may be cached too; software
                # must invalidate after making it present (spec 6.1).
                self._iotlb_fill(ctx.did, pasid, iova, 1, 0, 0, 0, 0)
            return fault, 0, 0, flags
        self._iotlb_fill(ctx.did, pasid, iova, level, base, perm, snp, tm)
        size = 1 << _level_shift(level)
        return 0, base | (iova & (size - 1)), size, flags

    def _check_stale(self, ctx, sid, iova, access, served):
        """Compare a cache-served result with the tables as they are now (no side effects).

        Cache entries remember the memory generation they were checked at; only when
        memory was written since is the fresh walk done. Equal entries are re-stamped.
        """
        gen = self.memory.generation
        iotlb_entry = None
        if served[3] & FLAG_IOTLB_HIT:
            iotlb_entry = self._iotlb_peek(ctx.did, iova)
        psc_entry = self._psc_used
        if ctx.gen == gen and (iotlb_entry is None or iotlb_entry.gen == gen) and (
                psc_entry is None or psc_entry.gen == gen):
            return served
        fault, fresh_ctx, _ = self._fetch_context(sid, False)
        fresh = (fault, 0)
        leaf = None
        if not fault:
            if access & (ACCESS_TRANSLATION_REQUEST | ACCESS_TRANSLATED) and fresh_ctx.tt != TT_ALL:
                fresh = (FR.TRANSLATION_REQUEST_BLOCKED, 0)
            elif access & ACCESS_TRANSLATED:
                fresh = (0, iova)
            elif iova >> fresh_ctx.width:
                fresh = (FR.ADDRESS_BEYOND_WIDTH, 0)
            elif fresh_ctx.tt == TT_PASSTHROUGH:
                fresh = (0, iova)
            else:
                leaf = self._second_level_walk(
                    fresh_ctx.slpt, fresh_ctx.aw + 2, iova, access & ACCESS_WRITE, False)
                if leaf[0]:
                    fresh = (leaf[0], 0)
                else:
                    size = 1 << _level_shift(leaf[1])
                    fresh = (0, leaf[2] | (iova & (size - 1)))
        if (int(fresh[0]), fresh[1]) != (int(served[0]), served[1]):
            self.counters.stale_hits += 1
            return served[0], served[1], served[2], served[3] | FLAG_STALE
        if fresh_ctx is not None and ctx.same_as(fresh_ctx):
            ctx.gen = gen
        if iotlb_entry is not None and leaf is not None and not leaf[0] and fresh_ctx.did == ctx.did \
                and iotlb_entry.same_leaf(*leaf[1:]):
            iotlb_entry.gen = gen
        return served

    def _iotlb_peek(self, did: int, iova: int):
        """The IOTLB entry a lookup would find, without touching replacement state."""
        for level in (1, 2, 3):
            if self._iotlb_level_count[level]:
                slot = self.iotlb.index.get((did, NO_PASID, level, iova >> _level_shift(level)))
                if slot is not None:
                    return self.iotlb.values[slot]
        return None

    def translate_batch(self, sids, iovas, accesses, out_hpa, out_fault, out_flags) -> None:
        translate = self.translate
        for i in range(len(sids)):
            fault, hpa, _size, flags = translate(sids[i], iovas[i], accesses[i])
            out_hpa[i] = hpa
            out_fault[i] = fault
            out_flags[i] = flags

    # -- invalidation -------------------------------------------------------------
    def invalidate_context(self, granularity: int, did: int = 0, sid: int = 0, fm: int = 0) -> int:
        """Context-cache invalidation (spec 6.5.1.1). Returns the granularity performed."""
        if granularity == 1:
            predicate = lambda e: True  # noqa: E731
        elif granularity == 2:
            predicate = lambda e: e.did == did  # noqa: E731
        elif granularity == 3:
            # FM masks the 1, 2 or 3 most significant function bits from the comparison.
            fm &= 3  # a 2-bit field (CCMD bits 33:32)
            mask = 0xFFFF & ~(((1 << fm) - 1) << (3 - fm))
            predicate = lambda e: (e.sid & mask) == (sid & mask) and e.did == did  # noqa: E731
        else:
            return 0
        self.counters.context_invalidations += self.context_cache.remove_where(predicate)
        return granularity

    def invalidate_iotlb(self, granularity: int, did: int = 0, addr: int = 0, am: int = 0,
                         ih: int = 0) -> int:
        """IOTLB invalidation (spec 6.5.1.2). Returns the granularity performed."""
        cfg = self.config
        if granularity == 3 and (not cfg.psi or am > cfg.mamv):
            granularity = 2  # page-selective not possible: invalidate the whole domain
        if granularity == 1:
            predicate = lambda e: True  # noqa: E731
        elif granularity == 2:
            predicate = lambda e: e.did == did  # noqa: E731
        elif granularity == 3:
            span = 1 << (12 + am)
            start = addr & ~(span - 1) & _M64
            end = start + span

            def predicate(e):
                size_shift = _level_shift(e.level)
                e_start = e.vpn << size_shift
                return e.did == did and e_start < end and start < e_start + (1 << size_shift)
        else:
            return 0
        self.counters.iotlb_invalidations += _remove_counted(
            self.iotlb, self._iotlb_level_count, predicate)
        if self.psc.size and not (granularity == 3 and ih):
            # Paging-structure caches go too, except for a page-selective invalidation
            # with IH (only leaf entries changed, spec 6.5.1.2).
            self.counters.psc_invalidations += _remove_counted(
                self.psc, self._psc_level_count, predicate)
        return granularity

    # -- inspection ---------------------------------------------------------------
    def counter_values(self) -> dict:
        return {name: getattr(self.counters, name) for name in COUNTER_NAMES}

    def cache_occupancy(self) -> dict:
        return {"context": len(self.context_cache), "iotlb": len(self.iotlb),
                "psc": len(self.psc)}
