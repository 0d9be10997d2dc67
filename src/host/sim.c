// SPDX-License-Identifier: MIT
/*
 * The sim host: a small simulated host kernel, so that everything Linux does
 * to a KVM guest's memory behind the MMU's back can be done here on demand,
 * and so that a guest access through a translation the host has changed is
 * caught (checking mode) instead of silently reading the wrong bytes.
 *
 * Frames. One mmap'd arena of cfg->frames pages; frame i has PFN
 * SIM_PFN_BASE + i, so page_ptr() is arithmetic. A frame's reference count
 * is its mapcount (host PTEs pointing at it) plus its pins; whoever drops the
 * last reference frees it: under the mm lock straight onto the free FIFO,
 * from put_page() (lock-free) onto a pending stack that the next allocation
 * drains. The FIFO hands out the frame freed longest ago, so a freed frame
 * stays dead (and, in checking mode, full of poison) as long as possible.
 *
 * VMAs. gpamm_sim_mmap() hands out HVAs from [2^40, 2^47), each VMA aligned
 * to the PMD span of the page size and followed by a guard gap, never reused.
 * Each VMA has a host page table, one 64-bit entry per page (HPTE_*), written
 * whole with atomics under the mm lock and read lock-free by check_access(),
 * which finds the VMA through a two-level directory indexed by HVA unit.
 * Partial munmap is supported: unmapped pages become HPTE_HOLE; a VMA whose
 * pages are all holes leaves the directory. Because readers are lock-free, a
 * retired VMA (and its table) is only freed at destroy: memory for VMA
 * bookkeeping grows with the number of VMAs ever mapped (8 bytes a page).
 * madv_dontneed, mprotect and host reads/writes act within one VMA (the
 * guard gaps make any wider range contain an unmapped page: -ENOMEM/-EFAULT);
 * munmap, reclaim, migrate and merge walk every VMA the range meets.
 *
 * Events follow the MMU notifier rule: with the mm lock held (so no fault can
 * pin a page of the range meanwhile), invalidate_range_start, then change the
 * host PTEs and frames, then invalidate_range_end. munmap, madv_dontneed and
 * mprotect invalidate the whole range (per VMA); reclaim, migrate and merge
 * pick their pages first and invalidate each contiguous run of picked pages.
 * A write that breaks copy-on-write (get_page or gpamm_sim_write) changes the
 * PTE of a page a guest may map read-only, so it invalidates that page too.
 * Pinned frames are skipped by reclaim, migrate and merge, as Linux does for
 * long-term pinned pages; munmap/dontneed of a pinned page only unmaps it and
 * the frame lives until its last put_page().
 *
 * Locks: the mm lock (a mutex) covers VMAs, host PTE writes, frame
 * allocation, swap and the notifier registry. put_page, mark_page, page_ptr,
 * check_access and stats never take it (host.h lock rules).
 *
 * Limits: HUGE is accepted and ignored (map_shift is always page_shift);
 * migrate and reclaim skip merged (shared) frames, having no reverse map;
 * no -EHWPOISON yet. Aging (clear_young, test_young) only asks the attached
 * MMUs. Destroying the host with notifiers still registered calls their
 * release() (the mm-exit path); the memory stays until the last VM lets go.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "gpamm/host.h"
#include "guestcall.h"
#include "util.h"

#define SIM_PFN_BASE      0x100ULL
#define SIM_HVA_BASE      (1ULL << 40)
#define SIM_HVA_LIMIT     (1ULL << 47)
#define SIM_LEAF_BITS     12
#define SIM_LEAF_ENTRIES  (1ULL << SIM_LEAF_BITS)
#define SIM_MAX_NOTIFIERS 16
#define SIM_POISON        0x6b /* what a freed frame reads as in checking mode */
#define SIM_MMAP_FLAGS    (GPAMM_SIM_READONLY | GPAMM_SIM_DEVICE | GPAMM_SIM_HUGE)

/* Host PTE: flags in the low bits, a PFN (present) or swap slot (swapped) above. */
#define HPTE_PRESENT   (1ULL << 0)
#define HPTE_WRITE     (1ULL << 1) /* present, exclusive and the protection allows writes */
#define HPTE_SWAP      (1ULL << 2)
#define HPTE_COW       (1ULL << 3) /* frame shared by merge: write must copy */
#define HPTE_PROT_RO   (1ULL << 4) /* mprotect read-only; kept while not present */
#define HPTE_HOLE      (1ULL << 5) /* munmapped */
#define HPTE_VAL_SHIFT 12
#define HPTE_FLAGS     ((1ULL << HPTE_VAL_SHIFT) - 1)

static inline uint64_t hpte_val(uint64_t pte)
{
	return pte >> HPTE_VAL_SHIFT;
}

enum { FRAME_FREE = 0, FRAME_LIVE = 1 };
#define FRAME_ACCESSED (1u << 0)
#define FRAME_DIRTY    (1u << 1)

struct sim_frame {
	uint32_t ref;          /* mapcount + pins (atomic): freed at 0 */
	uint32_t pins;         /* atomic */
	uint32_t mapcount;     /* host PTEs pointing here; mm lock */
	uint32_t next_pending; /* pending-free stack link (index + 1) */
	uint8_t state;         /* FRAME_* (atomic) */
	uint8_t flags;         /* FRAME_ACCESSED / FRAME_DIRTY (atomic) */
};

struct sim_vma {
	uint64_t start, len, npages;
	unsigned flags;        /* GPAMM_SIM_* */
	uint64_t nr_mapped;    /* pages not munmapped; mm lock */
	uint64_t *ptes;
	struct sim_vma *prev, *next; /* live list in address order, or graveyard */
};

struct sim_notifier {
	const struct gpamm_mmu_notifier_ops *ops;
	void *mn;
};

struct sim_host {
	struct gpamm_host h;
	uint64_t page_size, page_mask;
	unsigned unit_shift;   /* HVA directory granule and VMA alignment */
	pthread_mutex_t mm_lock;

	uint8_t *arena;
	uint64_t nframes;
	struct sim_frame *frames;
	uint32_t *freeq;       /* FIFO of free frame indices */
	uint64_t freeq_head, freeq_count;
	uint32_t pending;      /* lock-free stack of frames freed by put_page (index + 1) */

	uint8_t *swap;
	uint64_t nswap;
	uint32_t *swap_free;   /* stack of free slots */
	uint64_t swap_nfree;

	struct sim_vma ***dir; /* [top][leaf] -> VMA covering that HVA unit */
	uint64_t ndir;
	uint64_t hva_next;
	struct sim_vma *vma_head, *vma_tail;
	struct sim_vma *graveyard;

	unsigned nr_notifiers;
	struct sim_notifier notifiers[SIM_MAX_NOTIFIERS];

	/* statistics, read lock-free */
	uint64_t pinned, frames_live, stale, faults_in, swapped, events;
};

static inline struct sim_host *to_sim(struct gpamm_host *h)
{
	return (struct sim_host *)h;
}

static inline void stat_add(uint64_t *c, int64_t v)
{
	__atomic_add_fetch(c, (uint64_t)v, __ATOMIC_RELAXED);
}

/* ---- frames ------------------------------------------------------------- */

static inline void *frame_ptr(struct sim_host *s, uint64_t idx)
{
	return s->arena + (idx << s->h.page_shift);
}

static inline uint64_t frame_pfn(uint64_t idx)
{
	return SIM_PFN_BASE + idx;
}

/* Frame index of @pfn, or nframes when it is not one of ours. */
static inline uint64_t pfn_idx(struct sim_host *s, uint64_t pfn)
{
	uint64_t idx = pfn - SIM_PFN_BASE; /* wraps for pfn < base */

	return idx < s->nframes ? idx : s->nframes;
}

/* Put a dead frame on the free FIFO, poisoned so a stale reader sees garbage. */
static void frame_release_locked(struct sim_host *s, uint64_t idx)
{
	if (s->h.checking)
		memset(frame_ptr(s, idx), SIM_POISON, s->page_size);
	s->freeq[(s->freeq_head + s->freeq_count) % s->nframes] = (uint32_t)idx;
	s->freeq_count++;
}

/* Frames whose last reference was a pin dropped by put_page(). */
static void drain_pending_locked(struct sim_host *s)
{
	uint32_t n = __atomic_exchange_n(&s->pending, 0, __ATOMIC_ACQUIRE);

	while (n) {
		uint64_t idx = n - 1;

		n = s->frames[idx].next_pending;
		frame_release_locked(s, idx);
	}
}

/* Lock-free: queue a dead frame for the next mm-lock holder to free. */
static void pending_push(struct sim_host *s, uint64_t idx)
{
	uint32_t head = __atomic_load_n(&s->pending, __ATOMIC_RELAXED);

	/* Only drains (which take the whole stack) pop: no ABA to fear. */
	do {
		s->frames[idx].next_pending = head;
	} while (!__atomic_compare_exchange_n(&s->pending, &head, (uint32_t)idx + 1, true,
					      __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

/*
 * Drop one reference; the last one kills the frame. State goes FREE before
 * the frame can be reused, so check_access() sees a dead frame as dead.
 */
static void frame_put_ref(struct sim_host *s, uint64_t idx, bool locked)
{
	struct sim_frame *f = &s->frames[idx];
	uint32_t old = __atomic_fetch_sub(&f->ref, 1, __ATOMIC_ACQ_REL);

	GPAMM_BUG_ON(old == 0);
	if (old != 1)
		return;
	__atomic_store_n(&f->state, FRAME_FREE, __ATOMIC_RELEASE);
	stat_add(&s->frames_live, -1);
	if (locked)
		frame_release_locked(s, idx);
	else
		pending_push(s, idx);
}

/* A frame for new contents (the caller fills it), or -1 when the pool is empty. */
static int64_t frame_alloc_locked(struct sim_host *s)
{
	struct sim_frame *f;
	uint64_t idx;

	/* Drained on every allocation so frames freed by puts get poisoned soon. */
	drain_pending_locked(s);
	if (!s->freeq_count)
		return -1;
	idx = s->freeq[s->freeq_head];
	s->freeq_head = (s->freeq_head + 1) % s->nframes;
	s->freeq_count--;
	f = &s->frames[idx];
	GPAMM_BUG_ON(__atomic_load_n(&f->ref, __ATOMIC_RELAXED) != 0);
	f->mapcount = 0;
	__atomic_store_n(&f->pins, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&f->flags, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&f->state, FRAME_LIVE, __ATOMIC_RELEASE);
	stat_add(&s->frames_live, 1);
	return (int64_t)idx;
}

/* Free frames, counting those only a put_page() away from the free list. */
static uint64_t frames_free_locked(struct sim_host *s)
{
	drain_pending_locked(s);
	return s->freeq_count;
}

static void frame_map_locked(struct sim_host *s, uint64_t idx)
{
	s->frames[idx].mapcount++;
	__atomic_add_fetch(&s->frames[idx].ref, 1, __ATOMIC_RELAXED);
}

static void frame_unmap_locked(struct sim_host *s, uint64_t idx)
{
	GPAMM_BUG_ON(s->frames[idx].mapcount == 0);
	s->frames[idx].mapcount--;
	frame_put_ref(s, idx, true);
}

/* ---- swap ---------------------------------------------------------------- */

static inline void *swap_ptr(struct sim_host *s, uint64_t slot)
{
	return s->swap + (slot << s->h.page_shift);
}

static void swap_slot_free_locked(struct sim_host *s, uint64_t slot)
{
	s->swap_free[s->swap_nfree++] = (uint32_t)slot;
	stat_add(&s->swapped, -1);
}

/* ---- VMAs and host PTEs ----------------------------------------------------- */

static inline uint64_t hpte_load(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void hpte_store(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline uint64_t vma_end(const struct sim_vma *v)
{
	return v->start + v->len;
}

static inline uint64_t vma_hva(struct sim_host *s, const struct sim_vma *v, uint64_t i)
{
	return v->start + (i << s->h.page_shift);
}

/* Lock-free: the VMA whose pages cover @hva, or NULL. */
static struct sim_vma *vma_lookup(struct sim_host *s, uint64_t hva)
{
	struct sim_vma **leaf, *v;
	uint64_t u;

	if (hva < SIM_HVA_BASE || hva >= SIM_HVA_LIMIT)
		return NULL;
	u = (hva - SIM_HVA_BASE) >> s->unit_shift;
	leaf = __atomic_load_n(&s->dir[u >> SIM_LEAF_BITS], __ATOMIC_ACQUIRE);
	if (!leaf)
		return NULL;
	v = __atomic_load_n(&leaf[u & (SIM_LEAF_ENTRIES - 1)], __ATOMIC_ACQUIRE);
	if (!v || hva - v->start >= v->len)
		return NULL;
	return v;
}

/* Point the directory units of [start, end) at @v (NULL to clear). */
static int dir_set_locked(struct sim_host *s, uint64_t start, uint64_t end, struct sim_vma *v)
{
	uint64_t u0 = (start - SIM_HVA_BASE) >> s->unit_shift;
	uint64_t u1 = (end - 1 - SIM_HVA_BASE) >> s->unit_shift;
	uint64_t u;

	for (u = u0; u <= u1; u++) {
		struct sim_vma **leaf = s->dir[u >> SIM_LEAF_BITS];

		if (!leaf) {
			if (!v)
				continue;
			leaf = calloc(SIM_LEAF_ENTRIES, sizeof(*leaf));
			if (!leaf)
				return -ENOMEM;
			/* Published initialised: lock-free lookups may see it at once. */
			__atomic_store_n(&s->dir[u >> SIM_LEAF_BITS], leaf, __ATOMIC_RELEASE);
		}
		__atomic_store_n(&leaf[u & (SIM_LEAF_ENTRIES - 1)], v, __ATOMIC_RELEASE);
	}
	return 0;
}

/*
 * Take a fully unmapped VMA out of the directory. Its table is kept (all
 * holes) until destroy: a lock-free check_access() may still be reading it.
 */
static void vma_retire_locked(struct sim_host *s, struct sim_vma *v)
{
	dir_set_locked(s, v->start, vma_end(v), NULL);
	if (v->prev)
		v->prev->next = v->next;
	else
		s->vma_head = v->next;
	if (v->next)
		v->next->prev = v->prev;
	else
		s->vma_tail = v->prev;
	v->prev = NULL;
	v->next = s->graveyard;
	s->graveyard = v;
}

static inline bool vma_may_write(const struct sim_vma *v, uint64_t pte)
{
	return !(v->flags & GPAMM_SIM_READONLY) && !(pte & HPTE_PROT_RO);
}

/* Make a page not present, freeing what backed it; protection bits stay. */
static void pte_zap_locked(struct sim_host *s, uint64_t *ptep)
{
	uint64_t pte = hpte_load(ptep);

	hpte_store(ptep, pte & (HPTE_PROT_RO | HPTE_HOLE));
	if (pte & HPTE_PRESENT)
		frame_unmap_locked(s, hpte_val(pte));
	else if (pte & HPTE_SWAP)
		swap_slot_free_locked(s, hpte_val(pte));
}

/* Range arguments of every event: page aligned, non-empty, no wrap. */
static bool range_ok(struct sim_host *s, uint64_t hva, uint64_t len)
{
	return len && !((hva | len) & s->page_mask) && hva + len > hva;
}

/*
 * madv_dontneed, mprotect: the whole range must be mapped. Guard gaps
 * between VMAs mean that is only possible inside one VMA.
 */
static struct sim_vma *range_vma_locked(struct sim_host *s, uint64_t hva, uint64_t len)
{
	struct sim_vma *v = vma_lookup(s, hva);
	uint64_t i, n;

	if (!v || hva + len > vma_end(v))
		return NULL;
	i = (hva - v->start) >> s->h.page_shift;
	for (n = len >> s->h.page_shift; n; n--, i++)
		if (hpte_load(&v->ptes[i]) & HPTE_HOLE)
			return NULL;
	return v;
}

/* ---- notifiers ------------------------------------------------------------- */

static void notify_start_locked(struct sim_host *s, uint64_t start, uint64_t end)
{
	unsigned i;

	for (i = 0; i < s->nr_notifiers; i++)
		if (s->notifiers[i].ops->invalidate_range_start)
			s->notifiers[i].ops->invalidate_range_start(s->notifiers[i].mn, start, end);
}

static void notify_end_locked(struct sim_host *s, uint64_t start, uint64_t end)
{
	unsigned i;

	for (i = 0; i < s->nr_notifiers; i++)
		if (s->notifiers[i].ops->invalidate_range_end)
			s->notifiers[i].ops->invalidate_range_end(s->notifiers[i].mn, start, end);
}

/* ---- faults -------------------------------------------------------------- */

/*
 * Give the page a private copy. A frame no other PTE maps is simply reused;
 * otherwise the page moves to a copy, and a guest translation of the shared
 * frame must go first.
 */
static int cow_break_locked(struct sim_host *s, struct sim_vma *v, uint64_t i)
{
	uint64_t *ptep = &v->ptes[i];
	uint64_t pte = hpte_load(ptep);
	uint64_t old = hpte_val(pte), hva = vma_hva(s, v, i);
	int64_t idx;

	if (s->frames[old].mapcount == 1) {
		hpte_store(ptep, (pte & ~HPTE_COW) | HPTE_WRITE);
		return 0;
	}
	idx = frame_alloc_locked(s);
	if (idx < 0)
		return -ENOMEM;
	memcpy(frame_ptr(s, (uint64_t)idx), frame_ptr(s, old), s->page_size);
	notify_start_locked(s, hva, hva + s->page_size);
	frame_map_locked(s, (uint64_t)idx);
	hpte_store(ptep, ((uint64_t)idx << HPTE_VAL_SHIFT) | (pte & HPTE_PROT_RO) |
			 HPTE_PRESENT | HPTE_WRITE);
	frame_unmap_locked(s, old);
	notify_end_locked(s, hva, hva + s->page_size);
	return 0;
}

/*
 * Make page @i of @v present (zero-filled or swapped in) and, for @write,
 * exclusively writable. The caller checked the protection. A page that was
 * not present has no guest translation, so no notifier is needed for it.
 */
static int fault_in_locked(struct sim_host *s, struct sim_vma *v, uint64_t i, bool write,
			   bool *faulted)
{
	uint64_t *ptep = &v->ptes[i];
	uint64_t pte = hpte_load(ptep);
	int64_t idx;

	*faulted = false;
	if (!(pte & HPTE_PRESENT)) {
		idx = frame_alloc_locked(s);
		if (idx < 0)
			return -ENOMEM;
		if (pte & HPTE_SWAP) {
			memcpy(frame_ptr(s, (uint64_t)idx), swap_ptr(s, hpte_val(pte)), s->page_size);
			swap_slot_free_locked(s, hpte_val(pte));
		} else {
			memset(frame_ptr(s, (uint64_t)idx), 0, s->page_size);
		}
		frame_map_locked(s, (uint64_t)idx);
		pte = ((uint64_t)idx << HPTE_VAL_SHIFT) | (pte & HPTE_PROT_RO) | HPTE_PRESENT |
		      (vma_may_write(v, pte) ? HPTE_WRITE : 0);
		hpte_store(ptep, pte);
		*faulted = true;
	}
	if (write && (pte & HPTE_COW))
		return cow_break_locked(s, v, i);
	return 0;
}

static int sim_get_page(struct gpamm_host *h, uint64_t hva, bool write,
			struct gpamm_host_page *out)
{
	struct sim_host *s = to_sim(h);
	struct sim_frame *f;
	struct sim_vma *v;
	uint64_t i, pte;
	bool faulted;
	int ret;

	if (hva & s->page_mask)
		return -EFAULT;
	pthread_mutex_lock(&s->mm_lock);
	v = vma_lookup(s, hva);
	ret = -EFAULT;
	if (!v)
		goto out;
	i = (hva - v->start) >> h->page_shift;
	pte = hpte_load(&v->ptes[i]);
	if ((pte & HPTE_HOLE) || (write && !vma_may_write(v, pte)))
		goto out;
	ret = fault_in_locked(s, v, i, write, &faulted);
	if (ret)
		goto out;
	if (faulted)
		stat_add(&s->faults_in, 1);
	/*
	 * Flags are read here, under the lock, with the pin taken: what the
	 * caller is told is what the host PTE says now (REFERENCE.md 7.12).
	 */
	pte = hpte_load(&v->ptes[i]);
	f = &s->frames[hpte_val(pte)];
	__atomic_add_fetch(&f->pins, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&f->ref, 1, __ATOMIC_RELAXED);
	stat_add(&s->pinned, 1);
	out->pfn = frame_pfn(hpte_val(pte));
	out->flags = ((pte & HPTE_WRITE) ? GPAMM_HOST_PAGE_WRITABLE : 0) |
		     ((v->flags & GPAMM_SIM_DEVICE) ? GPAMM_HOST_PAGE_UNCACHED : 0);
	out->map_shift = h->page_shift;
out:
	pthread_mutex_unlock(&s->mm_lock);
	return ret;
}

static inline void frame_mark(struct sim_frame *f, bool accessed, bool dirty)
{
	uint8_t m = (accessed ? FRAME_ACCESSED : 0) | (dirty ? FRAME_DIRTY : 0);

	if (m)
		__atomic_or_fetch(&f->flags, m, __ATOMIC_RELAXED);
}

static void sim_put_page(struct gpamm_host *h, uint64_t pfn, bool accessed, bool dirty)
{
	struct sim_host *s = to_sim(h);
	uint64_t idx = pfn_idx(s, pfn);
	struct sim_frame *f;
	uint32_t old;

	GPAMM_BUG_ON(idx == s->nframes);
	if (idx == s->nframes)
		return;
	f = &s->frames[idx];
	frame_mark(f, accessed, dirty);
	/*
	 * Release: what the pin holder wrote to the page is visible to an
	 * event that sees the pin gone and copies the page (cand_ok()).
	 */
	old = __atomic_fetch_sub(&f->pins, 1, __ATOMIC_RELEASE);
	/* An unbalanced put would free a frame someone still maps. */
	GPAMM_BUG_ON(old == 0);
	if (old == 0) {
		__atomic_add_fetch(&f->pins, 1, __ATOMIC_RELAXED);
		return;
	}
	stat_add(&s->pinned, -1);
	frame_put_ref(s, idx, false);
}

static void sim_mark_page(struct gpamm_host *h, uint64_t pfn, bool accessed, bool dirty)
{
	struct sim_host *s = to_sim(h);
	uint64_t idx = pfn_idx(s, pfn);

	GPAMM_BUG_ON(idx == s->nframes);
	if (idx != s->nframes)
		frame_mark(&s->frames[idx], accessed, dirty);
}

static void *sim_page_ptr(struct gpamm_host *h, uint64_t pfn)
{
	struct sim_host *s = to_sim(h);
	uint64_t idx = pfn_idx(s, pfn);

	GPAMM_BUG_ON(idx == s->nframes);
	return idx == s->nframes ? NULL : frame_ptr(s, idx);
}

static int sim_check_access(struct gpamm_host *h, uint64_t hva, uint64_t pfn, bool write)
{
	struct sim_host *s = to_sim(h);
	struct sim_vma *v = vma_lookup(s, hva);
	uint64_t idx = pfn_idx(s, pfn), pte;

	if (!v || idx == s->nframes)
		goto stale;
	pte = hpte_load(&v->ptes[(hva - v->start) >> h->page_shift]);
	if (!(pte & HPTE_PRESENT) || hpte_val(pte) != idx)
		goto stale;
	if (__atomic_load_n(&s->frames[idx].state, __ATOMIC_ACQUIRE) != FRAME_LIVE)
		goto stale;
	if (write && !(pte & HPTE_WRITE))
		goto stale;
	return 0;
stale:
	stat_add(&s->stale, 1);
	return -ESTALE;
}

/* ---- notifier registry, stats ------------------------------------------------ */

static int sim_notifier_register(struct gpamm_host *h, const struct gpamm_mmu_notifier_ops *ops,
				 void *mn)
{
	struct sim_host *s = to_sim(h);
	int ret = 0;
	unsigned i;

	if (!ops || !mn)
		return -EINVAL;
	pthread_mutex_lock(&s->mm_lock);
	for (i = 0; i < s->nr_notifiers; i++)
		if (s->notifiers[i].mn == mn)
			ret = -EEXIST;
	if (!ret && s->nr_notifiers == SIM_MAX_NOTIFIERS)
		ret = -ENOSPC;
	if (!ret)
		s->notifiers[s->nr_notifiers++] = (struct sim_notifier){ ops, mn };
	pthread_mutex_unlock(&s->mm_lock);
	return ret;
}

static void sim_notifier_unregister(struct gpamm_host *h, void *mn)
{
	struct sim_host *s = to_sim(h);
	unsigned i;

	pthread_mutex_lock(&s->mm_lock);
	for (i = 0; i < s->nr_notifiers; i++) {
		if (s->notifiers[i].mn == mn) {
			/* Keep registration order: events call notifiers in it. */
			memmove(&s->notifiers[i], &s->notifiers[i + 1],
				(s->nr_notifiers - i - 1) * sizeof(s->notifiers[0]));
			s->nr_notifiers--;
			break;
		}
	}
	pthread_mutex_unlock(&s->mm_lock);
}

static void sim_stats(struct gpamm_host *h, struct gpamm_host_stats *st)
{
	struct sim_host *s = to_sim(h);

	*st = (struct gpamm_host_stats){
		.pinned = __atomic_load_n(&s->pinned, __ATOMIC_RELAXED),
		.frames_live = __atomic_load_n(&s->frames_live, __ATOMIC_RELAXED),
		.frames_total = s->nframes,
		.stale_accesses = __atomic_load_n(&s->stale, __ATOMIC_RELAXED),
		.faults_in = __atomic_load_n(&s->faults_in, __ATOMIC_RELAXED),
		.swapped = __atomic_load_n(&s->swapped, __ATOMIC_RELAXED),
		.events = __atomic_load_n(&s->events, __ATOMIC_RELAXED),
	};
}

static void vma_free_list(struct sim_vma *v)
{
	while (v) {
		struct sim_vma *next = v->next;

		free(v->ptes);
		free(v);
		v = next;
	}
}

/* The address space goes away under every MMU still registered (mm exit). */
static void sim_exit(struct gpamm_host *h)
{
	struct sim_host *s = to_sim(h);

	pthread_mutex_lock(&s->mm_lock);
	for (unsigned i = 0; i < s->nr_notifiers; i++)
		if (s->notifiers[i].ops->release)
			s->notifiers[i].ops->release(s->notifiers[i].mn);
	pthread_mutex_unlock(&s->mm_lock);
}

static void sim_destroy(struct gpamm_host *h)
{
	struct sim_host *s = to_sim(h);
	uint64_t i;

	vma_free_list(s->vma_head);
	vma_free_list(s->graveyard);
	if (s->dir)
		for (i = 0; i < s->ndir; i++)
			free(s->dir[i]);
	free(s->dir);
	if (s->arena)
		munmap(s->arena, s->nframes << h->page_shift);
	if (s->swap)
		munmap(s->swap, s->nswap << h->page_shift);
	free(s->frames);
	free(s->freeq);
	free(s->swap_free);
	pthread_mutex_destroy(&s->mm_lock);
	free(s);
}

static const struct gpamm_host_ops sim_ops = {
	.name = "sim",
	.get_page = sim_get_page,
	.put_page = sim_put_page,
	.mark_page = sim_mark_page,
	.page_ptr = sim_page_ptr,
	.check_access = sim_check_access,
	.notifier_register = sim_notifier_register,
	.notifier_unregister = sim_notifier_unregister,
	.stats = sim_stats,
	.exit = sim_exit,
	.destroy = sim_destroy,
};

/* The gpamm_sim_* calls refuse another kind of host (-EINVAL): VMM input, not a bug. */
static struct sim_host *sim_of(struct gpamm_host *h)
{
	return h && h->ops == &sim_ops ? to_sim(h) : NULL;
}

/*
 * gpamm_host_sim_create() - see host.h. Return: NULL on a bad config or ENOMEM.
 * Context: any thread; allocates the whole frame arena and swap up front.
 */
struct gpamm_host *gpamm_host_sim_create(const struct gpamm_sim_config *cfg)
{
	unsigned shift;
	struct sim_host *s;
	uint64_t i, units;

	if (!cfg)
		return NULL;
	shift = cfg->page_shift;
	if (shift != 12 && shift != 14 && shift != 16)
		return NULL;
	/* Indices must fit 32 bits, and PFNs / swap slots the host PTE. */
	if (!cfg->frames || cfg->frames >= UINT32_MAX || cfg->swap_pages >= UINT32_MAX)
		return NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->h.ops = &sim_ops;
	s->h.page_shift = shift;
	s->h.checking = cfg->checking;
	s->page_size = 1ULL << shift;
	s->page_mask = s->page_size - 1;
	s->unit_shift = 2 * shift - 3; /* the PMD span: huge-mappable alignment */
	s->hva_next = SIM_HVA_BASE;
	s->nframes = cfg->frames;
	s->nswap = cfg->swap_pages;
	pthread_mutex_init(&s->mm_lock, NULL);

	units = (SIM_HVA_LIMIT - SIM_HVA_BASE) >> s->unit_shift;
	s->ndir = (units + SIM_LEAF_ENTRIES - 1) >> SIM_LEAF_BITS;
	s->dir = calloc(s->ndir, sizeof(*s->dir));
	s->frames = calloc(s->nframes, sizeof(*s->frames));
	s->freeq = malloc(s->nframes * sizeof(*s->freeq));
	s->arena = mmap(NULL, s->nframes << shift, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (s->arena == MAP_FAILED) {
		s->arena = NULL;
	} else {
		/* big arenas fault in faster with huge pages, where the kernel has them */
		madvise(s->arena, s->nframes << shift, MADV_HUGEPAGE);
		/* frame bytes are arithmetic: let TLB fills skip page_ptr() */
		s->h.pfn_linear = true;
		s->h.pfn_linear_off = (intptr_t)s->arena - (intptr_t)(SIM_PFN_BASE << shift);
	}
	if (s->nswap) {
		s->swap_free = malloc(s->nswap * sizeof(*s->swap_free));
		s->swap = mmap(NULL, s->nswap << shift, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (s->swap == MAP_FAILED)
			s->swap = NULL;
	}
	if (!s->dir || !s->frames || !s->freeq || !s->arena ||
	    (s->nswap && (!s->swap_free || !s->swap))) {
		sim_destroy(&s->h);
		return NULL;
	}
	for (i = 0; i < s->nframes; i++)
		s->freeq[i] = (uint32_t)i;
	s->freeq_count = s->nframes;
	/* Pop order is low slot first: easier to read in a debugger. */
	for (i = 0; i < s->nswap; i++)
		s->swap_free[i] = (uint32_t)(s->nswap - 1 - i);
	s->swap_nfree = s->nswap;
	if (s->h.checking)
		memset(s->arena, SIM_POISON, s->nframes << shift);
	return &s->h;
}

/*
 * gpamm_sim_mmap() - see host.h. Flags: GPAMM_SIM_READONLY, _DEVICE, _HUGE
 * (accepted, no effect yet). Return: 0, -EINVAL (bad length or flags),
 * -ENOMEM (HVA space or bookkeeping exhausted).
 * Context: takes the mm lock; no notifier (nothing can map new HVAs yet).
 */
static int sim_event_mmap(struct gpamm_host *h, uint64_t len, unsigned flags, uint64_t *hva)
{
	struct sim_host *s = sim_of(h);
	struct sim_vma *v;
	uint64_t start, end;
	int ret;

	if (!s || !hva || !len || (len & s->page_mask) || (flags & ~SIM_MMAP_FLAGS))
		return -EINVAL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	pthread_mutex_lock(&s->mm_lock);
	start = s->hva_next;
	end = start + len;
	ret = -ENOMEM;
	if (len > SIM_HVA_LIMIT - start)
		goto fail;
	v->start = start;
	v->len = len;
	v->npages = len >> h->page_shift;
	v->flags = flags;
	v->nr_mapped = v->npages;
	v->ptes = calloc(v->npages, sizeof(*v->ptes));
	if (!v->ptes)
		goto fail;
	ret = dir_set_locked(s, start, end, v);
	if (ret) {
		dir_set_locked(s, start, end, NULL);
		goto fail;
	}
	v->prev = s->vma_tail;
	if (s->vma_tail)
		s->vma_tail->next = v;
	else
		s->vma_head = v;
	s->vma_tail = v;
	/* Next VMA: aligned, after one unit of guard gap, never overlapping. */
	end = ((end + (1ULL << s->unit_shift) - 1) >> s->unit_shift) << s->unit_shift;
	s->hva_next = end + (1ULL << s->unit_shift);
	pthread_mutex_unlock(&s->mm_lock);
	*hva = start;
	return 0;
fail:
	pthread_mutex_unlock(&s->mm_lock);
	free(v->ptes);
	free(v);
	return ret;
}

/*
 * gpamm_sim_munmap() - see host.h. Any page-aligned range; pages of it that
 * are not mapped are ignored (as munmap(2) does). Partial VMAs are fine.
 * Return: 0 or -EINVAL (bad range).
 * Context: takes the mm lock; notifiers per VMA met.
 */
static int sim_event_munmap(struct gpamm_host *h, uint64_t hva, uint64_t len)
{
	struct sim_host *s = sim_of(h);
	struct sim_vma *v, *next;
	uint64_t end = hva + len;

	if (!s || !range_ok(s, hva, len))
		return -EINVAL;
	pthread_mutex_lock(&s->mm_lock);
	for (v = s->vma_head; v && v->start < end; v = next) {
		uint64_t a = hva > v->start ? hva : v->start;
		uint64_t b = end < vma_end(v) ? end : vma_end(v);
		uint64_t i, i1;

		next = v->next;
		if (a >= b)
			continue;
		notify_start_locked(s, a, b);
		i1 = (b - v->start) >> h->page_shift;
		for (i = (a - v->start) >> h->page_shift; i < i1; i++) {
			uint64_t pte = hpte_load(&v->ptes[i]);

			if (pte & HPTE_HOLE)
				continue;
			pte_zap_locked(s, &v->ptes[i]);
			hpte_store(&v->ptes[i], HPTE_HOLE);
			v->nr_mapped--;
		}
		notify_end_locked(s, a, b);
		if (!v->nr_mapped)
			vma_retire_locked(s, v);
	}
	stat_add(&s->events, 1);
	pthread_mutex_unlock(&s->mm_lock);
	return 0;
}

/*
 * gpamm_sim_madv_dontneed() - see host.h. Return: 0, -EINVAL (bad range, or
 * device memory, as Linux refuses for PFNMAP), -ENOMEM (part of the range is
 * not mapped; nothing done).
 * Context: takes the mm lock; notifier over the whole range.
 */
static int sim_event_madv_dontneed(struct gpamm_host *h, uint64_t hva, uint64_t len)
{
	struct sim_host *s = sim_of(h);
	struct sim_vma *v;
	uint64_t i, n;
	int ret = 0;

	if (!s || !range_ok(s, hva, len))
		return -EINVAL;
	pthread_mutex_lock(&s->mm_lock);
	v = range_vma_locked(s, hva, len);
	if (!v)
		ret = -ENOMEM;
	else if (v->flags & GPAMM_SIM_DEVICE)
		ret = -EINVAL;
	if (ret)
		goto out;
	notify_start_locked(s, hva, hva + len);
	i = (hva - v->start) >> h->page_shift;
	for (n = len >> h->page_shift; n; n--, i++)
		pte_zap_locked(s, &v->ptes[i]);
	notify_end_locked(s, hva, hva + len);
	stat_add(&s->events, 1);
out:
	pthread_mutex_unlock(&s->mm_lock);
	return ret;
}

/*
 * gpamm_sim_mprotect() - see host.h. Making a range writable again restores
 * write access to present private pages at once (merged pages stay
 * copy-on-write). Return: 0, -EINVAL (bad range), -ENOMEM (part of the range
 * not mapped), -EACCES (writable asked of a READONLY mapping); nothing is
 * changed on error.
 * Context: takes the mm lock; notifier over the whole range either way.
 */
static int sim_event_mprotect(struct gpamm_host *h, uint64_t hva, uint64_t len, bool writable)
{
	struct sim_host *s = sim_of(h);
	struct sim_vma *v;
	uint64_t i, n;
	int ret = 0;

	if (!s || !range_ok(s, hva, len))
		return -EINVAL;
	pthread_mutex_lock(&s->mm_lock);
	v = range_vma_locked(s, hva, len);
	if (!v)
		ret = -ENOMEM;
	else if (writable && (v->flags & GPAMM_SIM_READONLY))
		ret = -EACCES;
	if (ret)
		goto out;
	notify_start_locked(s, hva, hva + len);
	i = (hva - v->start) >> h->page_shift;
	for (n = len >> h->page_shift; n; n--, i++) {
		uint64_t pte = hpte_load(&v->ptes[i]);

		if (!writable)
			pte = (pte | HPTE_PROT_RO) & ~HPTE_WRITE;
		else if ((pte & (HPTE_PRESENT | HPTE_COW)) == HPTE_PRESENT)
			pte = (pte & ~HPTE_PROT_RO) | HPTE_WRITE;
		else
			pte &= ~HPTE_PROT_RO;
		hpte_store(&v->ptes[i], pte);
	}
	notify_end_locked(s, hva, hva + len);
	stat_add(&s->events, 1);
out:
	pthread_mutex_unlock(&s->mm_lock);
	return ret;
}

/* ---- page-picking events: reclaim, migrate, merge --------------------------- */

struct sim_cand {
	struct sim_vma *vma;
	uint64_t i;
	uint64_t hash;
	uint64_t seq;
};

/* Which pages an event may take: present, ours to move, nobody pinning it. */
enum cand_kind { CAND_PRIVATE, CAND_MERGEABLE };

static bool cand_ok(struct sim_host *s, const struct sim_vma *v, uint64_t pte, enum cand_kind k)
{
	const struct sim_frame *f;

	if (!(pte & HPTE_PRESENT) || (v->flags & GPAMM_SIM_DEVICE))
		return false;
	f = &s->frames[hpte_val(pte)];
	if (__atomic_load_n(&f->pins, __ATOMIC_ACQUIRE))
		return false;
	/* No reverse map: a shared frame can be merged into, not moved. */
	return k == CAND_MERGEABLE || f->mapcount == 1;
}

/*
 * Pick up to @max candidate pages of [hva, hva + len) in address order.
 * Pins can only drop while we hold the mm lock, so a page picked here stays
 * a valid candidate until the lock is released.
 * Return: the count, or -ENOMEM; *@found tells whether any page qualified
 * before @max cut the list short.
 */
static int64_t cands_collect_locked(struct sim_host *s, uint64_t hva, uint64_t len,
				    enum cand_kind k, uint64_t max, struct sim_cand **out,
				    bool *found)
{
	struct sim_cand *c = NULL, *nc;
	uint64_t n = 0, cap = 0, end = hva + len;
	struct sim_vma *v;

	*found = false;
	for (v = s->vma_head; v && v->start < end; v = v->next) {
		uint64_t a = hva > v->start ? hva : v->start;
		uint64_t b = end < vma_end(v) ? end : vma_end(v);
		uint64_t i, i1;

		if (a >= b)
			continue;
		i1 = (b - v->start) >> s->h.page_shift;
		for (i = (a - v->start) >> s->h.page_shift; i < i1; i++) {
			if (!cand_ok(s, v, hpte_load(&v->ptes[i]), k))
				continue;
			*found = true;
			if (n == max)
				goto done;
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				nc = realloc(c, cap * sizeof(*c));
				if (!nc) {
					free(c);
					return -ENOMEM;
				}
				c = nc;
			}
			c[n] = (struct sim_cand){ .vma = v, .i = i, .seq = n };
			n++;
		}
	}
done:
	*out = c;
	return (int64_t)n;
}

/* Invalidate (start) or end each run of address-contiguous candidates. */
static void cands_notify_locked(struct sim_host *s, const struct sim_cand *c, uint64_t n,
				bool start)
{
	uint64_t a = 0, b;

	while (a < n) {
		for (b = a + 1; b < n && c[b].vma == c[a].vma && c[b].i == c[b - 1].i + 1; b++)
			;
		if (start)
			notify_start_locked(s, vma_hva(s, c[a].vma, c[a].i),
					    vma_hva(s, c[b - 1].vma, c[b - 1].i) + s->page_size);
		else
			notify_end_locked(s, vma_hva(s, c[a].vma, c[a].i),
					  vma_hva(s, c[b - 1].vma, c[b - 1].i) + s->page_size);
		a = b;
	}
}

/*
 * gpamm_sim_reclaim() - see host.h. Swaps out present, unpinned, unshared,
 * non-device pages in address order. Return: pages swapped (0 when none
 * qualified), -EINVAL (bad range), -ENOSPC (no swap configured, or pages
 * qualified but swap is full), -ENOMEM.
 * Context: takes the mm lock; notifier per run of reclaimed pages.
 */
static int64_t sim_event_reclaim(struct gpamm_host *h, uint64_t hva, uint64_t len, uint64_t max)
{
	struct sim_host *s = sim_of(h);
	struct sim_cand *c = NULL;
	int64_t n;
	uint64_t k;
	bool found;

	if (!s || !range_ok(s, hva, len))
		return -EINVAL;
	if (!s->nswap)
		return -ENOSPC;
	if (!max)
		return 0;
	pthread_mutex_lock(&s->mm_lock);
	if (max > s->swap_nfree)
		max = s->swap_nfree;
	n = cands_collect_locked(s, hva, len, CAND_PRIVATE, max, &c, &found);
	if (n == 0 && found)
		n = -ENOSPC; /* only a full swap stops a qualifying page at 0 */
	if (n <= 0)
		goto out;
	cands_notify_locked(s, c, (uint64_t)n, true);
	for (k = 0; k < (uint64_t)n; k++) {
		uint64_t *ptep = &c[k].vma->ptes[c[k].i];
		uint64_t pte = hpte_load(ptep);
		uint64_t slot = s->swap_free[--s->swap_nfree];

		memcpy(swap_ptr(s, slot), frame_ptr(s, hpte_val(pte)), s->page_size);
		hpte_store(ptep, (slot << HPTE_VAL_SHIFT) | (pte & HPTE_PROT_RO) | HPTE_SWAP);
		stat_add(&s->swapped, 1);
		frame_unmap_locked(s, hpte_val(pte));
	}
	cands_notify_locked(s, c, (uint64_t)n, false);
out:
	if (n >= 0)
		stat_add(&s->events, 1);
	pthread_mutex_unlock(&s->mm_lock);
	free(c);
	return n;
}

/*
 * gpamm_sim_migrate() - see host.h. Moves present, unpinned, unshared,
 * non-device pages to frames that were free longest; old frames are freed
 * (poisoned in checking mode). Return: pages moved (0 when none qualified),
 * -EINVAL, -ENOMEM (pages qualified but no frame was free, or bookkeeping).
 * Context: takes the mm lock; notifier per run of moved pages.
 */
static int64_t sim_event_migrate(struct gpamm_host *h, uint64_t hva, uint64_t len)
{
	struct sim_host *s = sim_of(h);
	struct sim_cand *c = NULL;
	int64_t n, moved = 0;
	uint64_t k;
	bool found;

	if (!s || !range_ok(s, hva, len))
		return -EINVAL;
	pthread_mutex_lock(&s->mm_lock);
	n = cands_collect_locked(s, hva, len, CAND_PRIVATE, frames_free_locked(s), &c, &found);
	if (n == 0 && found)
		n = -ENOMEM;
	if (n <= 0)
		goto out;
	cands_notify_locked(s, c, (uint64_t)n, true);
	for (k = 0; k < (uint64_t)n; k++) {
		uint64_t *ptep = &c[k].vma->ptes[c[k].i];
		uint64_t pte = hpte_load(ptep), old = hpte_val(pte);
		int64_t idx = frame_alloc_locked(s);

		/* Counted above under the lock, which every allocation takes. */
		GPAMM_BUG_ON(idx < 0);
		if (idx < 0)
			break;
		moved++;
		memcpy(frame_ptr(s, (uint64_t)idx), frame_ptr(s, old), s->page_size);
		__atomic_store_n(&s->frames[idx].flags,
				 __atomic_load_n(&s->frames[old].flags, __ATOMIC_RELAXED),
				 __ATOMIC_RELAXED);
		frame_map_locked(s, (uint64_t)idx);
		hpte_store(ptep, ((uint64_t)idx << HPTE_VAL_SHIFT) | (pte & HPTE_FLAGS));
		frame_unmap_locked(s, old);
	}
	cands_notify_locked(s, c, (uint64_t)n, false);
	n = moved;
out:
	if (n >= 0)
		stat_add(&s->events, 1);
	pthread_mutex_unlock(&s->mm_lock);
	free(c);
	return n;
}

static uint64_t page_hash(const void *p, uint64_t size)
{
	const uint64_t *w = p;
	uint64_t h = 0xcbf29ce484222325ULL, i;

	for (i = 0; i < size / 8; i++)
		h = (h ^ w[i]) * 0x100000001b3ULL;
	return h;
}

static int cand_cmp_hash(const void *a, const void *b)
{
	const struct sim_cand *x = a, *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int cand_cmp_seq(const void *a, const void *b)
{
	const struct sim_cand *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Point page @m at @keeper's frame, read-only copy-on-write. */
static void merge_into_locked(struct sim_host *s, const struct sim_cand *m, uint64_t keeper)
{
	uint64_t *ptep = &m->vma->ptes[m->i];
	uint64_t pte = hpte_load(ptep), old = hpte_val(pte);

	frame_map_locked(s, keeper);
	hpte_store(ptep, (keeper << HPTE_VAL_SHIFT) | (pte & HPTE_PROT_RO) | HPTE_PRESENT |
			 HPTE_COW);
	frame_unmap_locked(s, old);
}

static void make_cow_locked(const struct sim_cand *m)
{
	uint64_t *ptep = &m->vma->ptes[m->i];

	hpte_store(ptep, (hpte_load(ptep) | HPTE_COW) & ~HPTE_WRITE);
}

/*
 * gpamm_sim_merge() - see host.h. Like KSM: candidates (present, unpinned,
 * non-device pages) are write-protected first (notifier), then compared, so
 * no guest write can slip in between compare and merge. In each set of
 * identical pages the lowest address keeps its frame, every page of the set
 * maps it copy-on-write, and the others' frames are dropped. Return: pages
 * that changed frame, -EINVAL, -ENOMEM.
 * Context: takes the mm lock; notifier per run of candidate pages.
 */
static int64_t sim_event_merge(struct gpamm_host *h, uint64_t hva, uint64_t len)
{
	struct sim_host *s = sim_of(h);
	struct sim_cand *c = NULL;
	uint64_t k, a, b, merged = 0;
	int64_t n;
	bool found;

	if (!s || !range_ok(s, hva, len))
		return -EINVAL;
	pthread_mutex_lock(&s->mm_lock);
	n = cands_collect_locked(s, hva, len, CAND_MERGEABLE, UINT64_MAX, &c, &found);
	if (n <= 0)
		goto out;
	cands_notify_locked(s, c, (uint64_t)n, true);
	for (k = 0; k < (uint64_t)n; k++)
		c[k].hash = page_hash(frame_ptr(s, hpte_val(hpte_load(&c[k].vma->ptes[c[k].i]))),
				      s->page_size);
	qsort(c, (uint64_t)n, sizeof(*c), cand_cmp_hash);
	for (a = 0; a < (uint64_t)n; a = b) {
		for (b = a + 1; b < (uint64_t)n && c[b].hash == c[a].hash; b++)
			;
		/*
		 * One hash, possibly several contents: each page joins the
		 * first earlier page with equal bytes. Lowest address wins
		 * because the sort keeps address order within a hash.
		 */
		for (k = a + 1; k < b; k++) {
			uint64_t pk = hpte_val(hpte_load(&c[k].vma->ptes[c[k].i]));
			uint64_t j;

			for (j = a; j < k; j++) {
				uint64_t pj = hpte_val(hpte_load(&c[j].vma->ptes[c[j].i]));

				if (pj != pk && memcmp(frame_ptr(s, pj), frame_ptr(s, pk),
						       s->page_size))
					continue;
				if (pj != pk) {
					merge_into_locked(s, &c[k], pj);
					merged++;
				}
				make_cow_locked(&c[j]);
				make_cow_locked(&c[k]);
				break;
			}
		}
	}
	qsort(c, (uint64_t)n, sizeof(*c), cand_cmp_seq);
	cands_notify_locked(s, c, (uint64_t)n, false);
	n = (int64_t)merged;
out:
	if (n >= 0)
		stat_add(&s->events, 1);
	pthread_mutex_unlock(&s->mm_lock);
	free(c);
	return n;
}

/* ---- the host's own access ---------------------------------------------------- */

/*
 * Reads and writes by the host itself (the VMM touching guest RAM). Every
 * page is checked first, so a bad range changes nothing; a write faults
 * pages in and breaks copy-on-write like a guest write would. Reading a
 * page never touched reads zeros without allocating (Linux's zero page).
 */
static int sim_access(struct gpamm_host *h, uint64_t hva, void *rbuf, const void *wbuf,
		      uint64_t len, bool write)
{
	struct sim_host *s = sim_of(h);
	struct sim_vma *v;
	uint64_t p, i, off, n, pte;
	bool faulted;
	int ret = 0;

	if (!s || hva + len < hva || (len && !(write ? wbuf : rbuf)))
		return -EINVAL;
	if (!len)
		return 0;
	pthread_mutex_lock(&s->mm_lock);
	v = vma_lookup(s, hva);
	if (!v || hva + len > vma_end(v)) {
		ret = -EFAULT;
		goto out;
	}
	for (p = hva & ~s->page_mask; p < hva + len; p += s->page_size) {
		pte = hpte_load(&v->ptes[(p - v->start) >> h->page_shift]);
		if ((pte & HPTE_HOLE) || (write && !vma_may_write(v, pte))) {
			ret = -EFAULT;
			goto out;
		}
	}
	for (p = hva; p < hva + len; p += n) {
		i = (p - v->start) >> h->page_shift;
		off = p & s->page_mask;
		n = s->page_size - off;
		if (n > hva + len - p)
			n = hva + len - p;
		pte = hpte_load(&v->ptes[i]);
		if (!write && !(pte & (HPTE_PRESENT | HPTE_SWAP))) {
			memset((uint8_t *)rbuf + (p - hva), 0, n);
			continue;
		}
		ret = fault_in_locked(s, v, i, write, &faulted);
		if (ret)
			goto out;
		pte = hpte_load(&v->ptes[i]);
		if (write) {
			memcpy((uint8_t *)frame_ptr(s, hpte_val(pte)) + off,
			       (const uint8_t *)wbuf + (p - hva), n);
			frame_mark(&s->frames[hpte_val(pte)], true, true);
		} else {
			memcpy((uint8_t *)rbuf + (p - hva),
			       (uint8_t *)frame_ptr(s, hpte_val(pte)) + off, n);
		}
	}
out:
	pthread_mutex_unlock(&s->mm_lock);
	return ret;
}

/*
 * gpamm_sim_read() - see host.h. Return: 0, -EINVAL (NULL buffer or
 * wrapping range), -EFAULT (a byte not mapped),
 * -ENOMEM (no frame to swap a page in).
 * Context: takes the mm lock.
 */
static int sim_event_read(struct gpamm_host *h, uint64_t hva, void *buf, uint64_t len)
{
	return sim_access(h, hva, buf, NULL, len, false);
}

/*
 * gpamm_sim_write() - see host.h. Return: 0, -EFAULT (a byte not mapped or
 * not writable; nothing written), -ENOMEM (no frame; bytes of earlier
 * pages may have been written).
 * Context: takes the mm lock; notifier on a copy-on-write break.
 */
static int sim_event_write(struct gpamm_host *h, uint64_t hva, const void *buf, uint64_t len)
{
	return sim_access(h, hva, NULL, buf, len, true);
}

/* ---- aging ----------------------------------------------------------------- */

/*
 * Host page aging, as the kernel's reclaim scan or idle-page tracking asks
 * its secondary MMUs: was the range accessed, and (clear_young) make it
 * old there. The host's own accessed bits are left alone; only the
 * attached MMUs are asked. Context: takes the mm lock.
 */
static int sim_age(struct gpamm_host *h, uint64_t hva, uint64_t len, int how, bool *young)
{
	struct sim_host *s = sim_of(h);
	bool y = false;

	if (!s || !young || !range_ok(s, hva, len))
		return -EINVAL;
	pthread_mutex_lock(&s->mm_lock);
	for (unsigned i = 0; i < s->nr_notifiers; i++) {
		const struct gpamm_mmu_notifier_ops *ops = s->notifiers[i].ops;
		void *mn = s->notifiers[i].mn;

		if (how == 2 && ops->clear_flush_young)
			y |= ops->clear_flush_young(mn, hva, hva + len);
		else if (how == 1 && ops->clear_young)
			y |= ops->clear_young(mn, hva, hva + len);
		else if (how == 0 && ops->test_young)
			y |= ops->test_young(mn, hva, hva + len);
	}
	pthread_mutex_unlock(&s->mm_lock);
	*young = y;
	return 0;
}

static int sim_event_clear_young(struct gpamm_host *h, uint64_t hva, uint64_t len, bool flush,
			  bool *young)
{
	return sim_age(h, hva, len, flush ? 2 : 1, young);
}

static int sim_event_test_young(struct gpamm_host *h, uint64_t hva, uint64_t len, bool *young)
{
	return sim_age(h, hva, len, 0, young);
}

/*
 * The calls as the API has them. Each takes the mm lock; called from guest
 * code it first leaves guest mode, as the exit a real guest would take to
 * reach the host (guestcall.h). Otherwise its own event's remote flush, or
 * another thread's event that holds the mm lock while its flush waits,
 * would wait for this very vCPU.
 */
#define SIM_EVENT_CALL(ret, name, params, args)                               \
	ret gpamm_sim_##name params                                           \
	{                                                                     \
		struct gpamm_vcpu *g = gpamm_guest_call_begin();              \
		ret r = sim_event_##name args;                                \
		gpamm_guest_call_end(g);                                      \
		return r;                                                     \
	}
SIM_EVENT_CALL(int, munmap, (struct gpamm_host *h, uint64_t hva, uint64_t len), (h, hva, len))
SIM_EVENT_CALL(int, madv_dontneed, (struct gpamm_host *h, uint64_t hva, uint64_t len), (h, hva, len))
SIM_EVENT_CALL(int, mprotect, (struct gpamm_host *h, uint64_t hva, uint64_t len, bool writable), (h, hva, len, writable))
SIM_EVENT_CALL(int64_t, reclaim, (struct gpamm_host *h, uint64_t hva, uint64_t len, uint64_t max), (h, hva, len, max))
SIM_EVENT_CALL(int64_t, migrate, (struct gpamm_host *h, uint64_t hva, uint64_t len), (h, hva, len))
SIM_EVENT_CALL(int64_t, merge, (struct gpamm_host *h, uint64_t hva, uint64_t len), (h, hva, len))
SIM_EVENT_CALL(int, write, (struct gpamm_host *h, uint64_t hva, const void *buf, uint64_t len), (h, hva, buf, len))
SIM_EVENT_CALL(int, clear_young, (struct gpamm_host *h, uint64_t hva, uint64_t len, bool flush, bool *young), (h, hva, len, flush, young))
SIM_EVENT_CALL(int, mmap, (struct gpamm_host *h, uint64_t len, unsigned flags, uint64_t *hva),
	       (h, len, flags, hva))
SIM_EVENT_CALL(int, read, (struct gpamm_host *h, uint64_t hva, void *buf, uint64_t len),
	       (h, hva, buf, len))
SIM_EVENT_CALL(int, test_young, (struct gpamm_host *h, uint64_t hva, uint64_t len, bool *young),
	       (h, hva, len, young))
