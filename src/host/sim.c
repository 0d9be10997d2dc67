// SPDX-License-Identifier: MIT
/*
 * The sim host: a small simulated host kernel, so that everything Linux does
 * to a KVM guest's memory behind the MMU's back can be done here on demand,
 * and so that a guest access through a translation the host has changed is
 * caught (checking mode) instead of silently reading the wrong bytes. Guest
 * faults on different pages do not serialise in it: a present page is
 * pinned without a lock, and a page is faulted in under its VMA's lock (for
 * read) and the lock of its host page-table page, as Linux does with
 * GUP-fast, per-VMA locks and split page-table locks.
 *
 * Frames. One mmap'd arena of cfg->frames pages; frame i has PFN
 * SIM_PFN_BASE + i, so page_ptr() is arithmetic. A frame's reference count
 * is its mapcount (host PTEs pointing at it) plus its pins (plus, for an
 * instant, a lock-free reader's speculative reference); whoever drops the
 * last reference frees it, without a lock: the frame is poisoned (checking
 * mode) and pushed on a lock-free pending stack, which the next allocation
 * moves onto the free FIFO under the frame lock. The FIFO hands out the
 * frame freed longest ago (frees that race each other in either order), so
 * a freed frame stays dead (and, in checking mode, full of poison) as long
 * as possible.
 *
 * VMAs. gpamm_sim_mmap() hands out HVAs from [2^40, 2^47), each VMA aligned
 * to the PMD span of the page size and followed by a guard gap, never reused.
 * Each VMA has a host page table, one 64-bit entry per page (HPTE_*), written
 * whole with atomics and read lock-free by get_page() and check_access(),
 * which find the VMA through a two-level directory indexed by HVA unit.
 * Partial munmap is supported: unmapped pages become HPTE_HOLE; a VMA whose
 * pages are all holes leaves the directory. Because readers are lock-free, a
 * retired VMA (its table and its locks) is only freed at destroy: memory for
 * VMA bookkeeping grows with the number of VMAs ever mapped (8 bytes a page).
 * madv_dontneed, mprotect and host reads/writes act within one VMA (the
 * guard gaps make any wider range contain an unmapped page: -ENOMEM/-EFAULT);
 * munmap, reclaim, migrate and merge walk every VMA the range meets.
 *
 * Events follow the MMU notifier rule: holding what excludes faults on the
 * range (the mm lock and each VMA's lock for write; for a copy-on-write
 * break, the page's table-page lock), invalidate_range_start, then change
 * the host PTEs and frames, then invalidate_range_end. munmap, madv_dontneed
 * and mprotect invalidate the whole range (per VMA); reclaim, migrate and
 * merge pick their pages first and invalidate each contiguous run of picked
 * pages. A write that breaks copy-on-write (get_page or gpamm_sim_write)
 * changes the PTE of a page a guest may map read-only, so it invalidates
 * that page too. A pin taken lock-free just before the change is the MMU's
 * to drop: its invalidation sequence moved (start/end), so its fault retries.
 * Pinned frames are skipped by reclaim, migrate and merge, as Linux does for
 * long-term pinned pages; munmap/dontneed of a pinned page only unmaps it and
 * the frame lives until its last put_page().
 *
 * Missing pages (userfaultfd MISSING mode and UFFDIO_COPY, for post-copy
 * migration). A VMA may have one registered range (gpamm_sim_register_
 * missing(); read under its VMA lock, changed under the mm lock and the VMA
 * lock for write); a page of it that is neither present, swapped nor
 * unmapped is missing, and is never zero-filled: a get_page() that finds it
 * so under its locks (after the hole and protection checks, so a write to a
 * read-only page is -EFAULT without asking) copies the handler out, drops
 * the table-page and VMA locks, and calls it with no sim lock held; then it
 * starts over (the lock-free pin, then the locks), so whatever happened
 * meanwhile is seen: the page placed, dropped again, protected or unmapped,
 * the registration gone (a zero page) or replaced. A host read or write
 * serves every missing page of its range that way before it copies a byte,
 * and checks the whole range again after each call; once a pass under the
 * VMA lock finds none missing, none can become so while it is held (that
 * takes the VMA lock for write). The sim host does not dedupe: each thread
 * that needs a missing page calls the handler, which must cope with several
 * calls for one page (and with a page placed by the time it looks), and
 * keeps no wait queue: the handler's own waiting learns of the placement.
 * gpamm_sim_place_page() takes the VMA lock (read) and the page's table-page
 * lock, fills a fresh frame and only then stores the PTE (release), as a
 * fault-in does: a lock-free reader that sees the PTE sees the bytes. No
 * notifier: a page that was not present has no guest translation. Events
 * skip missing pages (reclaim, migrate and merge take only present ones;
 * munmap, dontneed and mprotect change their PTEs as any other's). The
 * lock-free path is untouched: a present page never looks at the
 * registration. A guest fault calls the handler inside the MMU's slow path,
 * outside guest mode and mmu_lock, but inside an RCU read-side section
 * (the memslot look-up): a memslot change waits for the handler, so the
 * handler must not change memslots itself.
 *
 * Locks, outermost first (the MMU lock, taken by notifier callbacks, comes
 * after every one of them):
 *   mm lock (mutex)          the VMA list and directory, the notifier
 *                            registry, and events against each other: every
 *                            event, mmap, aging, exit and registry change
 *                            holds it. Faults never take it.
 *   VMA lock (rwlock, one    read: a fault or host access that faults pages
 *    per VMA)                in; write: an event that changes its PTEs.
 *                            Events that meet several VMAs lock them in
 *                            address order. Writers are preferred, so a
 *                            stream of faults cannot starve an event.
 *   table-page lock (mutex,  with the VMA lock held for read: the PTEs of
 *    one per page_size / 8   one host page-table page (fault-in, swap-in,
 *    PTEs, the PMD span)     copy-on-write break, host access).
 *   notifier lock (rwlock)   the registry, for a copy-on-write break, which
 *                            notifies without the mm lock (read, across its
 *                            start and end); registry changes and exit hold
 *                            it for write besides the mm lock.
 *   frame lock, swap lock    the free FIFO (and draining the pending stack
 *    (spinning, yielding)    onto it); the free swap-slot stack. Leaves:
 *                            nothing is taken under them, and nothing
 *                            that blocks is done with them held.
 * Table-page locks spin briefly before they sleep.
 * So a host PTE changes only under its VMA lock for write, or for read with
 * its table-page lock; a frame's mapcount changes (atomically: a merged frame
 * is mapped from several table pages) with the PTE that maps or unmaps it.
 *
 * Lock-free: put_page, mark_page, page_ptr, check_access, stats,
 * gpamm_sim_page_present, and get_page of a page already present (the
 * GUP-fast analog):
 *   1. read the PTE; only a present PTE that no event has marked BUSY (and,
 *      for a write, a writable one, so never copy-on-write) is used;
 *   2. take a reference unless the frame's count is zero (compare-and-
 *      exchange loop), so a dead frame is never brought back;
 *   3. count the pin (seq_cst);
 *   4. read the PTE again (seq_cst): if it changed, give the pin and the
 *      reference back (the last reference frees the frame) and fault
 *      through the locks instead.
 * Why that is safe:
 *   - a VMA found in the directory is never freed before destroy, so its
 *     table can be read however late; a retired one reads as holes;
 *   - a frame freed and reused between 1 and 2 has its new owner's count, so
 *     2 succeeds, but 4 sees a PTE that no longer names it (or names it
 *     again: then it is what the PTE maps now, and the pin is right);
 *   - the flags reported come from the PTE value 4 confirmed with the pin
 *     held: what the host PTE says when the pin is taken (REFERENCE.md 7.12);
 *   - reclaim, migrate and merge skip pinned frames: they first store BUSY
 *     into the page's PTE (seq_cst), then read the frame's pins (seq_cst).
 *     With 3 and 4 that is the store-buffering pattern, so in the single
 *     order of seq_cst operations either the event's read follows 3 (it sees
 *     the pin and leaves the page alone) or 4 follows the BUSY store (the
 *     reader backs off, to the slow path, which waits for the VMA lock the
 *     event holds). Once an event saw no pin, none can reach the frame
 *     through that PTE until the event is done with it. Reclaim and migrate
 *     take only frames with mapcount 1 (no other PTE to pin them through); a
 *     pin taken through a PTE that has since stopped mapping the frame came
 *     before the store that took the frame away from it (seq_cst, as every
 *     such store is), which came before the mapcount drop (acq_rel) the
 *     event read, so the event sees it. Merge can miss a pin taken through
 *     another VMA's PTE of a frame already shared: that PTE is copy-on-write,
 *     so the pin is read-only and cannot change the bytes merge compares;
 *   - munmap, madv_dontneed and mprotect do not look at pins: a reader
 *     whose 4 still read the PTE from before their store holds a pin on the
 *     frame as it was mapped then, which its reference keeps alive until
 *     put_page, and their invalidation makes the MMU drop what it would map
 *     with it; a reader whose 4 sees their store backs off;
 *   - frees never take a lock (a reader giving a speculative reference back
 *     may free the frame), and the counters pins and puts touch are split
 *     per thread (struct sim_stat_slot), so lock-free pins of different
 *     pages share no written cache line but the frame's own.
 *
 * Limits: HUGE is accepted and ignored (map_shift is always page_shift);
 * migrate and reclaim skip merged (shared) frames, having no reverse map;
 * no -EHWPOISON yet. Aging (clear_young, test_young) only asks the attached
 * MMUs. Destroying the host with notifiers still registered calls their
 * release() (the mm-exit path); the memory stays until the last VM lets go.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
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
#define HPTE_BUSY      (1ULL << 6) /* an event is deciding this page: lock-free pins back off */
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
	uint32_t ref;          /* mapcount + pins + speculative refs (atomic): freed at 0 */
	uint32_t pins;         /* atomic; includes lock-free pins not yet confirmed */
	uint32_t mapcount;     /* host PTEs pointing here (atomic) */
	uint32_t next_pending; /* pending-free stack link (index + 1) */
	uint8_t state;         /* FRAME_* (atomic) */
	uint8_t flags;         /* FRAME_ACCESSED / FRAME_DIRTY (atomic) */
};

struct sim_vma {
	uint64_t start, len, npages;
	unsigned flags;        /* GPAMM_SIM_* */
	uint64_t nr_mapped;    /* pages not munmapped; mm lock */
	uint64_t *ptes;
	pthread_rwlock_t lock; /* the VMA lock */
	pthread_mutex_t *ptl;  /* one per host page-table page */
	uint64_t nptl;
	struct sim_vma *prev, *next; /* live list in address order, or graveyard; mm lock */
	/*
	 * The missing-page registration: pages [miss_lo, miss_hi) of the VMA,
	 * served by miss_fn (NULL: none). Changed under the mm lock and the VMA
	 * lock (write); read under the VMA lock (read or write).
	 */
	uint64_t miss_lo, miss_hi;
	gpamm_sim_missing_fn miss_fn;
	void *miss_arg;
};

struct sim_notifier {
	const struct gpamm_mmu_notifier_ops *ops;
	void *mn;
};

/*
 * The counters every pin, put and fault-in touches are split over slots a
 * cache line or more apart, one per thread (thread number modulo the slot
 * count), as Linux keeps per-CPU counters: a single counter would be one
 * line that every vCPU thread writes on every pin, and lock-free pins on
 * different pages would contend on it. A slot can go below zero (a pin put
 * by another thread than took it); only the sum means something. It is
 * exact whenever no counted operation runs meanwhile; a sum caught in
 * between that would be negative reads as 0.
 */
#define SIM_STAT_SLOTS 16
struct sim_stat_slot {
	int64_t pinned, frames_live, faults_in;
	char pad[128 - 3 * sizeof(int64_t)]; /* 128: two slots never share a line */
};

/*
 * Test hooks: places in get_page() and in the events that skip pinned
 * pages where a test can stop a thread to force an interleaving. Not part
 * of host.h; the tests that use them declare gpamm_sim_set_test_hook()
 * themselves. With no hook set, each is one
 * not-taken branch on a field of the host.
 */
enum sim_hook_point {
	SIM_HOOK_GUP_READ,     /* lock-free: PTE read and usable, nothing taken yet */
	SIM_HOOK_GUP_PINNED,   /* lock-free: reference and pin taken, PTE not read again yet */
	SIM_HOOK_GUP_DEAD,     /* lock-free: the frame's count was zero; to the slow path */
	SIM_HOOK_GUP_CHANGED,  /* lock-free: the PTE changed; pin given back; to the slow path */
	SIM_HOOK_FAULT_LOCKED, /* slow path: VMA lock (read) and table-page lock held */
	SIM_HOOK_EVENT_BUSY,   /* reclaim/migrate/merge: PTE marked BUSY, pins not read yet */
};
typedef void (*gpamm_sim_hook_fn)(void *arg, unsigned point, uint64_t hva);
int gpamm_sim_set_test_hook(struct gpamm_host *h, gpamm_sim_hook_fn fn, void *arg);

/* Apart on separate cache lines: fields written by different paths. */
#define SIM_LINE_GAP(n) char gap##n[64]

struct sim_host {
	/* Read-mostly: all that the lock-free get_page() and put_page() read. */
	struct gpamm_host h;
	uint64_t page_size, page_mask;
	unsigned unit_shift;   /* HVA directory granule and VMA alignment */
	unsigned ptl_shift;    /* PTEs per table-page lock: 1 << ptl_shift */
	uint8_t *arena;
	uint64_t nframes;
	struct sim_frame *frames;
	uint32_t *freeq;       /* FIFO of free frame indices; frame lock */
	uint8_t *swap;
	uint64_t nswap;
	uint32_t *swap_free;   /* stack of free slots; swap lock */
	struct sim_vma ***dir; /* [top][leaf] -> VMA covering that HVA unit */
	uint64_t ndir;
	gpamm_sim_hook_fn hook;
	void *hook_arg;
	SIM_LINE_GAP(0);

	/* The mm lock's. */
	pthread_mutex_t mm_lock;
	pthread_rwlock_t mn_lock;
	uint64_t hva_next;
	struct sim_vma *vma_head, *vma_tail;
	struct sim_vma *graveyard;
	unsigned nr_notifiers;
	struct sim_notifier notifiers[SIM_MAX_NOTIFIERS];
	SIM_LINE_GAP(1);

	/* Every allocation's and free's. */
	int frame_lock;        /* spin_lock() */
	uint64_t freeq_head, freeq_count;
	uint32_t pending;      /* lock-free stack of dead frames (index + 1) */
	SIM_LINE_GAP(2);

	int swap_lock;         /* spin_lock() */
	uint64_t swap_nfree;
	/* statistics, read lock-free; the hot ones split per thread */
	uint64_t stale, swapped, events;
	SIM_LINE_GAP(3);
	struct sim_stat_slot slot[SIM_STAT_SLOTS];
};

static inline struct sim_host *to_sim(struct gpamm_host *h)
{
	return (struct sim_host *)h;
}

static inline void stat_add(uint64_t *c, int64_t v)
{
	__atomic_add_fetch(c, (uint64_t)v, __ATOMIC_RELAXED);
}

static _Thread_local unsigned sim_tslot = SIM_STAT_SLOTS; /* not chosen yet */
static unsigned sim_tslot_next;

/* This thread's slot of the split counters. */
static inline struct sim_stat_slot *stat_slot(struct sim_host *s)
{
	if (unlikely(sim_tslot == SIM_STAT_SLOTS))
		sim_tslot = __atomic_fetch_add(&sim_tslot_next, 1, __ATOMIC_RELAXED) % SIM_STAT_SLOTS;
	return &s->slot[sim_tslot];
}

/* Atomic all the same: more threads than slots share one. */
static inline void pstat_add(int64_t *c, int64_t v)
{
	__atomic_add_fetch(c, v, __ATOMIC_RELAXED);
}

static uint64_t pstat_sum(struct sim_host *s, size_t off)
{
	int64_t sum = 0;

	for (unsigned k = 0; k < SIM_STAT_SLOTS; k++)
		sum += __atomic_load_n((int64_t *)((char *)&s->slot[k] + off), __ATOMIC_RELAXED);
	return sum < 0 ? 0 : (uint64_t)sum;
}

static inline void sim_hook(struct sim_host *s, enum sim_hook_point p, uint64_t hva)
{
	if (unlikely(s->hook))
		s->hook(s->hook_arg, p, hva);
}

/*
 * Table-page locks spin a little before they sleep: they are mostly held
 * for a page copy, so a waiter is better off not paying a futex sleep and
 * wake-up (but a copy-on-write break holds one across its notifiers, which
 * may block: it must be able to sleep).
 */
static void mutex_init_short(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;

	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
}

/*
 * The frame and swap locks guard a few loads and stores and are never held
 * across anything that blocks: every fault-in takes the frame lock, and a
 * sleeping lock there made faults on two CPUs wait in futex calls for
 * each other. A test-and-test-and-set lock that yields the CPU after a
 * while, so a holder that was preempted gets to run.
 */
static void spin_lock(int *l)
{
	unsigned n = 0;

	while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) {
		while (__atomic_load_n(l, __ATOMIC_RELAXED)) {
			if (++n < 128) {
				cpu_relax();
			} else {
				sched_yield();
				n = 0;
			}
		}
	}
}

static void spin_unlock(int *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
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

/* A dead frame reads as garbage to a stale reader (checking mode). */
static void frame_poison(struct sim_host *s, uint64_t idx)
{
	if (s->h.checking)
		memset(frame_ptr(s, idx), SIM_POISON, s->page_size);
}

/* Context: frame lock held. */
static void freeq_push_locked(struct sim_host *s, uint64_t idx)
{
	s->freeq[(s->freeq_head + s->freeq_count) % s->nframes] = (uint32_t)idx;
	s->freeq_count++;
}

/*
 * Dead frames wait on a lock-free stack (linked through next_pending) for
 * the next allocation, which queues them on the FIFO under the frame lock:
 * so a free, whether by an event, a fault or put_page(), never takes a lock.
 */
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
 * Move the whole stack onto the FIFO, oldest death first. Under the frame
 * lock, so that no allocation finds the FIFO empty while frames taken off
 * the stack are on their way to it. Context: frame lock held.
 */
static void pending_drain_locked(struct sim_host *s)
{
	uint32_t n, prev = 0;

	/* Looked at first: an exchange would write the line every allocation. */
	if (!__atomic_load_n(&s->pending, __ATOMIC_RELAXED))
		return;
	n = __atomic_exchange_n(&s->pending, 0, __ATOMIC_ACQUIRE);
	while (n) {
		uint32_t next = s->frames[n - 1].next_pending;

		s->frames[n - 1].next_pending = prev;
		prev = n;
		n = next;
	}
	while (prev) {
		freeq_push_locked(s, prev - 1);
		prev = s->frames[prev - 1].next_pending;
	}
}

/*
 * Drop one reference; the last one kills the frame. State goes FREE before
 * the frame can be reused, so check_access() sees a dead frame as dead, and
 * it is poisoned at once (nobody can reach its bytes legitimately now).
 * Context: any; takes no lock.
 */
static void frame_put_ref(struct sim_host *s, uint64_t idx)
{
	struct sim_frame *f = &s->frames[idx];
	uint32_t old = __atomic_fetch_sub(&f->ref, 1, __ATOMIC_ACQ_REL);

	GPAMM_BUG_ON(old == 0);
	if (old != 1)
		return;
	__atomic_store_n(&f->state, FRAME_FREE, __ATOMIC_RELEASE);
	pstat_add(&stat_slot(s)->frames_live, -1);
	frame_poison(s, idx);
	pending_push(s, idx);
}

/*
 * A speculative reference, unless the frame is dead (count zero: free, or
 * about to be). A frame is only ever brought from zero by its allocator.
 * Acquire: the frame's state as of the reference is what we then read.
 * Context: lock-free.
 */
static bool frame_try_get(struct sim_frame *f)
{
	uint32_t r = __atomic_load_n(&f->ref, __ATOMIC_RELAXED);

	do {
		if (!r)
			return false;
	} while (!__atomic_compare_exchange_n(&f->ref, &r, r + 1, true, __ATOMIC_ACQUIRE,
					      __ATOMIC_RELAXED));
	return true;
}

/*
 * A frame for new contents (the caller fills it), or -1 when the pool is
 * empty. Context: takes the frame lock; any thread.
 */
static int64_t frame_alloc(struct sim_host *s)
{
	struct sim_frame *f;
	uint64_t idx;

	spin_lock(&s->frame_lock);
	pending_drain_locked(s);
	if (!s->freeq_count) {
		spin_unlock(&s->frame_lock);
		return -1;
	}
	idx = s->freeq[s->freeq_head];
	s->freeq_head = (s->freeq_head + 1) % s->nframes;
	s->freeq_count--;
	spin_unlock(&s->frame_lock);
	/* Ours now: a dead frame has no reference a reader could hold. */
	f = &s->frames[idx];
	GPAMM_BUG_ON(__atomic_load_n(&f->ref, __ATOMIC_RELAXED) != 0);
	GPAMM_BUG_ON(__atomic_load_n(&f->pins, __ATOMIC_RELAXED) != 0);
	__atomic_store_n(&f->mapcount, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&f->flags, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&f->state, FRAME_LIVE, __ATOMIC_RELEASE);
	pstat_add(&stat_slot(s)->frames_live, 1);
	return (int64_t)idx;
}

/*
 * Free frames, counting those on the pending stack. Faults allocate
 * concurrently, so this is a snapshot. Context: takes the frame lock.
 */
static uint64_t frames_free(struct sim_host *s)
{
	uint64_t n;

	spin_lock(&s->frame_lock);
	pending_drain_locked(s);
	n = s->freeq_count;
	spin_unlock(&s->frame_lock);
	return n;
}

/* Context: with the PTE that will map @idx locked (see the header). */
static void frame_map(struct sim_host *s, uint64_t idx)
{
	__atomic_add_fetch(&s->frames[idx].mapcount, 1, __ATOMIC_ACQ_REL);
	__atomic_add_fetch(&s->frames[idx].ref, 1, __ATOMIC_RELAXED);
}

/* Context: after the PTE that mapped @idx was changed, still locked. */
static void frame_unmap(struct sim_host *s, uint64_t idx)
{
	/* Release: a pin taken through that PTE is seen by whoever reads the drop. */
	uint32_t old = __atomic_fetch_sub(&s->frames[idx].mapcount, 1, __ATOMIC_ACQ_REL);

	GPAMM_BUG_ON(old == 0);
	frame_put_ref(s, idx);
}

static inline uint32_t frame_mapcount(const struct sim_frame *f)
{
	return __atomic_load_n(&f->mapcount, __ATOMIC_ACQUIRE);
}

/* A pin under the locks: the frame is mapped by a PTE we hold locked. */
static void frame_pin_locked(struct sim_frame *f)
{
	__atomic_add_fetch(&f->ref, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&f->pins, 1, __ATOMIC_SEQ_CST);
}

/* ---- swap ---------------------------------------------------------------- */

static inline void *swap_ptr(struct sim_host *s, uint64_t slot)
{
	return s->swap + (slot << s->h.page_shift);
}

/* Context: takes the swap lock. */
static void swap_slot_free(struct sim_host *s, uint64_t slot)
{
	spin_lock(&s->swap_lock);
	s->swap_free[s->swap_nfree++] = (uint32_t)slot;
	spin_unlock(&s->swap_lock);
	stat_add(&s->swapped, -1);
}

/* A free slot, or -1. Context: takes the swap lock. */
static int64_t swap_slot_alloc(struct sim_host *s)
{
	int64_t slot = -1;

	spin_lock(&s->swap_lock);
	if (s->swap_nfree)
		slot = s->swap_free[--s->swap_nfree];
	spin_unlock(&s->swap_lock);
	if (slot >= 0)
		stat_add(&s->swapped, 1);
	return slot;
}

/*
 * Free slots now. Only reclaim (under the mm lock) allocates slots, so for
 * the mm lock holder this only grows. Context: takes the swap lock.
 */
static uint64_t swap_slots_free(struct sim_host *s)
{
	uint64_t n;

	spin_lock(&s->swap_lock);
	n = s->swap_nfree;
	spin_unlock(&s->swap_lock);
	return n;
}

/* ---- VMAs and host PTEs ----------------------------------------------------- */

static inline uint64_t hpte_load(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* The lock-free pin's second read (see the header). */
static inline uint64_t hpte_load_sc(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

/*
 * PTE stores. A store that maps a frame where none was mapped, or changes
 * only the bits of the same frame, is a release (the frame's bytes and
 * counts are visible to whoever sees the PTE). A store that takes a frame
 * away from a PTE, and the BUSY mark, are seq_cst: the BUSY mark is one
 * side of the lock-free pin's store-buffering pattern, and the others keep
 * a pin taken through the old PTE ordered before the mapcount drop that
 * follows (see the header).
 */
static inline void hpte_store(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline void hpte_store_sc(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

static inline uint64_t vma_end(const struct sim_vma *v)
{
	return v->start + v->len;
}

static inline uint64_t vma_hva(struct sim_host *s, const struct sim_vma *v, uint64_t i)
{
	return v->start + (i << s->h.page_shift);
}

/* The lock of the host page-table page holding PTE @i of @v. */
static inline pthread_mutex_t *vma_ptl(struct sim_host *s, struct sim_vma *v, uint64_t i)
{
	return &v->ptl[i >> s->ptl_shift];
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

/* Point the directory units of [start, end) at @v (NULL to clear). Context: mm lock. */
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

/* A VMA of @len bytes, all PTEs empty, locks ready; not yet published. */
static struct sim_vma *vma_alloc(struct sim_host *s, uint64_t len, unsigned flags)
{
	struct sim_vma *v = calloc(1, sizeof(*v));
	pthread_rwlockattr_t attr;
	uint64_t k;

	if (!v)
		return NULL;
	v->len = len;
	v->npages = len >> s->h.page_shift;
	v->flags = flags;
	v->nr_mapped = v->npages;
	v->nptl = ((v->npages - 1) >> s->ptl_shift) + 1;
	v->ptes = calloc(v->npages, sizeof(*v->ptes));
	v->ptl = malloc(v->nptl * sizeof(*v->ptl));
	if (!v->ptes || !v->ptl) {
		free(v->ptes);
		free(v->ptl);
		free(v);
		return NULL;
	}
	pthread_rwlockattr_init(&attr);
	/* Faults never take it twice, so writer preference cannot self-deadlock. */
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&v->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	for (k = 0; k < v->nptl; k++)
		mutex_init_short(&v->ptl[k]);
	return v;
}

static void vma_free(struct sim_vma *v)
{
	uint64_t k;

	for (k = 0; k < v->nptl; k++)
		pthread_mutex_destroy(&v->ptl[k]);
	pthread_rwlock_destroy(&v->lock);
	free(v->ptl);
	free(v->ptes);
	free(v);
}

/*
 * Take a fully unmapped VMA out of the directory. Its table and locks are
 * kept (all holes) until destroy: a lock-free get_page() or check_access()
 * may still be reading it, and a fault may be waiting for its lock.
 * Context: mm lock.
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

/*
 * Write-lock every VMA that meets [start, end), in address order (the list
 * order), or unlock them again. Context: mm lock.
 */
static void vmas_lock_range(struct sim_host *s, uint64_t start, uint64_t end, bool lock)
{
	struct sim_vma *v;

	for (v = s->vma_head; v && v->start < end; v = v->next) {
		if (vma_end(v) <= start)
			continue;
		if (lock)
			pthread_rwlock_wrlock(&v->lock);
		else
			pthread_rwlock_unlock(&v->lock);
	}
}

static inline bool vma_may_write(const struct sim_vma *v, uint64_t pte)
{
	return !(v->flags & GPAMM_SIM_READONLY) && !(pte & HPTE_PROT_RO);
}

/*
 * A missing page: in the VMA's registered range, and neither present, nor
 * in swap, nor unmapped. Context: the VMA's lock held (read or write), so
 * the registration holds still; a PTE read without its table-page lock can
 * only stop being missing meanwhile (placed or faulted in), never become so
 * (that takes the VMA lock for write: dontneed, munmap, registration).
 */
static inline bool pte_missing(const struct sim_vma *v, uint64_t i, uint64_t pte)
{
	return v->miss_fn && i >= v->miss_lo && i < v->miss_hi &&
	       !(pte & (HPTE_PRESENT | HPTE_SWAP | HPTE_HOLE));
}

/* The handler a missing page is to be served by, copied out under the VMA lock. */
struct sim_miss {
	gpamm_sim_missing_fn fn;
	void *arg;
	uint64_t hva;
};

/* Internal return of the locked paths: call the handler (struct sim_miss), then retry. */
#define SIM_MISSING 1

/*
 * Call a missing-page handler. Context: no sim lock held (the caller
 * dropped them all); the access is retried whatever happened meanwhile.
 * Return: 0 (retry), or the handler's errno (a positive return, which the
 * contract does not allow, is -EIO).
 */
static int miss_call(const struct sim_miss *m, bool write)
{
	int r = m->fn(m->arg, m->hva, write);

	return r > 0 ? -EIO : r;
}

/*
 * Make a page not present, freeing what backed it; protection bits stay.
 * Context: mm lock and the VMA's lock for write.
 */
static void pte_zap(struct sim_host *s, uint64_t *ptep)
{
	uint64_t pte = hpte_load(ptep);

	hpte_store_sc(ptep, pte & (HPTE_PROT_RO | HPTE_HOLE));
	if (pte & HPTE_PRESENT)
		frame_unmap(s, hpte_val(pte));
	else if (pte & HPTE_SWAP)
		swap_slot_free(s, hpte_val(pte));
}

/* Range arguments of every event: page aligned, non-empty, no wrap. */
static bool range_ok(struct sim_host *s, uint64_t hva, uint64_t len)
{
	return len && !((hva | len) & s->page_mask) && hva + len > hva;
}

/*
 * madv_dontneed, mprotect: the whole range must be mapped. Guard gaps
 * between VMAs mean that is only possible inside one VMA. Holes only
 * appear under the mm lock, so the answer holds while it is held.
 * Context: mm lock.
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

/* Context: the mm lock or the notifier lock (read) held, across start and end. */
static void notify_start(struct sim_host *s, uint64_t start, uint64_t end)
{
	unsigned i;

	for (i = 0; i < s->nr_notifiers; i++)
		if (s->notifiers[i].ops->invalidate_range_start)
			s->notifiers[i].ops->invalidate_range_start(s->notifiers[i].mn, start, end);
}

static void notify_end(struct sim_host *s, uint64_t start, uint64_t end)
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
 * frame must go first. A mapcount of 1 cannot grow meanwhile: only merge
 * adds a mapping to a mapped frame, and only to one a page it holds locked
 * maps, so not to a frame only our PTE maps.
 * Context: the VMA's lock (read) and the page's table-page lock held; takes
 * the notifier lock (read) for the invalidation.
 */
static int cow_break(struct sim_host *s, struct sim_vma *v, uint64_t i)
{
	uint64_t *ptep = &v->ptes[i];
	uint64_t pte = hpte_load(ptep);
	uint64_t old = hpte_val(pte), hva = vma_hva(s, v, i);
	int64_t idx;

	if (frame_mapcount(&s->frames[old]) == 1) {
		hpte_store(ptep, (pte & ~HPTE_COW) | HPTE_WRITE);
		return 0;
	}
	idx = frame_alloc(s);
	if (idx < 0)
		return -ENOMEM;
	/* Shared frames are mapped copy-on-write everywhere: nobody writes it. */
	memcpy(frame_ptr(s, (uint64_t)idx), frame_ptr(s, old), s->page_size);
	pthread_rwlock_rdlock(&s->mn_lock);
	notify_start(s, hva, hva + s->page_size);
	frame_map(s, (uint64_t)idx);
	hpte_store_sc(ptep, ((uint64_t)idx << HPTE_VAL_SHIFT) | (pte & HPTE_PROT_RO) |
			 HPTE_PRESENT | HPTE_WRITE);
	frame_unmap(s, old);
	notify_end(s, hva, hva + s->page_size);
	pthread_rwlock_unlock(&s->mn_lock);
	return 0;
}

/*
 * Make page @i of @v present (zero-filled or swapped in) and, for @write,
 * exclusively writable. The caller checked the protection. A page that was
 * not present has no guest translation, so no notifier is needed for it.
 * Context: the VMA's lock (read) and the page's table-page lock held.
 */
static int fault_in(struct sim_host *s, struct sim_vma *v, uint64_t i, bool write,
		    bool *faulted)
{
	uint64_t *ptep = &v->ptes[i];
	uint64_t pte = hpte_load(ptep);
	int64_t idx;

	/* BUSY lives only inside an event, which holds the VMA lock for write. */
	GPAMM_BUG_ON(pte & HPTE_BUSY);
	*faulted = false;
	if (!(pte & HPTE_PRESENT)) {
		idx = frame_alloc(s);
		if (idx < 0)
			return -ENOMEM;
		if (pte & HPTE_SWAP) {
			memcpy(frame_ptr(s, (uint64_t)idx), swap_ptr(s, hpte_val(pte)), s->page_size);
			swap_slot_free(s, hpte_val(pte));
		} else {
			memset(frame_ptr(s, (uint64_t)idx), 0, s->page_size);
		}
		frame_map(s, (uint64_t)idx);
		/* Filled before it is published: a lock-free reader sees the bytes. */
		pte = ((uint64_t)idx << HPTE_VAL_SHIFT) | (pte & HPTE_PROT_RO) | HPTE_PRESENT |
		      (vma_may_write(v, pte) ? HPTE_WRITE : 0);
		hpte_store(ptep, pte);
		*faulted = true;
	}
	if (write && (pte & HPTE_COW))
		return cow_break(s, v, i);
	return 0;
}

/* What get_page() reports for a pin on the page @pte maps. */
static void page_out(struct sim_host *s, const struct sim_vma *v, uint64_t pte,
		     struct gpamm_host_page *out)
{
	out->pfn = frame_pfn(hpte_val(pte));
	out->flags = ((pte & HPTE_WRITE) ? GPAMM_HOST_PAGE_WRITABLE : 0) |
		     ((v->flags & GPAMM_SIM_DEVICE) ? GPAMM_HOST_PAGE_UNCACHED : 0);
	out->map_shift = s->h.page_shift;
}

/*
 * The lock-free pin of a present page (steps 1-4 of the header comment).
 * Return: true with the pin taken and *@out filled, or false with nothing
 * held, when the page needs the slow path (or changed under us).
 * Context: any thread; takes no lock, never blocks.
 */
static bool get_page_fast(struct sim_host *s, struct sim_vma *v, uint64_t i, bool write,
			  struct gpamm_host_page *out)
{
	uint64_t *ptep = &v->ptes[i];
	uint64_t pte = hpte_load(ptep), hva = vma_hva(s, v, i);
	struct sim_frame *f;

	if ((pte & (HPTE_PRESENT | HPTE_BUSY)) != HPTE_PRESENT)
		return false;
	/* WRITE is never set on a copy-on-write or protected page. */
	if (write && !(pte & HPTE_WRITE))
		return false;
	sim_hook(s, SIM_HOOK_GUP_READ, hva);
	f = &s->frames[hpte_val(pte)];
	if (!frame_try_get(f)) {
		sim_hook(s, SIM_HOOK_GUP_DEAD, hva);
		return false;
	}
	/* Step 3 then step 4, both seq_cst: the store-buffering pair of an
	 * event's BUSY store then pins read. */
	__atomic_add_fetch(&f->pins, 1, __ATOMIC_SEQ_CST);
	sim_hook(s, SIM_HOOK_GUP_PINNED, hva);
	if (hpte_load_sc(ptep) != pte) {
		__atomic_sub_fetch(&f->pins, 1, __ATOMIC_RELEASE);
		frame_put_ref(s, hpte_val(pte));
		sim_hook(s, SIM_HOOK_GUP_CHANGED, hva);
		return false;
	}
	pstat_add(&stat_slot(s)->pinned, 1);
	page_out(s, v, pte, out);
	return true;
}

/*
 * The slow path: fault the page in under the VMA lock (read) and its
 * table-page lock, then pin it there. Context: may sleep.
 */
static int get_page_slow(struct sim_host *s, struct sim_vma *v, uint64_t i, bool write,
			 struct gpamm_host_page *out, struct sim_miss *miss)
{
	pthread_mutex_t *ptl = vma_ptl(s, v, i);
	uint64_t pte;
	bool faulted;
	int ret = -EFAULT;

	pthread_rwlock_rdlock(&v->lock);
	pthread_mutex_lock(ptl);
	sim_hook(s, SIM_HOOK_FAULT_LOCKED, vma_hva(s, v, i));
	/* Holes and protection change only under the VMA lock for write. */
	pte = hpte_load(&v->ptes[i]);
	if ((pte & HPTE_HOLE) || (write && !vma_may_write(v, pte)))
		goto out;
	if (pte_missing(v, i, pte)) {
		/* Never zero-filled: the handler is called once the locks are dropped. */
		*miss = (struct sim_miss){ v->miss_fn, v->miss_arg, vma_hva(s, v, i) };
		ret = SIM_MISSING;
		goto out;
	}
	ret = fault_in(s, v, i, write, &faulted);
	if (ret)
		goto out;
	if (faulted)
		pstat_add(&stat_slot(s)->faults_in, 1);
	/*
	 * Flags are read here, under the lock, with the pin taken: what the
	 * caller is told is what the host PTE says now (REFERENCE.md 7.12).
	 */
	pte = hpte_load(&v->ptes[i]);
	frame_pin_locked(&s->frames[hpte_val(pte)]);
	pstat_add(&stat_slot(s)->pinned, 1);
	page_out(s, v, pte, out);
out:
	pthread_mutex_unlock(ptl);
	pthread_rwlock_unlock(&v->lock);
	return ret;
}

/*
 * Everything but the lock-free pin: the slow path, and for a missing page
 * its handler then the whole lookup again. Context: may sleep; no lock
 * held on entry, none across the handler.
 */
static int get_page_locked(struct sim_host *s, struct sim_vma *v, uint64_t i, bool write,
			   struct gpamm_host_page *out)
{
	struct sim_miss miss = { 0 };
	int r;

	for (;;) {
		r = get_page_slow(s, v, i, write, out, &miss);
		if (r != SIM_MISSING)
			return r;
		/*
		 * A missing page: the slow path dropped the VMA and table-page
		 * locks, so the handler may block (for the network) while
		 * events, host accesses and other faults run in this VMA. Then
		 * everything is looked at again: the page may have been placed
		 * (the fast path takes it), unmapped or protected (-EFAULT),
		 * dropped again or still missing (the handler is called again).
		 */
		r = miss_call(&miss, write);
		if (r)
			return r;
		if (get_page_fast(s, v, i, write, out))
			return 0;
	}
}

static int sim_get_page(struct gpamm_host *h, uint64_t hva, bool write,
			struct gpamm_host_page *out)
{
	struct sim_host *s = to_sim(h);
	struct sim_vma *v;
	uint64_t i;

	if (hva & s->page_mask)
		return -EFAULT;
	/* Lock-free: a VMA is never freed before destroy. */
	v = vma_lookup(s, hva);
	if (!v)
		return -EFAULT;
	i = (hva - v->start) >> h->page_shift;
	if (get_page_fast(s, v, i, write, out))
		return 0;
	return get_page_locked(s, v, i, write, out);
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
	 * event that sees the pin gone and copies the page (cands_isolate()).
	 */
	old = __atomic_fetch_sub(&f->pins, 1, __ATOMIC_RELEASE);
	/* An unbalanced put would free a frame someone still maps. */
	GPAMM_BUG_ON(old == 0);
	if (old == 0) {
		__atomic_add_fetch(&f->pins, 1, __ATOMIC_RELAXED);
		return;
	}
	pstat_add(&stat_slot(s)->pinned, -1);
	frame_put_ref(s, idx);
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

/* BUSY is invisible here: the page is still what the PTE maps. */
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

/* Registry changes hold both the mm lock and the notifier lock (write):
 * events read it under the first, copy-on-write breaks under the second. */
static int sim_notifier_register(struct gpamm_host *h, const struct gpamm_mmu_notifier_ops *ops,
				 void *mn)
{
	struct sim_host *s = to_sim(h);
	int ret = 0;
	unsigned i;

	if (!ops || !mn)
		return -EINVAL;
	pthread_mutex_lock(&s->mm_lock);
	pthread_rwlock_wrlock(&s->mn_lock);
	for (i = 0; i < s->nr_notifiers; i++)
		if (s->notifiers[i].mn == mn)
			ret = -EEXIST;
	if (!ret && s->nr_notifiers == SIM_MAX_NOTIFIERS)
		ret = -ENOSPC;
	if (!ret)
		s->notifiers[s->nr_notifiers++] = (struct sim_notifier){ ops, mn };
	pthread_rwlock_unlock(&s->mn_lock);
	pthread_mutex_unlock(&s->mm_lock);
	return ret;
}

static void sim_notifier_unregister(struct gpamm_host *h, void *mn)
{
	struct sim_host *s = to_sim(h);
	unsigned i;

	pthread_mutex_lock(&s->mm_lock);
	pthread_rwlock_wrlock(&s->mn_lock);
	for (i = 0; i < s->nr_notifiers; i++) {
		if (s->notifiers[i].mn == mn) {
			/* Keep registration order: events call notifiers in it. */
			memmove(&s->notifiers[i], &s->notifiers[i + 1],
				(s->nr_notifiers - i - 1) * sizeof(s->notifiers[0]));
			s->nr_notifiers--;
			break;
		}
	}
	pthread_rwlock_unlock(&s->mn_lock);
	pthread_mutex_unlock(&s->mm_lock);
}

static void sim_stats(struct gpamm_host *h, struct gpamm_host_stats *st)
{
	struct sim_host *s = to_sim(h);

	*st = (struct gpamm_host_stats){
		.pinned = pstat_sum(s, offsetof(struct sim_stat_slot, pinned)),
		.frames_live = pstat_sum(s, offsetof(struct sim_stat_slot, frames_live)),
		.frames_total = s->nframes,
		.stale_accesses = __atomic_load_n(&s->stale, __ATOMIC_RELAXED),
		.faults_in = pstat_sum(s, offsetof(struct sim_stat_slot, faults_in)),
		.swapped = __atomic_load_n(&s->swapped, __ATOMIC_RELAXED),
		.events = __atomic_load_n(&s->events, __ATOMIC_RELAXED),
	};
}

static void vma_free_list(struct sim_vma *v)
{
	while (v) {
		struct sim_vma *next = v->next;

		vma_free(v);
		v = next;
	}
}

/*
 * The address space goes away under every MMU still registered (mm exit).
 * The notifier lock (write) keeps a copy-on-write break's invalidation
 * from running into a release, as the mm lock keeps events out.
 */
static void sim_exit(struct gpamm_host *h)
{
	struct sim_host *s = to_sim(h);

	pthread_mutex_lock(&s->mm_lock);
	pthread_rwlock_wrlock(&s->mn_lock);
	for (unsigned i = 0; i < s->nr_notifiers; i++)
		if (s->notifiers[i].ops->release)
			s->notifiers[i].ops->release(s->notifiers[i].mn);
	pthread_rwlock_unlock(&s->mn_lock);
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
	pthread_rwlock_destroy(&s->mn_lock);
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
 * gpamm_sim_set_test_hook() - for tests only (see enum sim_hook_point):
 * call @fn (NULL: none) at each hook point a thread passes; it may block
 * (an event's thread holds the mm lock and VMA locks there). Context:
 * while no thread is inside get_page() or an event of @h.
 * Return: 0, -EINVAL (not a sim host).
 */
int gpamm_sim_set_test_hook(struct gpamm_host *h, gpamm_sim_hook_fn fn, void *arg)
{
	struct sim_host *s = sim_of(h);

	if (!s)
		return -EINVAL;
	s->hook_arg = arg;
	s->hook = fn;
	return 0;
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
	s->ptl_shift = shift - 3;      /* the PTEs of one table page: also the PMD span */
	s->hva_next = SIM_HVA_BASE;
	s->nframes = cfg->frames;
	s->nswap = cfg->swap_pages;
	pthread_mutex_init(&s->mm_lock, NULL);
	pthread_rwlock_init(&s->mn_lock, NULL);

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
	else if (cfg->prefault && madvise(s->arena, s->nframes << shift, 23 /* MADV_POPULATE_WRITE */))
		memset(s->arena, 0, s->nframes << shift); /* before Linux 5.14 */
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
	v = vma_alloc(s, len, flags);
	if (!v)
		return -ENOMEM;
	pthread_mutex_lock(&s->mm_lock);
	start = s->hva_next;
	end = start + len;
	ret = -ENOMEM;
	if (len > SIM_HVA_LIMIT - start)
		goto fail;
	v->start = start;
	/* Published whole (locks ready, PTEs empty): lookups are lock-free. */
	ret = dir_set_locked(s, start, end, v);
	if (ret) {
		dir_set_locked(s, start, end, NULL);
		/* A lock-free lookup may have caught it meanwhile: kept as if retired. */
		v->next = s->graveyard;
		s->graveyard = v;
		pthread_mutex_unlock(&s->mm_lock);
		return ret;
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
	vma_free(v);
	return ret;
}

/*
 * gpamm_sim_munmap() - see host.h. Any page-aligned range; pages of it that
 * are not mapped are ignored (as munmap(2) does). Partial VMAs are fine.
 * Return: 0 or -EINVAL (bad range).
 * Context: takes the mm lock and each VMA's lock (write); notifiers per VMA met.
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
		pthread_rwlock_wrlock(&v->lock);
		notify_start(s, a, b);
		i1 = (b - v->start) >> h->page_shift;
		for (i = (a - v->start) >> h->page_shift; i < i1; i++) {
			uint64_t pte = hpte_load(&v->ptes[i]);

			if (pte & HPTE_HOLE)
				continue;
			pte_zap(s, &v->ptes[i]);
			hpte_store(&v->ptes[i], HPTE_HOLE);
			v->nr_mapped--;
		}
		notify_end(s, a, b);
		pthread_rwlock_unlock(&v->lock);
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
 * Context: takes the mm lock and the VMA's lock (write); notifier over the
 * whole range.
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
	pthread_rwlock_wrlock(&v->lock);
	notify_start(s, hva, hva + len);
	i = (hva - v->start) >> h->page_shift;
	for (n = len >> h->page_shift; n; n--, i++)
		pte_zap(s, &v->ptes[i]);
	notify_end(s, hva, hva + len);
	pthread_rwlock_unlock(&v->lock);
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
 * Context: takes the mm lock and the VMA's lock (write); notifier over the
 * whole range either way.
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
	pthread_rwlock_wrlock(&v->lock);
	notify_start(s, hva, hva + len);
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
	notify_end(s, hva, hva + len);
	pthread_rwlock_unlock(&v->lock);
	stat_add(&s->events, 1);
out:
	pthread_mutex_unlock(&s->mm_lock);
	return ret;
}

/* ---- page-picking events: reclaim, migrate, merge --------------------------- */

/*
 * Each takes the mm lock and the lock (write) of every VMA the range meets,
 * so no fault or host access can run in them; lock-free pins still can,
 * until cands_isolate() has marked the picked pages BUSY.
 */

struct sim_cand {
	struct sim_vma *vma;
	uint64_t i;
	uint64_t pte;   /* the PTE as picked, without BUSY */
	uint64_t frame; /* migrate: the new frame */
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
	/* A first look only: cands_isolate() decides against lock-free pins. */
	if (__atomic_load_n(&f->pins, __ATOMIC_ACQUIRE))
		return false;
	/* No reverse map: a shared frame can be merged into, not moved. */
	return k == CAND_MERGEABLE || frame_mapcount(f) == 1;
}

static inline uint64_t *cand_ptep(const struct sim_cand *c)
{
	return &c->vma->ptes[c->i];
}

/*
 * Pick up to @max candidate pages of [hva, hva + len) in address order.
 * Return: the count, or -ENOMEM; *@found tells whether any page qualified
 * before @max cut the list short.
 * Context: mm lock and the range's VMA locks (write).
 */
static int64_t cands_collect(struct sim_host *s, uint64_t hva, uint64_t len,
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

/*
 * Mark each candidate's PTE BUSY, then look at its frame's pins (both
 * seq_cst, the event's side of the header's store-buffering argument);
 * a page pinned meanwhile gets its PTE back and leaves the list. From here
 * on no pin can reach a candidate's frame until its PTE is stored without
 * BUSY. Return: the candidates left, in address order as before.
 * Context: mm lock and the range's VMA locks (write).
 */
static uint64_t cands_isolate(struct sim_host *s, struct sim_cand *c, uint64_t n)
{
	uint64_t k, m = 0;

	for (k = 0; k < n; k++) {
		uint64_t *ptep = cand_ptep(&c[k]);
		uint64_t pte = hpte_load(ptep);

		hpte_store_sc(ptep, pte | HPTE_BUSY);
		sim_hook(s, SIM_HOOK_EVENT_BUSY, vma_hva(s, c[k].vma, c[k].i));
		if (__atomic_load_n(&s->frames[hpte_val(pte)].pins, __ATOMIC_SEQ_CST)) {
			hpte_store(ptep, pte);
			continue;
		}
		c[k].pte = pte;
		c[m++] = c[k];
	}
	return m;
}

/* Candidates an event ends up not changing: their PTEs as they were. */
static void cands_restore(const struct sim_cand *c, uint64_t n)
{
	for (uint64_t k = 0; k < n; k++)
		hpte_store(cand_ptep(&c[k]), c[k].pte);
}

/* Invalidate (start) or end each run of address-contiguous candidates. Context: mm lock. */
static void cands_notify(struct sim_host *s, const struct sim_cand *c, uint64_t n, bool start)
{
	uint64_t a = 0, b;

	while (a < n) {
		for (b = a + 1; b < n && c[b].vma == c[a].vma && c[b].i == c[b - 1].i + 1; b++)
			;
		if (start)
			notify_start(s, vma_hva(s, c[a].vma, c[a].i),
				     vma_hva(s, c[b - 1].vma, c[b - 1].i) + s->page_size);
		else
			notify_end(s, vma_hva(s, c[a].vma, c[a].i),
				   vma_hva(s, c[b - 1].vma, c[b - 1].i) + s->page_size);
		a = b;
	}
}

/*
 * gpamm_sim_reclaim() - see host.h. Swaps out present, unpinned, unshared,
 * non-device pages in address order. Return: pages swapped (0 when none
 * qualified, or all that did were pinned meanwhile), -EINVAL (bad range),
 * -ENOSPC (no swap configured, or pages qualified but swap is full), -ENOMEM.
 * Context: takes the mm lock and the range's VMA locks (write); notifier
 * per run of reclaimed pages.
 */
static int64_t sim_event_reclaim(struct gpamm_host *h, uint64_t hva, uint64_t len, uint64_t max)
{
	struct sim_host *s = sim_of(h);
	struct sim_cand *c = NULL;
	uint64_t k, nfree;
	int64_t n;
	bool found;

	if (!s || !range_ok(s, hva, len))
		return -EINVAL;
	if (!s->nswap)
		return -ENOSPC;
	if (!max)
		return 0;
	pthread_mutex_lock(&s->mm_lock);
	vmas_lock_range(s, hva, hva + len, true);
	/* Only reclaim takes slots, and we hold the mm lock: this many stay free. */
	nfree = swap_slots_free(s);
	if (max > nfree)
		max = nfree;
	n = cands_collect(s, hva, len, CAND_PRIVATE, max, &c, &found);
	if (n == 0 && found)
		n = -ENOSPC; /* only a full swap stops a qualifying page at 0 */
	if (n <= 0)
		goto out;
	n = (int64_t)cands_isolate(s, c, (uint64_t)n);
	cands_notify(s, c, (uint64_t)n, true);
	for (k = 0; k < (uint64_t)n; k++) {
		uint64_t *ptep = cand_ptep(&c[k]);
		uint64_t pte = c[k].pte;
		int64_t slot = swap_slot_alloc(s);

		GPAMM_BUG_ON(slot < 0);
		if (slot < 0) {
			cands_restore(c + k, (uint64_t)n - k);
			break;
		}
		memcpy(swap_ptr(s, (uint64_t)slot), frame_ptr(s, hpte_val(pte)), s->page_size);
		hpte_store_sc(ptep, ((uint64_t)slot << HPTE_VAL_SHIFT) | (pte & HPTE_PROT_RO) | HPTE_SWAP);
		frame_unmap(s, hpte_val(pte));
	}
	cands_notify(s, c, (uint64_t)n, false);
	n = (int64_t)k;
out:
	if (n >= 0)
		stat_add(&s->events, 1);
	vmas_lock_range(s, hva, hva + len, false);
	pthread_mutex_unlock(&s->mm_lock);
	free(c);
	return n;
}

/*
 * gpamm_sim_migrate() - see host.h. Moves present, unpinned, unshared,
 * non-device pages to frames that were free longest; old frames are freed
 * (poisoned in checking mode). Return: pages moved (0 when none qualified,
 * or all that did were pinned meanwhile), -EINVAL, -ENOMEM (pages qualified
 * but no frame was free, or bookkeeping).
 * Context: takes the mm lock and the range's VMA locks (write); notifier
 * per run of moved pages.
 */
static int64_t sim_event_migrate(struct gpamm_host *h, uint64_t hva, uint64_t len)
{
	struct sim_host *s = sim_of(h);
	struct sim_cand *c = NULL;
	uint64_t k;
	int64_t n;
	bool found;

	if (!s || !range_ok(s, hva, len))
		return -EINVAL;
	pthread_mutex_lock(&s->mm_lock);
	vmas_lock_range(s, hva, hva + len, true);
	n = cands_collect(s, hva, len, CAND_PRIVATE, frames_free(s), &c, &found);
	if (n == 0 && found)
		n = -ENOMEM;
	if (n <= 0)
		goto out;
	n = (int64_t)cands_isolate(s, c, (uint64_t)n);
	/* Prepare: every new frame first. Faults elsewhere may have taken
	 * some of those counted free; the pages left over stay put. */
	for (k = 0; k < (uint64_t)n; k++) {
		int64_t idx = frame_alloc(s);

		if (idx < 0)
			break;
		c[k].frame = (uint64_t)idx;
	}
	if (k < (uint64_t)n) {
		cands_restore(c + k, (uint64_t)n - k);
		n = k ? (int64_t)k : -ENOMEM;
		if (n < 0)
			goto out;
	}
	/* Commit. */
	cands_notify(s, c, (uint64_t)n, true);
	for (k = 0; k < (uint64_t)n; k++) {
		uint64_t pte = c[k].pte, old = hpte_val(pte), idx = c[k].frame;

		memcpy(frame_ptr(s, idx), frame_ptr(s, old), s->page_size);
		__atomic_store_n(&s->frames[idx].flags,
				 __atomic_load_n(&s->frames[old].flags, __ATOMIC_RELAXED),
				 __ATOMIC_RELAXED);
		frame_map(s, idx);
		hpte_store_sc(cand_ptep(&c[k]), (idx << HPTE_VAL_SHIFT) | (pte & HPTE_FLAGS));
		frame_unmap(s, old);
	}
	cands_notify(s, c, (uint64_t)n, false);
out:
	if (n >= 0)
		stat_add(&s->events, 1);
	vmas_lock_range(s, hva, hva + len, false);
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

/* Point page @m at @keeper's frame, read-only copy-on-write; still BUSY. */
static void merge_into(struct sim_host *s, const struct sim_cand *m, uint64_t keeper)
{
	uint64_t *ptep = cand_ptep(m);
	uint64_t pte = hpte_load(ptep), old = hpte_val(pte);

	frame_map(s, keeper);
	hpte_store_sc(ptep, (keeper << HPTE_VAL_SHIFT) | (pte & HPTE_PROT_RO) | HPTE_PRESENT |
			 HPTE_COW | HPTE_BUSY);
	frame_unmap(s, old);
}

static void make_cow(const struct sim_cand *m)
{
	uint64_t *ptep = cand_ptep(m);

	hpte_store(ptep, (hpte_load(ptep) | HPTE_COW) & ~HPTE_WRITE);
}

/*
 * gpamm_sim_merge() - see host.h. Like KSM: candidates (present, unpinned,
 * non-device pages) are write-protected first (BUSY, then the notifier), then
 * compared, so no guest write can slip in between compare and merge. In each
 * set of identical pages the lowest address keeps its frame, every page of
 * the set maps it copy-on-write, and the others' frames are dropped.
 * Return: pages that changed frame, -EINVAL, -ENOMEM.
 * Context: takes the mm lock and the range's VMA locks (write); notifier
 * per run of candidate pages.
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
	vmas_lock_range(s, hva, hva + len, true);
	n = cands_collect(s, hva, len, CAND_MERGEABLE, UINT64_MAX, &c, &found);
	if (n <= 0)
		goto out;
	n = (int64_t)cands_isolate(s, c, (uint64_t)n);
	cands_notify(s, c, (uint64_t)n, true);
	for (k = 0; k < (uint64_t)n; k++)
		c[k].hash = page_hash(frame_ptr(s, hpte_val(c[k].pte)), s->page_size);
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
			uint64_t pk = hpte_val(hpte_load(cand_ptep(&c[k])));
			uint64_t j;

			for (j = a; j < k; j++) {
				uint64_t pj = hpte_val(hpte_load(cand_ptep(&c[j])));

				if (pj != pk && memcmp(frame_ptr(s, pj), frame_ptr(s, pk),
						       s->page_size))
					continue;
				if (pj != pk) {
					merge_into(s, &c[k], pj);
					merged++;
				}
				make_cow(&c[j]);
				make_cow(&c[k]);
				break;
			}
		}
	}
	qsort(c, (uint64_t)n, sizeof(*c), cand_cmp_seq);
	/* Done with them: lock-free pins may come back (read-only where merged). */
	for (k = 0; k < (uint64_t)n; k++)
		hpte_store(cand_ptep(&c[k]), hpte_load(cand_ptep(&c[k])) & ~HPTE_BUSY);
	cands_notify(s, c, (uint64_t)n, false);
	n = (int64_t)merged;
out:
	if (n >= 0)
		stat_add(&s->events, 1);
	vmas_lock_range(s, hva, hva + len, false);
	pthread_mutex_unlock(&s->mm_lock);
	free(c);
	return n;
}

/* ---- the host's own access ---------------------------------------------------- */

/*
 * Reads and writes by the host itself (the VMM touching guest RAM). Every
 * page is checked first, so a bad range changes nothing; a write faults
 * pages in and breaks copy-on-write like a guest write would. Reading a
 * page never touched reads zeros without allocating (Linux's zero page),
 * unless it is a missing page: every missing page of the range is served
 * by its handler first (each call with the VMA lock dropped, then the whole
 * range is checked again), so the copy itself never meets one.
 * Context: the VMA's lock (read) for the whole copy, so its holes,
 * protection and missing pages hold still; each page's table-page lock
 * while it is copied; no lock across a handler call.
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
	v = vma_lookup(s, hva);
	if (!v || hva + len > vma_end(v))
		return -EFAULT;
again:
	pthread_rwlock_rdlock(&v->lock);
	for (p = hva & ~s->page_mask; p < hva + len; p += s->page_size) {
		i = (p - v->start) >> h->page_shift;
		pte = hpte_load(&v->ptes[i]);
		if ((pte & HPTE_HOLE) || (write && !vma_may_write(v, pte))) {
			ret = -EFAULT;
			goto out;
		}
		if (pte_missing(v, i, pte)) {
			/*
			 * Served before anything is copied, with no lock held,
			 * then every page is checked again. Once a pass finds
			 * none missing, none can become so before the VMA lock
			 * is dropped (pte_missing()): the copy below never
			 * meets one, and a bad range still changes nothing.
			 */
			struct sim_miss miss = { v->miss_fn, v->miss_arg, p };

			pthread_rwlock_unlock(&v->lock);
			ret = miss_call(&miss, write);
			if (ret)
				return ret;
			goto again;
		}
	}
	for (p = hva; p < hva + len; p += n) {
		pthread_mutex_t *ptl;

		i = (p - v->start) >> h->page_shift;
		off = p & s->page_mask;
		n = s->page_size - off;
		if (n > hva + len - p)
			n = hva + len - p;
		ptl = vma_ptl(s, v, i);
		pthread_mutex_lock(ptl);
		pte = hpte_load(&v->ptes[i]);
		GPAMM_BUG_ON(pte_missing(v, i, pte));
		if (!write && !(pte & (HPTE_PRESENT | HPTE_SWAP))) {
			pthread_mutex_unlock(ptl);
			memset((uint8_t *)rbuf + (p - hva), 0, n);
			continue;
		}
		ret = fault_in(s, v, i, write, &faulted);
		if (ret) {
			pthread_mutex_unlock(ptl);
			goto out;
		}
		pte = hpte_load(&v->ptes[i]);
		if (write) {
			guest_mem_copy((uint8_t *)frame_ptr(s, hpte_val(pte)) + off,
				       (const uint8_t *)wbuf + (p - hva), n);
			frame_mark(&s->frames[hpte_val(pte)], true, true);
		} else {
			guest_mem_copy((uint8_t *)rbuf + (p - hva),
				       (uint8_t *)frame_ptr(s, hpte_val(pte)) + off, n);
		}
		pthread_mutex_unlock(ptl);
	}
out:
	pthread_rwlock_unlock(&v->lock);
	return ret;
}

/*
 * gpamm_sim_read() - see host.h. Return: 0, -EINVAL (NULL buffer or
 * wrapping range), -EFAULT (a byte not mapped),
 * -ENOMEM (no frame to swap a page in), or a missing-page handler's errno
 * (nothing read).
 * Context: takes the VMA's lock (read) and table-page locks; calls the
 * handler of each missing page of the range with no lock held.
 */
static int sim_event_read(struct gpamm_host *h, uint64_t hva, void *buf, uint64_t len)
{
	return sim_access(h, hva, buf, NULL, len, false);
}

/*
 * gpamm_sim_write() - see host.h. Return: 0, -EFAULT (a byte not mapped or
 * not writable; nothing written), -ENOMEM (no frame; bytes of earlier
 * pages may have been written), or a missing-page handler's errno (nothing
 * written).
 * Context: takes the VMA's lock (read) and table-page locks; notifier on a
 * copy-on-write break; calls the handler of each missing page of the range
 * with no lock held.
 */
static int sim_event_write(struct gpamm_host *h, uint64_t hva, const void *buf, uint64_t len)
{
	return sim_access(h, hva, NULL, buf, len, true);
}

/* ---- missing pages (userfaultfd MISSING mode, UFFDIO_COPY) -------------------- */

/*
 * gpamm_sim_register_missing() - see host.h. The range must be mapped
 * (no holes) and lie in one VMA; device memory cannot be registered (as
 * userfaultfd refuses PFNMAP). Re-registering exactly the VMA's range
 * replaces the handler; any other range of a VMA that has one is -EBUSY.
 * No page changes, so no notifier: present and swapped pages stay as they
 * are, and the pages that are neither become missing.
 * Return: 0, -EINVAL, -EBUSY.
 * Context: takes the mm lock and the VMA's lock (write): no fault or host
 * access of the VMA is between its look at the registration and its use.
 */
static int sim_event_register_missing(struct gpamm_host *h, uint64_t hva, uint64_t len,
				      gpamm_sim_missing_fn fn, void *arg)
{
	struct sim_host *s = sim_of(h);
	struct sim_vma *v;
	uint64_t lo, hi;
	int ret = 0;

	if (!s || !fn || !range_ok(s, hva, len))
		return -EINVAL;
	pthread_mutex_lock(&s->mm_lock);
	v = range_vma_locked(s, hva, len);
	if (!v || (v->flags & GPAMM_SIM_DEVICE)) {
		ret = -EINVAL;
		goto out;
	}
	lo = (hva - v->start) >> h->page_shift;
	hi = lo + (len >> h->page_shift);
	if (v->miss_fn && (v->miss_lo != lo || v->miss_hi != hi)) {
		ret = -EBUSY;
		goto out;
	}
	pthread_rwlock_wrlock(&v->lock);
	v->miss_lo = lo;
	v->miss_hi = hi;
	v->miss_fn = fn;
	v->miss_arg = arg;
	pthread_rwlock_unlock(&v->lock);
out:
	pthread_mutex_unlock(&s->mm_lock);
	return ret;
}

/*
 * gpamm_sim_unregister_missing() - see host.h. The range must be mapped and
 * lie in one VMA. The part of the VMA's registration it covers stops being
 * registered: a range covering all of it removes it, one covering either
 * end trims it, one meeting none of it does nothing; one strictly inside it
 * would split it in two, which a VMA's one range cannot be (-EINVAL,
 * nothing changed). Threads already inside the handler are not woken (the
 * handler is the VMM's: it wakes its own waiters); when they return 0 the
 * access is retried and faults the page in zero-filled.
 * Return: 0, -EINVAL.
 * Context: takes the mm lock and the VMA's lock (write).
 */
static int sim_event_unregister_missing(struct gpamm_host *h, uint64_t hva, uint64_t len)
{
	struct sim_host *s = sim_of(h);
	struct sim_vma *v;
	uint64_t lo, hi;
	int ret = 0;

	if (!s || !range_ok(s, hva, len))
		return -EINVAL;
	pthread_mutex_lock(&s->mm_lock);
	v = range_vma_locked(s, hva, len);
	if (!v) {
		ret = -EINVAL;
		goto out;
	}
	lo = (hva - v->start) >> h->page_shift;
	hi = lo + (len >> h->page_shift);
	if (!v->miss_fn || hi <= v->miss_lo || lo >= v->miss_hi)
		goto out;
	if (lo > v->miss_lo && hi < v->miss_hi) {
		ret = -EINVAL;
		goto out;
	}
	pthread_rwlock_wrlock(&v->lock);
	if (lo <= v->miss_lo && hi >= v->miss_hi)
		v->miss_lo = v->miss_hi = 0;
	else if (lo <= v->miss_lo)
		v->miss_lo = hi;
	else
		v->miss_hi = lo;
	if (v->miss_lo == v->miss_hi) {
		v->miss_fn = NULL;
		v->miss_arg = NULL;
	}
	pthread_rwlock_unlock(&v->lock);
out:
	pthread_mutex_unlock(&s->mm_lock);
	return ret;
}

/*
 * gpamm_sim_place_page() - see host.h. Any page that is mapped and neither
 * present nor swapped may be placed, registered or not (a page of an
 * unregistered range then holds @src instead of faulting in zeros). The
 * frame is filled under the page's table-page lock and only then published
 * by the PTE store (release), so a lock-free get_page() or check_access()
 * that sees the PTE sees the bytes, and a locked fault waits for the lock.
 * No notifier: a page that was not present has no guest translation. The
 * sim host keeps no wait queue: the threads waiting in the handler learn of
 * the placement from the handler's own machinery, and find the page at
 * their retry.
 * Return: 0, -EEXIST (present or swapped: nothing changed), -EINVAL (not a
 * sim host, NULL @src, @hva not page aligned or not mapped), -ENOMEM.
 * Context: takes the VMA's lock (read) and the page's table-page lock.
 */
static int sim_event_place_page(struct gpamm_host *h, uint64_t hva, const void *src)
{
	struct sim_host *s = sim_of(h);
	struct sim_vma *v;
	pthread_mutex_t *ptl;
	uint64_t i, pte, *ptep;
	int64_t idx;
	int ret = 0;

	if (!s || !src || (hva & s->page_mask))
		return -EINVAL;
	v = vma_lookup(s, hva);
	if (!v)
		return -EINVAL;
	i = (hva - v->start) >> h->page_shift;
	ptep = &v->ptes[i];
	ptl = vma_ptl(s, v, i);
	pthread_rwlock_rdlock(&v->lock);
	pthread_mutex_lock(ptl);
	pte = hpte_load(ptep);
	GPAMM_BUG_ON(pte & HPTE_BUSY); /* BUSY lives only under the VMA lock (write) */
	if (pte & HPTE_HOLE) {
		ret = -EINVAL;
	} else if (pte & (HPTE_PRESENT | HPTE_SWAP)) {
		ret = -EEXIST;
	} else if ((idx = frame_alloc(s)) < 0) {
		ret = -ENOMEM;
	} else {
		/* A stale reader of the frame's last life may race the copy (checking mode). */
		guest_mem_copy(frame_ptr(s, (uint64_t)idx), src, s->page_size);
		frame_map(s, (uint64_t)idx);
		hpte_store(ptep, ((uint64_t)idx << HPTE_VAL_SHIFT) | (pte & HPTE_PROT_RO) |
				 HPTE_PRESENT | (vma_may_write(v, pte) ? HPTE_WRITE : 0));
	}
	pthread_mutex_unlock(ptl);
	pthread_rwlock_unlock(&v->lock);
	return ret;
}

/*
 * gpamm_sim_page_present() - see host.h. Present or swapped: 1; neither
 * (missing, or never touched): 0. A page an event holds BUSY is present.
 * Return: 1, 0, -EINVAL (not a sim host, not page aligned, not mapped).
 * Context: lock-free; any thread, guest code included.
 */
int gpamm_sim_page_present(struct gpamm_host *h, uint64_t hva)
{
	struct sim_host *s = sim_of(h);
	struct sim_vma *v;
	uint64_t pte;

	if (!s || (hva & s->page_mask))
		return -EINVAL;
	v = vma_lookup(s, hva);
	if (!v)
		return -EINVAL;
	pte = hpte_load(&v->ptes[(hva - v->start) >> h->page_shift]);
	if (pte & HPTE_HOLE)
		return -EINVAL;
	return (pte & (HPTE_PRESENT | HPTE_SWAP)) ? 1 : 0;
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
 * The calls as the API has them. Each takes host locks (the mm lock, or a
 * VMA's lock); called from guest code it first leaves guest mode, as the
 * exit a real guest would take to reach the host (guestcall.h). Otherwise
 * its own event's remote flush, or another thread's event that holds those
 * locks while its flush waits, would wait for this very vCPU.
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
SIM_EVENT_CALL(int, register_missing,
	       (struct gpamm_host *h, uint64_t hva, uint64_t len, gpamm_sim_missing_fn fn, void *arg),
	       (h, hva, len, fn, arg))
SIM_EVENT_CALL(int, unregister_missing, (struct gpamm_host *h, uint64_t hva, uint64_t len),
	       (h, hva, len))
SIM_EVENT_CALL(int, place_page, (struct gpamm_host *h, uint64_t hva, const void *src),
	       (h, hva, src))
