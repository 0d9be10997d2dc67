// SPDX-License-Identifier: MIT
/*
 * Dirty logging and access tracking, as the VMM drives them: the bitmap
 * calls (GET, classic or manual-protect, and CLEAR), the per-vCPU dirty
 * rings and their reset, and the idle-page calls. Every write-protect is
 * done under the MMU lock with the 64-page masked mkclean and followed by a
 * remote TLB flush before the call returns, so a write after the return
 * faults and is logged again (DESIGN.md contract 2).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vm.h"

/* ---- bitmap mode ------------------------------------------------------------ */

int gpamm_vm_enable_manual_dirty_log_protect(struct gpamm_vm *vm, unsigned flags)
{
	const unsigned known = GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | GPAMM_DIRTY_LOG_INITIALLY_SET;

	if (!vm || (flags & ~known) ||
	    ((flags & GPAMM_DIRTY_LOG_INITIALLY_SET) &&
	     !(flags & GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)))
		return -EINVAL;
	pthread_mutex_lock(&vm->slots_lock);
	vm->dirty_log_flags = flags;
	pthread_mutex_unlock(&vm->slots_lock);
	return 0;
}

/*
 * The logging slot @id, or an errno, checked in KVM's order: ring mode,
 * the slot id, (for CLEAR) the first page's alignment, then the slot.
 * Context: slots_lock held.
 */
static int log_slot(struct gpamm_vm *vm, uint32_t id, uint64_t first_page,
		    struct gpamm_memslot **out)
{
	struct gpamm_memslot *s;

	if (vm_is_dead(vm))
		return -EIO;
	if (vm->dirty_ring_size)
		return -ENXIO;
	if (id >= GPAMM_USER_MEM_SLOTS || (first_page & 63))
		return -EINVAL;
	s = vm->by_id[id];
	if (!s || !s->dirty_bitmap)
		return -ENOENT;
	*out = s;
	return 0;
}

/* Write-protect the pages of @mask at @gfn; returns entries changed. Context: MMU lock. */
static inline uint64_t wrprotect_mask(struct gpamm_vm *vm, const struct gpamm_memslot *s,
				      uint64_t gfn, uint64_t mask)
{
	if (!memslot_logging(s)) /* a read-only slot has nothing writable */
		return 0;
	return gpamm_pgt_mkclean_mask(&vm->pgt, gfn, mask);
}

/*
 * Write-protects word by word, but runs of full words (an all-dirty region,
 * the common case of a migration's first rounds) become one range mkclean:
 * one walk for many leaf tables instead of a descent per 64 pages.
 */
struct wp_batch {
	struct gpamm_vm *vm;
	const struct gpamm_memslot *s;
	uint64_t run_first, run_words; /* pending run of full words */
	uint64_t changed;
	bool cleared;                  /* a reported bit was cleared */
};

static void wp_flush_run(struct wp_batch *b)
{
	const unsigned ps = b->vm->geom.page_shift;
	uint64_t gfn = b->s->base_gfn + b->run_first * 64;

	if (b->run_words && memslot_logging(b->s))
		b->changed += gpamm_pgt_mkclean_range(&b->vm->pgt, gfn << ps,
						      (gfn + b->run_words * 64) << ps);
	b->run_words = 0;
}

/*
 * The last run, then the remote flush: whenever a reported bit was
 * cleared, as KVM does, not only when an entry changed. Skipping it when
 * no entry was dirty would be correct only if no path could ever leave a
 * TLB entry writable behind a clean leaf; the flush makes the dirty log
 * independent of that (docs/dirty-log.md, "When the dirty log flushes").
 * Context: MMU lock.
 */
static void wp_finish(struct wp_batch *b)
{
	wp_flush_run(b);
	if (b->cleared || b->changed)
		gpamm_flush_remote_tlbs(b->vm);
}

static void wp_word(struct wp_batch *b, uint64_t w, uint64_t mask)
{
	b->cleared |= mask != 0;
	if (!~mask) {
		if (b->run_words && b->run_first + b->run_words == w) {
			b->run_words++;
			return;
		}
		wp_flush_run(b);
		b->run_first = w;
		b->run_words = 1;
		return;
	}
	wp_flush_run(b);
	if (mask)
		b->changed += wrprotect_mask(b->vm, b->s, b->s->base_gfn + w * 64, mask);
}

int gpamm_vm_get_dirty_log(struct gpamm_vm *vm, uint32_t id, uint64_t *bitmap)
{
	struct gpamm_memslot *s;
	uint64_t words;
	int ret;

	if (!vm || !bitmap)
		return -EINVAL;
	pthread_mutex_lock(&vm->slots_lock);
	ret = log_slot(vm, id, 0, &s);
	if (ret)
		goto out;
	words = (s->npages + 63) / 64;
	if (vm->dirty_log_flags & GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) {
		for (uint64_t i = 0; i < words; i++)
			bitmap[i] = __atomic_load_n(&s->dirty_bitmap[i], __ATOMIC_RELAXED);
		goto out;
	}
	/*
	 * Classic: take each word (a fault may set bits meanwhile; those stay
	 * for the next GET), report it and write-protect what it reported.
	 */
	struct wp_batch b = { .vm = vm, .s = s };

	mmu_write_lock(&vm->mmu_lock);
	for (uint64_t i = 0; i < words; i++) {
		uint64_t mask = 0;

		if (__atomic_load_n(&s->dirty_bitmap[i], __ATOMIC_RELAXED))
			mask = __atomic_exchange_n(&s->dirty_bitmap[i], 0, __ATOMIC_ACQ_REL);
		bitmap[i] = mask;
		wp_word(&b, i, mask);
	}
	wp_finish(&b);
	mmu_write_unlock(&vm->mmu_lock);
out:
	pthread_mutex_unlock(&vm->slots_lock);
	return ret;
}

int gpamm_vm_clear_dirty_log(struct gpamm_vm *vm, uint32_t id, uint64_t first_page,
			     uint64_t num_pages, const uint64_t *bitmap)
{
	struct gpamm_memslot *s;
	int ret;

	if (!vm || !bitmap)
		return -EINVAL;
	pthread_mutex_lock(&vm->slots_lock);
	ret = log_slot(vm, id, first_page, &s);
	if (ret)
		goto out;
	if (first_page > s->npages || num_pages > s->npages - first_page ||
	    (num_pages < s->npages - first_page && (num_pages & 63))) {
		ret = -EINVAL;
		goto out;
	}
	struct wp_batch b = { .vm = vm, .s = s };

	mmu_write_lock(&vm->mmu_lock);
	for (uint64_t i = 0; i < (num_pages + 63) / 64; i++) {
		uint64_t want = bitmap[i], w = first_page / 64 + i, mask;

		if (!want)
			continue;
		/* Only bits that really were set are cleared and protected;
		 * bits past the end of the slot are never set. */
		mask = want & __atomic_fetch_and(&s->dirty_bitmap[w], ~want, __ATOMIC_ACQ_REL);
		wp_word(&b, w, mask);
	}
	wp_finish(&b);
	mmu_write_unlock(&vm->mmu_lock);
out:
	pthread_mutex_unlock(&vm->slots_lock);
	return ret;
}

/* ---- ring mode ------------------------------------------------------------------ */

int gpamm_vm_enable_dirty_ring(struct gpamm_vm *vm, uint32_t entries)
{
	int ret = 0;

	/* KVM's order and errnos: the size first (too large: -E2BIG), then
	 * the state (a ring already set, vCPUs created: -EINVAL) */
	if (!vm || !entries || (entries & (entries - 1)) || entries < 2 * GPAMM_DIRTY_RING_RSVD)
		return -EINVAL;
	if (entries > GPAMM_DIRTY_RING_MAX_ENTRIES)
		return -E2BIG;
	pthread_mutex_lock(&vm->slots_lock);
	pthread_mutex_lock(&vm->vcpus_lock);
	if (vm->dirty_ring_size || atomic_load(&vm->nr_vcpus))
		ret = -EINVAL;
	/* a slot that logs into a bitmap cannot switch to rings under way */
	for (uint32_t i = 0; !ret && i < GPAMM_USER_MEM_SLOTS; i++)
		if (vm->by_id[i] && vm->by_id[i]->dirty_bitmap)
			ret = -EINVAL;
	if (!ret)
		vm->dirty_ring_size = entries;
	pthread_mutex_unlock(&vm->vcpus_lock);
	pthread_mutex_unlock(&vm->slots_lock);
	return ret;
}

int gpamm_dirty_ring_alloc(struct gpamm_vcpu *vcpu)
{
	uint32_t n = vcpu->vm->dirty_ring_size;

	if (!n)
		return 0;
	vcpu->ring.gfns = calloc(n, sizeof(*vcpu->ring.gfns));
	if (!vcpu->ring.gfns)
		return -ENOMEM;
	vcpu->ring.size = n;
	return 0;
}

void gpamm_dirty_ring_free(struct gpamm_vcpu *vcpu)
{
	free(vcpu->ring.gfns);
	vcpu->ring.gfns = NULL;
}

/* Full but for the reserved entries: the vCPU must exit. */
bool gpamm_dirty_ring_soft_full(const struct gpamm_vcpu *vcpu)
{
	const struct dirty_ring *r = &vcpu->ring;

	return r->gfns &&
	       r->push - atomic_load(&r->reset) >= r->size - GPAMM_DIRTY_RING_RSVD;
}

struct gpamm_dirty_gfn *gpamm_vcpu_dirty_ring(struct gpamm_vcpu *vcpu, uint32_t *entries)
{
	if (entries)
		*entries = vcpu ? vcpu->ring.size : 0;
	return vcpu ? vcpu->ring.gfns : NULL;
}

/*
 * Reset one ring: entries the VMM marked RESET, in order, until the first
 * one not marked or the first one the vCPU has not pushed (a RESET flag
 * the VMM set on an entry never handed to it is ignored: counting it would
 * move the reset index past the push index and wedge the ring). Consecutive entries of the same slot within one 64-page
 * group are protected with one masked mkclean. Context: slots_lock,
 * dirty_lock and MMU lock held.
 */
static uint64_t ring_reset(struct gpamm_vm *vm, struct dirty_ring *r, uint64_t *changed)
{
	struct gpamm_memslot *s = NULL;
	uint64_t n = 0, gfn64 = 0, mask = 0;
	uint32_t idx = atomic_load(&r->reset);
	const uint32_t push = __atomic_load_n(&r->push, __ATOMIC_ACQUIRE);

	for (;; idx++, n++) {
		struct gpamm_dirty_gfn *e = &r->gfns[idx & (r->size - 1)];
		struct gpamm_memslot *es;
		uint64_t g;

		if (idx == push || !(__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & GPAMM_DIRTY_GFN_F_RESET))
			break;
		es = e->slot < GPAMM_USER_MEM_SLOTS ? vm->by_id[e->slot] : NULL;
		if (es && e->offset >= es->npages)
			es = NULL; /* the slot was replaced by a smaller one: nothing to do */
		g = es ? es->base_gfn + e->offset : 0;
		if (mask && (es != s || (g & ~63ULL) != gfn64)) {
			*changed += wrprotect_mask(vm, s, gfn64, mask);
			mask = 0;
		}
		if (es) {
			s = es;
			gfn64 = g & ~63ULL;
			mask |= 1ULL << (g & 63);
		}
		__atomic_store_n(&e->flags, 0, __ATOMIC_RELEASE);
	}
	if (mask)
		*changed += wrprotect_mask(vm, s, gfn64, mask);
	atomic_store(&r->reset, idx);
	return n;
}

int64_t gpamm_vm_reset_dirty_rings(struct gpamm_vm *vm)
{
	uint64_t n = 0, changed = 0;

	if (!vm || !vm->dirty_ring_size)
		return -EINVAL; /* KVM: no ring, -EINVAL */
	if (vm_is_dead(vm))
		return -EIO;
	pthread_mutex_lock(&vm->slots_lock);
	pthread_mutex_lock(&vm->dirty_lock);
	mmu_write_lock(&vm->mmu_lock);
	for (unsigned i = 0; i < atomic_load(&vm->nr_vcpus); i++)
		n += ring_reset(vm, &vm->vcpus[i]->ring, &changed);
	/* as KVM: flush whenever an entry was reset (see wp_finish) */
	if (n || changed)
		gpamm_flush_remote_tlbs(vm);
	mmu_write_unlock(&vm->mmu_lock);
	pthread_mutex_unlock(&vm->dirty_lock);
	pthread_mutex_unlock(&vm->slots_lock);
	return (int64_t)n;
}

/* ---- access tracking ------------------------------------------------------------ */

static int check_range(const struct gpamm_vm *vm, uint64_t gpa, uint64_t size)
{
	const uint64_t pmask = vm->geom.page_size - 1;

	if (!size || ((gpa | size) & pmask) || gpa + size < gpa ||
	    gpa + size > gpamm_geom_space(&vm->geom))
		return -EINVAL;
	return 0;
}

int64_t gpamm_vm_mark_idle(struct gpamm_vm *vm, uint64_t gpa, uint64_t size)
{
	uint64_t n;

	if (!vm || check_range(vm, gpa, size))
		return -EINVAL;
	if (vm_is_dead(vm))
		return -EIO;
	mmu_write_lock(&vm->mmu_lock);
	n = gpamm_pgt_mkold_range(&vm->pgt, gpa, gpa + size);
	/*
	 * A TLB entry would let accesses through without making the page
	 * young: flush if this made an entry old, or if the host aged entries
	 * without a flush since the last flush of this kind (clear_young),
	 * which left TLB entries behind old leaves.
	 */
	if (n || vm->aged_unflushed) {
		vm->aged_unflushed = false;
		gpamm_flush_remote_tlbs(vm);
	}
	mmu_write_unlock(&vm->mmu_lock);
	return (int64_t)n;
}

struct young_data {
	uint64_t start, count;
	uint64_t *bitmap;
	unsigned page_shift;
};

static int young_pages_visit(const struct gpamm_walk_ctx *ctx, enum gpamm_walk_flags visit)
{
	struct young_data *d = ctx->arg;
	uint64_t first, last;

	if (!(ctx->old & GPAMM_PTE_PRESENT) || !(ctx->old & GPAMM_PTE_VALID))
		return 0;
	/* a huge leaf counts for each of its pages inside the range */
	first = ctx->addr > ctx->start ? ctx->addr : ctx->start;
	last = ctx->addr + gpamm_geom_level_size(&ctx->pgt->geom, ctx->level);
	if (last > ctx->end)
		last = ctx->end;
	for (uint64_t a = first; a < last; a += 1ULL << d->page_shift) {
		uint64_t i = (a - d->start) >> d->page_shift;
		if (d->bitmap)
			d->bitmap[i / 64] |= 1ULL << (i % 64);
		d->count++;
	}
	return 0;
}

int64_t gpamm_vm_test_young(struct gpamm_vm *vm, uint64_t gpa, uint64_t size, uint64_t *bitmap)
{
	struct young_data d = { .start = gpa, .bitmap = bitmap };

	if (!vm || check_range(vm, gpa, size))
		return -EINVAL;
	if (vm_is_dead(vm))
		return -EIO;
	d.page_shift = vm->geom.page_shift;
	if (bitmap)
		memset(bitmap, 0, ((size >> d.page_shift) + 63) / 64 * sizeof(uint64_t));
	mmu_write_lock(&vm->mmu_lock);
	gpamm_pgt_walk(&vm->pgt, gpa, gpa + size, young_pages_visit, &d, GPAMM_WALK_LEAF);
	mmu_write_unlock(&vm->mmu_lock);
	return (int64_t)d.count;
}
