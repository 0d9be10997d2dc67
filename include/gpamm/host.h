/* SPDX-License-Identifier: MIT */
/*
 * gpamm/host.h - the host-memory interface, and the two hosts gpamm ships.
 *
 * The MMU asks a host for the page behind a host virtual address (HVA) and
 * pins it for the time it needs it; the host tells the MMU, through the MMU
 * notifier, before it changes or takes away a page the guest may map.
 * An embedder can implement struct gpamm_host_ops over its own memory.
 *
 * Lock order: host locks (the sim host: mm lock, VMA locks, page-table
 * locks) -> MMU lock. The MMU never calls get_page() or put_page() with its
 * lock held. mark_page(), page_ptr() and check_access() are called with the
 * MMU lock held or on the guest access path, while a host event may be
 * waiting for that lock or for a TLB flush: they must not take any host
 * lock (atomics only) and must never block. get_page() may be called by
 * many threads at once; a host should not serialise them (the sim host
 * pins a present page without a lock and faults a page in under locks of
 * its VMA and page-table page only).
 *
 * Host pages are the VM's page size: a host is created for one page shift
 * and a VM can only use a host of its own page shift.
 */
#ifndef GPAMM_HOST_H
#define GPAMM_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gpamm_host;

/* gpamm_host_page.flags */
#define GPAMM_HOST_PAGE_WRITABLE (1u << 0) /* the host mapping allows writes */
#define GPAMM_HOST_PAGE_UNCACHED (1u << 1) /* device / PFNMAP memory: map SUC */

/** struct gpamm_host_page - a pinned host page, with the attributes of its
 * mapping as the host PTE said when the pin was taken (under the host's
 * lock, or confirmed lock-free with the pin held; reading them later, after
 * the pin, is the race REFERENCE.md §7.12). */
struct gpamm_host_page {
	uint64_t pfn;
	uint32_t flags;
	uint32_t map_shift; /* size of the host mapping covering it (page_shift, or larger if huge) */
};

/**
 * struct gpamm_mmu_notifier_ops - what a host calls on a registered MMU.
 * Ranges are HVA byte ranges [start, end). Context: called by the host with
 * what excludes faults on the range held (the sim host: its mm lock and the
 * VMA's lock for write; for a copy-on-write break, the page's page-table
 * lock), so no fault can pin a page of the range through the host's locks
 * meanwhile; a pin taken lock-free just before the change is dropped by the
 * MMU's sequence retry, which start/end move. Calls for different ranges
 * may come from several threads at once. start/end always come in pairs
 * around the change; aging returns whether any guest translation of the
 * range was young.
 */
struct gpamm_mmu_notifier_ops {
	void (*invalidate_range_start)(void *mn, uint64_t start, uint64_t end);
	void (*invalidate_range_end)(void *mn, uint64_t start, uint64_t end);
	bool (*clear_flush_young)(void *mn, uint64_t start, uint64_t end);
	bool (*clear_young)(void *mn, uint64_t start, uint64_t end);
	bool (*test_young)(void *mn, uint64_t start, uint64_t end);
	/* the address space goes away: remove every translation */
	void (*release)(void *mn);
};

struct gpamm_host_stats {
	uint64_t pinned;        /* outstanding pins (get_page without put_page) */
	uint64_t frames_live;   /* frames holding data (sim); 0 for direct */
	uint64_t frames_total;
	uint64_t stale_accesses;/* checking mode: guest accesses that reached a dead or moved frame */
	uint64_t faults_in;     /* pages the host had to fault in for get_page */
	uint64_t swapped;       /* pages in swap now */
	uint64_t events;        /* host events run (reclaim, migrate, merge, unmap, mprotect) */
};

/**
 * struct gpamm_host_ops - a host-memory backend.
 * @get_page:     fault in (zero-filled if new) and pin the page at @hva; with
 *                @write, break copy-on-write and fail unless the mapping is
 *                writable. Context: may sleep; any number of threads at
 *                once. The sim host takes no lock for a page already
 *                present, and the VMA lock (read) and the page-table
 *                lock to fault one in; never the mm lock.
 *                Return: 0, -EFAULT (no mapping, or no permission for the
 *                access), -ENOMEM (no frame), -EHWPOISON (poisoned page).
 * @put_page:     drop a pin, marking the page accessed/dirty first.
 * @mark_page:    mark a mapped page accessed/dirty without a pin; the caller
 *                holds the MMU lock, so the page cannot go away. Lock-free.
 * @page_ptr:     where the bytes of @pfn are in this process. Lock-free.
 * @check_access: optional checking mode: is @pfn live and still what maps
 *                @hva (and writable there, for a write)? Lock-free.
 *                Return: 0, or -ESTALE (counted in stale_accesses).
 * @notifier_register / @notifier_unregister: attach an MMU (one per VM).
 * @exit:         optional: the owner destroys the host, which is the address
 *                space going away (a process's mm exit): call release() on
 *                every MMU still registered. The registrations stay, and
 *                so does the host's memory, until each VM has unregistered.
 * @destroy:      free the host; called once neither the owner nor any VM
 *                holds it (a VM unregisters before it lets go; a notifier
 *                registered by someone who holds nothing is forgotten).
 * @stats.
 */
struct gpamm_host_ops {
	const char *name;
	int (*get_page)(struct gpamm_host *h, uint64_t hva, bool write, struct gpamm_host_page *out);
	void (*put_page)(struct gpamm_host *h, uint64_t pfn, bool accessed, bool dirty);
	void (*mark_page)(struct gpamm_host *h, uint64_t pfn, bool accessed, bool dirty);
	void *(*page_ptr)(struct gpamm_host *h, uint64_t pfn);
	int (*check_access)(struct gpamm_host *h, uint64_t hva, uint64_t pfn, bool write);
	int (*notifier_register)(struct gpamm_host *h, const struct gpamm_mmu_notifier_ops *ops, void *mn);
	void (*notifier_unregister)(struct gpamm_host *h, void *mn);
	void (*stats)(struct gpamm_host *h, struct gpamm_host_stats *st);
	void (*exit)(struct gpamm_host *h);
	void (*destroy)(struct gpamm_host *h);
};

/** Every host begins with this. */
struct gpamm_host {
	const struct gpamm_host_ops *ops;
	unsigned page_shift;
	bool checking; /* check_access is called on every guest access */
	/*
	 * Optional: when every frame's bytes are at (pfn << page_shift) +
	 * pfn_linear_off, set pfn_linear, and a TLB fill computes the address
	 * instead of calling page_ptr().
	 */
	bool pfn_linear;
	intptr_t pfn_linear_off;
	/*
	 * Lifetime, kept by gpamm_host_hold/drop/destroy: bit 0 says the
	 * owner has destroyed the host, the rest counts holders (2 each).
	 * A host's constructor leaves it 0.
	 */
	_Atomic uint64_t lifetime;
};

static inline void *gpamm_host_page_ptr(struct gpamm_host *h, uint64_t pfn)
{
	if (h->pfn_linear)
		return (void *)(uintptr_t)((intptr_t)(pfn << h->page_shift) + h->pfn_linear_off);
	return h->ops->page_ptr(h, pfn);
}

/**
 * gpamm_host_destroy() - the owner is done with the host: its address space
 * goes away (ops->exit tells every VM still attached, whose translations
 * are removed and whose later calls fail with -EIO), and the host is freed
 * as soon as no VM holds it: at once, or at the last gpamm_vm_destroy().
 * Either order of host and VM destroy is correct. NULL is ignored.
 */
void gpamm_host_destroy(struct gpamm_host *h);
/** gpamm_host_hold() / gpamm_host_drop() - keep @h alive (a VM holds its host from create to destroy). */
void gpamm_host_hold(struct gpamm_host *h);
void gpamm_host_drop(struct gpamm_host *h);
static inline void gpamm_host_stats(struct gpamm_host *h, struct gpamm_host_stats *st)
{
	h->ops->stats(h, st);
}

/* ---- direct: guest RAM is this process's own memory --------------------- */

/**
 * gpamm_host_direct_create() - a host whose pages are this process's memory:
 * the page behind HVA h is the page at address h, and its PFN is h >> page_shift.
 * The VMM mmaps guest RAM itself and passes its address as userspace_addr.
 * There are no host events; pins are counted. Return: NULL on bad shift / ENOMEM.
 */
struct gpamm_host *gpamm_host_direct_create(unsigned page_shift);

/* ---- sim: a simulated host kernel -------------------------------------- */

struct gpamm_sim_config {
	unsigned page_shift;  /* 12, 14, 16 */
	uint64_t frames;      /* frame pool capacity, in pages */
	uint64_t swap_pages;  /* swap capacity, in pages (0: no swap, reclaim fails) */
	bool checking;        /* poison freed frames, check every guest access */
	bool prefault;        /* fault the frame arena in at creation: host RAM that
			       * exists before the VM (QEMU's -mem-prealloc); checking
			       * hosts always do (they poison every frame) */
};

/* gpamm_sim_mmap() flags */
#define GPAMM_SIM_READONLY (1u << 0) /* mapping is read-only */
#define GPAMM_SIM_DEVICE   (1u << 1) /* device memory (PFNMAP): uncached, never reclaimed */
#define GPAMM_SIM_HUGE     (1u << 2) /* back with huge mappings where aligned (THP-like) */

struct gpamm_host *gpamm_host_sim_create(const struct gpamm_sim_config *cfg);
/** gpamm_sim_mmap() - a new VMA of @len bytes (page multiple); its HVA in @hva. */
int gpamm_sim_mmap(struct gpamm_host *h, uint64_t len, unsigned flags, uint64_t *hva);
/** gpamm_sim_munmap() - unmap (notifier first); frames are freed. */
int gpamm_sim_munmap(struct gpamm_host *h, uint64_t hva, uint64_t len);
/** gpamm_sim_madv_dontneed() - drop the pages; the next access reads zeros. */
int gpamm_sim_madv_dontneed(struct gpamm_host *h, uint64_t hva, uint64_t len);
/** gpamm_sim_mprotect() - make a range read-only (@writable false) or writable again. */
int gpamm_sim_mprotect(struct gpamm_host *h, uint64_t hva, uint64_t len, bool writable);
/** gpamm_sim_reclaim() - swap out up to @max unpinned pages of the range; returns pages swapped (>= 0) or errno. */
int64_t gpamm_sim_reclaim(struct gpamm_host *h, uint64_t hva, uint64_t len, uint64_t max);
/** gpamm_sim_migrate() - move unpinned pages of the range to new frames; returns pages moved or errno. */
int64_t gpamm_sim_migrate(struct gpamm_host *h, uint64_t hva, uint64_t len);
/** gpamm_sim_merge() - merge pages of the range with identical contents copy-on-write (KSM); returns pages merged or errno. */
int64_t gpamm_sim_merge(struct gpamm_host *h, uint64_t hva, uint64_t len);
/**
 * gpamm_sim_clear_young() - host page aging: ask every MMU attached to the
 * host whether the range [@hva, @hva + @len) was accessed, and make it old
 * there (clear_flush_young when @flush, clear_young otherwise).
 * Return: 0 and *@young, -EINVAL for an empty range or one that is not
 * page aligned.
 */
int gpamm_sim_clear_young(struct gpamm_host *h, uint64_t hva, uint64_t len, bool flush,
			  bool *young);
/** gpamm_sim_test_young() - as gpamm_sim_clear_young() but only asks (test_young). */
int gpamm_sim_test_young(struct gpamm_host *h, uint64_t hva, uint64_t len, bool *young);
/** gpamm_sim_read() / gpamm_sim_write() - the host's own access to its memory (faults pages in). */
int gpamm_sim_read(struct gpamm_host *h, uint64_t hva, void *buf, uint64_t len);
int gpamm_sim_write(struct gpamm_host *h, uint64_t hva, const void *buf, uint64_t len);

/* ---- missing pages: userfaultfd's MISSING mode, for post-copy ----------- */

/**
 * gpamm_sim_missing_fn - called when a page of a registered range is needed
 * (a get_page from a guest fault, or gpamm_sim_read/write) and has never
 * been placed: @hva is the page's address (page aligned), @write whether
 * the access writes. Called with no host lock held, on the faulting thread
 * (which may be a vCPU thread, in its fault path, outside guest mode). It
 * must make the page present (gpamm_sim_place_page, from any thread) and
 * then return 0, and the access is retried; or return a negative errno,
 * which the access returns (a guest fault then exits with a memory fault).
 * It may block (wait for the network): nothing else waits for it but the
 * threads needing that page.
 * The sim host does not deduplicate: every thread that needs the page calls
 * @fn (so @fn asks for a page once however many wait, and finds it placed
 * if it looks late); a return of 0 with the page still missing calls it
 * again. A guest fault calls it inside the MMU's RCU read-side section: it
 * must not change memslots.
 */
typedef int (*gpamm_sim_missing_fn)(void *arg, uint64_t hva, bool write);

/**
 * gpamm_sim_register_missing() - make every page of [@hva, @hva + @len)
 * that is not present (never touched, or dropped by madv_dontneed) a
 * missing page, served by @fn (UFFDIO_REGISTER with MISSING). One range per
 * VMA; re-registering replaces @fn. Pages that are present are unaffected.
 * Return: 0, -EINVAL (range not page aligned, empty, not inside one VMA, or
 * NULL @fn), -EBUSY (the VMA has another registration).
 * Also -EINVAL: part of the range unmapped, or device memory.
 */
int gpamm_sim_register_missing(struct gpamm_host *h, uint64_t hva, uint64_t len,
			       gpamm_sim_missing_fn fn, void *arg);
/** gpamm_sim_unregister_missing() - the range behaves as normal memory again (zero pages).
 * The range lies in one VMA; the part of its registration it covers (all,
 * or either end) goes; one strictly inside would split it. Return: 0 (also
 * when nothing there was registered), -EINVAL (range not page aligned,
 * empty, not mapped whole inside one VMA, or a split: nothing changed). */
int gpamm_sim_unregister_missing(struct gpamm_host *h, uint64_t hva, uint64_t len);
/**
 * gpamm_sim_place_page() - UFFDIO_COPY: make the page at @hva (page
 * aligned) present with the contents @src (page_size bytes), atomically: no
 * access sees it half written, and every thread waiting in @fn for it can
 * go on. Return: 0, -EEXIST (the page is present already: nothing changed),
 * -EINVAL (not aligned, not mapped, NULL @src), -ENOMEM (no frame).
 * Allowed on any mapped page that is neither present nor swapped, in a
 * registered range or not. No MMU-notifier call (the page was not mapped).
 */
int gpamm_sim_place_page(struct gpamm_host *h, uint64_t hva, const void *src);
/**
 * gpamm_sim_page_present() - whether the page at @hva is present (placed,
 * faulted in or swapped out), without faulting it in. Return: 1, 0, or
 * -EINVAL.
 */
int gpamm_sim_page_present(struct gpamm_host *h, uint64_t hva);

#endif
