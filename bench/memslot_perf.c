// SPDX-License-Identifier: MIT
/*
 * Suite memslot_perf: the tests of the Linux KVM selftest of that name
 * (REFERENCE.md §8) on gpamm, one VM for all of them.
 *
 *   setup               create the memslots that split the test memory
 *                       (deleted again, untimed, between iterations)
 *   map                 the guest writes every page of one half of its
 *                       memory while the VMM discards the other half, then
 *                       the other way round: each turn maps every page
 *                       again (a gpamm fault, and a host fault for the
 *                       zero-filled page behind it)
 *   unmap               the VMM discards each half one page per call while
 *                       the guest re-touches one page of the other half
 *   unmap chunked       the same, 2 MiB per call
 *   move active area    two MOVEs of the last slot (away, back) while the
 *                       guest keeps writing an area half in that slot, half
 *                       in the slot below (its writes to the hole exit as
 *                       MMIO, as in the selftest)
 *   move inactive area  the same, the guest's area entirely below the slot
 *   RW                  with everything mapped, the guest writes one word of
 *                       every page while the VMM writes another, then each
 *                       reads back what the other wrote
 *
 * The selftest names "unmap" the page-at-a-time variant and "unmap chunked"
 * the 2 MiB one; the names here follow it. The selftest runs each test's
 * loop for a set time and prints the time per turn of the loop, best of its
 * runs. Here a run is an iteration (--iterations of them per test): whole
 * turns for at least MS_MIN_NS, recorded as the time per turn; the text
 * gives the average and the best. Per page: map is wall time over the pages
 * of one vCPU (the vCPUs fault in parallel), the others over all pages
 * (the VMM works alone); setup and the moves do not grow with memory at a
 * fixed slot count, so their per-page figure falls as memory grows.
 *
 * Discards need a host that tells the MMU. The direct host has no events,
 * so guest RAM stays this process's own memory (as for dirty_log_perf) but
 * the VM is given a thin host of this file's own on top of the direct one:
 * its pages are the direct host's, and it keeps the MMU notifier the VM
 * registers, so that a discard is what the kernel does for MADV_DONTNEED on
 * a mapping with a notifier: invalidate_range_start, the real madvise(),
 * invalidate_range_end. The simulated host also offers MADV_DONTNEED, but
 * its frames and its host lock would be measured too, and it cannot hold
 * 16 GiB; this way only the MMU and the kernel's own page work are.
 *
 * The vCPUs are threads of a gang with one more member, the VMM: each step
 * runs every vCPU's program once while the VMM does its part at the same
 * time, and ends when all are done, as the selftest's host_perform_sync()
 * ends when the guest reaches its next sync. vCPU i owns slice i of the
 * memory (memstress), halved for map and unmap. -m 1 (the default of the
 * other suites) means this suite's default of 32 slots: the tests need a
 * slot boundary and a slot to move, and the selftest refuses one slot.
 *
 * Every run checks itself (suite.h check, and in the run): each turn of
 * map faults every page exactly once, each turn of unmap exactly the pages
 * the guest re-touched, and RW none; after map and unmap exactly the pages
 * that were not discarded since last written are mapped; the values each
 * side wrote read back; an inactive move never makes the guest exit; after
 * the moves the guest reads the slot's data at its new address and back at
 * the old one, and the old address while the slot is away exits as MMIO.
 */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gpamm/gpamm.h"
#include "lib/kernels_vm.h"
#include "lib/suite.h"

#define MS_DEFAULT_SLOTS 32
#define MS_CHUNK_BYTES   (2ULL << 20)   /* "unmap chunked": a typical huge page */
#define MS_MOVE_HALF     (96ULL << 10)  /* move area: this much on each side of the boundary */
#define MS_VERIFY_PAGES  64             /* pages of the moved slot the guest reads back */
#define MS_MIN_NS        50e6           /* an iteration: at least this long of loop turns */
#define MS_MAX_TURNS     100000

#define MS_VAL_A   0x0123456789abcdefULL /* the guest's writes */
#define MS_VAL_B   0xfedcba9876543210ULL /* the VMM's writes (RW), the guest's second half */
#define MS_PATTERN 0x6d656d736c6f7400ULL /* moved slot: xor the page index, at MS_PAT_OFF */
#define MS_PAT_OFF 8
#define MS_POISON  0xdeadbeefdeadbeefULL /* what an MMIO read returns */

static const struct bench_phase_def ms_phases[] = {
	{ "setup", "slot setup time", "Slot setup", "slot setup (avg)", true, BENCH_NORM_OP },
	{ "map", "map time", "Map", "map (avg)", true, BENCH_NORM_VCPU_PAGE },
	{ "unmap", "unmap time", "Unmap", "unmap (avg)", true, BENCH_NORM_PAGE },
	{ "unmap_chunked", "unmap chunked time", "Unmap chunked", "unmap chunked (avg)", true,
	  BENCH_NORM_PAGE },
	{ "move_active", "move active area time", "Move active area", "move active (avg)", true,
	  BENCH_NORM_PAGE },
	{ "move_inactive", "move inactive area time", "Move inactive area", "move inactive (avg)",
	  true, BENCH_NORM_PAGE },
	{ "rw", "RW time", "RW", "RW (avg)", true, BENCH_NORM_PAGE },
	{ "lookup", "random slot lookup time", "Random slot lookup", "slot lookup (avg)", true,
	  BENCH_NORM_OP },
	{ "churn", "slot delete + create time", "Slot delete + create while faulting",
	  "slot churn (avg)", true, BENCH_NORM_OP },
};

/*
 * Setup per slot: 32767 slots in under 100 ms (the bound) is 3.05 us
 * each, at any count; flat across a slot sweep is the other half.
 */
static const struct bench_ratio ms_ratios[] = {
	BENCH_BOUND("setup", "slot setup, per slot (32767 in 100 ms)", 100e6 / 32767, 0),
};

/* In a sweep over the slot count, these must cost the same per slot / per page. */
static const char *const ms_flat[] = { "setup", "unmap", NULL };

static const struct bench_counter_def ms_counters[] = {
	{ "map_faults", "guest faults per turn of map" },
	{ "unmap_faults", "guest faults per turn of unmap + unmap chunked" },
	{ "move_exits", "MMIO exits in all turns of move active area" },
	{ "rw_faults", "guest faults per turn of RW" },
	{ "churn_faults", "guest faults while the slots churned" },
};

/* The counts every run must have; see the file comment. */
static bool ms_check(const struct bench_run *r, char *why, size_t len)
{
	const struct bench_suite *s = r->suite;

	for (unsigned c = 0; c < s->ncounters; c++) {
		const char *key = s->counters[c].key;
		uint64_t want;

		if (!strcmp(key, "map_faults"))
			want = r->pages;
		else if (!strcmp(key, "unmap_faults"))
			want = 4ULL * r->cfg.vcpus; /* two re-touches per vCPU in each test */
		else if (!strcmp(key, "rw_faults"))
			want = 0;
		else
			continue;
		if (!r->has_count[c]) {
			snprintf(why, len, "no count of %s", s->counters[c].label);
			return false;
		}
		for (unsigned k = 0; k < r->cfg.iterations; k++) {
			if (r->count[c][k] != want) {
				snprintf(why, len, "iteration %u: %llu %s, expected %llu", k + 1,
					 (unsigned long long)r->count[c][k], s->counters[c].label,
					 (unsigned long long)want);
				return false;
			}
		}
	}
	return true;
}

/* ---- a direct host that can discard ---------------------------------------------- */

/*
 * The pages are the direct host's; this layer only adds the notifier. The
 * lock stands for the mm lock around a discard (one change at a time, the
 * notifier called with it held); the fault path never takes it.
 */
struct ms_host {
	struct gpamm_host h;
	struct gpamm_host *pages;
	pthread_mutex_t lock;
	const struct gpamm_mmu_notifier_ops *mn_ops;
	void *mn;
};

static inline struct ms_host *to_ms(struct gpamm_host *h)
{
	return (struct ms_host *)h;
}

static int msh_get_page(struct gpamm_host *h, uint64_t hva, bool write,
			struct gpamm_host_page *out)
{
	struct gpamm_host *p = to_ms(h)->pages;

	return p->ops->get_page(p, hva, write, out);
}

static void msh_put_page(struct gpamm_host *h, uint64_t pfn, bool accessed, bool dirty)
{
	struct gpamm_host *p = to_ms(h)->pages;

	p->ops->put_page(p, pfn, accessed, dirty);
}

static void msh_mark_page(struct gpamm_host *h, uint64_t pfn, bool accessed, bool dirty)
{
	struct gpamm_host *p = to_ms(h)->pages;

	p->ops->mark_page(p, pfn, accessed, dirty);
}

static void *msh_page_ptr(struct gpamm_host *h, uint64_t pfn)
{
	struct gpamm_host *p = to_ms(h)->pages;

	return p->ops->page_ptr(p, pfn);
}

static int msh_notifier_register(struct gpamm_host *h, const struct gpamm_mmu_notifier_ops *ops,
				 void *mn)
{
	struct ms_host *m = to_ms(h);
	int ret = 0;

	if (!ops || !mn)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	if (m->mn) {
		ret = m->mn == mn ? -EEXIST : -ENOSPC; /* one VM per host here */
	} else {
		m->mn_ops = ops;
		m->mn = mn;
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

static void msh_notifier_unregister(struct gpamm_host *h, void *mn)
{
	struct ms_host *m = to_ms(h);

	pthread_mutex_lock(&m->lock);
	if (m->mn == mn) {
		m->mn_ops = NULL;
		m->mn = NULL;
	}
	pthread_mutex_unlock(&m->lock);
}

static void msh_stats(struct gpamm_host *h, struct gpamm_host_stats *st)
{
	gpamm_host_stats(to_ms(h)->pages, st);
}

/* a VM still attached sees the address space go (the mm-exit path) */
static void msh_exit(struct gpamm_host *h)
{
	struct ms_host *m = to_ms(h);

	if (m->mn && m->mn_ops->release)
		m->mn_ops->release(m->mn);
}

static void msh_destroy(struct gpamm_host *h)
{
	struct ms_host *m = to_ms(h);

	gpamm_host_destroy(m->pages);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static const struct gpamm_host_ops ms_host_ops = {
	.name = "direct+discard",
	.get_page = msh_get_page,
	.put_page = msh_put_page,
	.mark_page = msh_mark_page,
	.page_ptr = msh_page_ptr,
	.check_access = NULL,
	.notifier_register = msh_notifier_register,
	.notifier_unregister = msh_notifier_unregister,
	.stats = msh_stats,
	.exit = msh_exit,
	.destroy = msh_destroy,
};

static struct ms_host *ms_host_create(unsigned page_shift)
{
	struct ms_host *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->pages = gpamm_host_direct_create(page_shift);
	if (!m->pages) {
		free(m);
		return NULL;
	}
	m->h.ops = &ms_host_ops;
	m->h.page_shift = page_shift;
	m->h.checking = false;
	m->h.pfn_linear = m->pages->pfn_linear;
	m->h.pfn_linear_off = m->pages->pfn_linear_off;
	pthread_mutex_init(&m->lock, NULL);
	return m;
}

/*
 * MADV_DONTNEED of [p, p + len) as the kernel does it under a notifier:
 * the MMU drops its translations first (and no fault may map the range
 * until the end call), then the pages go; the next touch reads zeros.
 * Context: the VMM; takes the host lock, then the MMU takes its own.
 */
static int ms_host_discard(struct ms_host *m, uint8_t *p, size_t len)
{
	uint64_t s = (uintptr_t)p, e = s + len;
	int ret;

	pthread_mutex_lock(&m->lock);
	if (m->mn)
		m->mn_ops->invalidate_range_start(m->mn, s, e);
	ret = madvise(p, len, MADV_DONTNEED) ? -errno : 0;
	if (m->mn)
		m->mn_ops->invalidate_range_end(m->mn, s, e);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* ---- the run ----------------------------------------------------------------------- */

/* What a vCPU's program does in a step: one 8-byte access per page. */
enum ms_gop {
	GOP_IDLE,   /* not run at all */
	GOP_WRITE,  /* write val */
	GOP_CHECK,  /* read, expect val, write 0 (RW) */
	GOP_LOOP,   /* write val over and over until the VMM says stop (moves) */
	GOP_VERIFY, /* read, expect the moved slot's pattern, or MS_POISON when absent */
};

struct ms_ctx;

struct ms_guest {
	struct ms_ctx *d;
	enum ms_gop op;
	uint64_t gpa, npages, stride; /* pages gpa + k * stride * page size, k < npages */
	uint64_t off;                 /* byte offset of the word inside each page */
	uint64_t val;
	uint64_t first_idx;           /* VERIFY: memory page index of the first page */
	bool absent;                  /* VERIFY: every read must exit as MMIO */
	/* results */
	uint64_t passes, mmio_exits;
	uint64_t bad_gpa, bad_val, bad_want;
};

/* The VMM's part of a step. */
enum ms_vjob { VJOB_NONE, VJOB_DISCARD, VJOB_MOVE, VJOB_RW_WRITE, VJOB_RW_CHECK, VJOB_CHURN };

struct ms_vmm {
	enum ms_vjob job;
	unsigned half;   /* DISCARD: 0 the first halves of the slices, 1 the second */
	uint64_t chunk;  /* DISCARD: pages per call; 0 for the rest of the slot at a time */
	unsigned check;  /* DISCARD: before it, read back 0 nothing, 1 the first page of each
			  * half, 2 its first and last */
	uint64_t want;   /* DISCARD: what the guest wrote there */
	double ns;       /* MOVE, CHURN: time in slot calls, over... */
	uint64_t turns;  /* MOVE: ...this many turns of two; CHURN: of a delete and a create */
	uint64_t calls;  /* DISCARD: madvise calls */
};

struct ms_ctx {
	const struct bench_cfg *cfg;
	struct bench_run *r;
	struct ms_host *host;
	struct gpamm_vm *vm;
	struct gpamm_vcpu **vcpu;
	struct ms_guest *g;          /* per vCPU */
	char (*err)[200];            /* per gang member: vCPUs, then the VMM */
	struct bench_gang gang;
	bool gang_on;
	struct bench_mem mem;
	uint64_t psz, pages, ppv;    /* page size, pages, pages per vCPU */
	unsigned nslots;
	uint64_t pps;                /* pages per slot; the last one takes the rest */
	uint64_t move_src, move_dst; /* the last slot's GPA, and where MOVE takes it */
	uint64_t move_half;          /* pages of the move area on each side of the boundary */
	uint64_t mmio_lo, mmio_hi;   /* MMIO exits allowed in [lo, hi) in this step */
	struct ms_vmm vmm;
	atomic_bool stop, failed;
	atomic_uint looping;         /* vCPUs that finished a pass of their GOP_LOOP */
	uint64_t chunk;              /* unmap: pages per MADV_DONTNEED */
	uint64_t turns, calls;       /* this test so far: loop turns, madvise calls */
	uint64_t *refaults;          /* per iteration: unmap + unmap chunked, per turn */
	uint64_t *mapped;            /* bitmap of mapped pages, for the checks */
};

__attribute__((format(printf, 3, 4)))
static int ms_err(struct ms_ctx *d, unsigned member, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(d->err[member], sizeof(d->err[0]), fmt, ap);
	va_end(ap);
	atomic_store(&d->failed, true);
	return -1;
}

static inline uint64_t ms_slot_end(const struct ms_ctx *d, uint64_t s)
{
	return s + 1 == d->nslots ? d->pages : (s + 1) * d->pps;
}

static inline uint64_t ms_slot_of(const struct ms_ctx *d, uint64_t page)
{
	uint64_t s = page / d->pps;

	return s < d->nslots ? s : d->nslots - 1;
}

static inline uint64_t ms_pattern(uint64_t page)
{
	return MS_PATTERN ^ page;
}

/* The host's view of the word at @off of memory page @page. */
static inline volatile uint64_t *ms_word(const struct ms_ctx *d, uint64_t page, uint64_t off)
{
	return (volatile uint64_t *)(d->mem.p + page * d->psz + off);
}

/* First page and count of half @h of vCPU @i's slice. */
static inline uint64_t ms_half_first(const struct ms_ctx *d, unsigned i, unsigned h)
{
	return i * d->ppv + (h ? d->ppv / 2 : 0);
}

static inline uint64_t ms_half_pages(const struct ms_ctx *d, unsigned h)
{
	return h ? d->ppv - d->ppv / 2 : d->ppv / 2;
}

static struct gpamm_userspace_memory_region ms_region(const struct ms_ctx *d, unsigned s,
						      uint64_t gpa)
{
	uint64_t first = (uint64_t)s * d->pps;

	return (struct gpamm_userspace_memory_region){
		.slot = s,
		.guest_phys_addr = gpa,
		.memory_size = (ms_slot_end(d, s) - first) * d->psz,
		.userspace_addr = (uintptr_t)(d->mem.p + first * d->psz),
	};
}

static int ms_move(struct ms_ctx *d, uint64_t gpa)
{
	struct gpamm_userspace_memory_region reg = ms_region(d, d->nslots - 1, gpa);

	return gpamm_vm_set_memory_region(d->vm, &reg);
}

/*
 * Discard pages [first, first + n) of the memory in turns of @chunk pages
 * (0: all), each turn split where a slot ends, as the selftest's unmap
 * helper splits at the slots it translates through.
 */
static int ms_discard(struct ms_ctx *d, uint64_t first, uint64_t n, uint64_t chunk,
		      uint64_t *calls)
{
	if (!chunk)
		chunk = n;
	for (uint64_t c = 0; c < n; c += chunk) {
		uint64_t p = first + c, e = first + (c + chunk < n ? c + chunk : n);

		while (p < e) {
			uint64_t lim = ms_slot_end(d, ms_slot_of(d, p));
			uint64_t cnt = (lim < e ? lim : e) - p;
			int ret = ms_host_discard(d->host, d->mem.p + p * d->psz, cnt * d->psz);

			if (ret)
				return ret;
			(*calls)++;
			p += cnt;
		}
	}
	return 0;
}

/* ---- the guest's program and the VMM's part ---------------------------------------- */

/* The guest read @x at @a where it expected @want: its program ends with 1. */
static int ms_guest_bad(struct ms_guest *g, uint64_t a, uint64_t x, uint64_t want)
{
	g->bad_gpa = a;
	g->bad_val = x;
	g->bad_want = want;
	return 1;
}

static int ms_guest_fn(struct gpamm_vcpu *v, void *arg)
{
	struct ms_guest *g = arg;
	const uint64_t step = g->stride * g->d->psz;
	uint64_t k, a, x, want;

	switch (g->op) {
	case GOP_IDLE:
		break;
	case GOP_WRITE:
		for (k = 0, a = g->gpa + g->off; k < g->npages; k++, a += step)
			gpamm_guest_write(v, a, 8, g->val);
		break;
	case GOP_CHECK:
		for (k = 0, a = g->gpa + g->off; k < g->npages; k++, a += step) {
			x = gpamm_guest_read(v, a, 8);
			if (x != g->val)
				return ms_guest_bad(g, a, x, g->val);
			gpamm_guest_write(v, a, 8, 0);
		}
		break;
	case GOP_LOOP:
		/* The stop flag is read between passes: no guest access blocks. */
		while (!atomic_load_explicit(&g->d->stop, memory_order_acquire)) {
			for (k = 0, a = g->gpa + g->off; k < g->npages; k++, a += step)
				gpamm_guest_write(v, a, 8, g->val);
			if (++g->passes == 1)
				atomic_fetch_add(&g->d->looping, 1);
		}
		break;
	case GOP_VERIFY:
		for (k = 0, a = g->gpa + g->off; k < g->npages; k++, a += step) {
			want = g->absent ? MS_POISON : ms_pattern(g->first_idx + k * g->stride);
			x = gpamm_guest_read(v, a, 8);
			if (x != want)
				return ms_guest_bad(g, a, x, want);
		}
		break;
	}
	return 0;
}

/* vCPU @i runs its program of this step to the end, serving its MMIO exits. */
static int ms_vcpu_part(struct ms_ctx *d, unsigned i)
{
	struct gpamm_vcpu *v = d->vcpu[i];
	struct gpamm_run *run = gpamm_vcpu_run_state(v);
	struct ms_guest *g = &d->g[i];
	const uint64_t poison = MS_POISON;
	int ret;

	if (g->op == GOP_IDLE)
		return 0;
	ret = gpamm_vcpu_set_guest(v, ms_guest_fn, g, 0);
	for (;;) {
		if (!ret)
			ret = gpamm_vcpu_run(v);
		if (ret)
			return ms_err(d, i, "vCPU %u: run: %s", i, strerror(-ret));
		if (run->exit_reason != GPAMM_EXIT_MMIO)
			break;
		if (run->mmio.phys_addr < d->mmio_lo || run->mmio.phys_addr >= d->mmio_hi)
			return ms_err(d, i, "vCPU %u: MMIO %s at GPA 0x%llx, where a memslot should be",
				      i, run->mmio.is_write ? "write" : "read",
				      (unsigned long long)run->mmio.phys_addr);
		if (!run->mmio.is_write)
			memcpy(run->mmio.data, &poison,
			       run->mmio.len < sizeof(poison) ? run->mmio.len : sizeof(poison));
		g->mmio_exits++;
	}
	if (run->exit_reason != GPAMM_EXIT_DONE)
		return ms_err(d, i, "vCPU %u: unexpected exit reason %u", i, run->exit_reason);
	if (run->guest_ret)
		return ms_err(d, i, "vCPU %u: the guest read 0x%llx at GPA 0x%llx, expected 0x%llx",
			      i, (unsigned long long)g->bad_val, (unsigned long long)g->bad_gpa,
			      (unsigned long long)g->bad_want);
	return 0;
}

static int ms_vmm_part(struct ms_ctx *d)
{
	const unsigned me = d->cfg->vcpus, half_off = (unsigned)(d->psz / 2);
	struct ms_vmm *j = &d->vmm;
	double t0;
	int ret;

	switch (j->job) {
	case VJOB_NONE:
		break;
	case VJOB_DISCARD:
		for (unsigned i = 0; i < d->cfg->vcpus; i++) {
			uint64_t first = ms_half_first(d, i, j->half), n = ms_half_pages(d, j->half);
			uint64_t ends[2] = { first, first + n - 1 };

			for (unsigned e = 0; e < j->check; e++) {
				uint64_t x = *ms_word(d, ends[e], 0);

				if (x != j->want)
					return ms_err(d, me, "the VMM read 0x%llx in page %llu, where the "
						      "guest wrote 0x%llx", (unsigned long long)x,
						      (unsigned long long)ends[e],
						      (unsigned long long)j->want);
			}
			ret = ms_discard(d, first, n, j->chunk, &j->calls);
			if (ret)
				return ms_err(d, me, "MADV_DONTNEED: %s", strerror(-ret));
		}
		break;
	case VJOB_MOVE:
		/* the guest is in its loop before the first move, as in the selftest */
		while (atomic_load(&d->looping) < d->cfg->vcpus && !atomic_load(&d->failed))
			sched_yield();
		do {
			t0 = bench_now_ns();
			ret = ms_move(d, d->move_dst);
			if (!ret)
				ret = ms_move(d, d->move_src);
			j->ns += bench_now_ns() - t0;
			j->turns++;
		} while (!ret && j->ns < MS_MIN_NS && j->turns < MS_MAX_TURNS);
		atomic_store_explicit(&d->stop, true, memory_order_release);
		if (ret)
			return ms_err(d, me, "MOVE of slot %u: %s", d->nslots - 1, strerror(-ret));
		break;
	case VJOB_CHURN:
		/* every vCPU is in its loop, faulting, before the first change */
		while (atomic_load(&d->looping) < d->cfg->vcpus && !atomic_load(&d->failed))
			sched_yield();
		ret = 0;
		for (unsigned s = 0; !ret && j->ns < MS_MIN_NS && j->turns < MS_MAX_TURNS;
		     s = (s + 1) % d->nslots) {
			struct gpamm_userspace_memory_region reg =
				ms_region(d, s, d->r->gpa_base + (uint64_t)s * d->pps * d->psz);

			t0 = bench_now_ns();
			reg.memory_size = 0; /* delete... */
			ret = gpamm_vm_set_memory_region(d->vm, &reg);
			if (!ret) {          /* ...and create again */
				reg = ms_region(d, s, reg.guest_phys_addr);
				ret = gpamm_vm_set_memory_region(d->vm, &reg);
			}
			j->ns += bench_now_ns() - t0;
			j->turns++;
			if (ret)
				ms_err(d, me, "delete/create of slot %u: %s", s, strerror(-ret));
		}
		atomic_store_explicit(&d->stop, true, memory_order_release);
		if (ret)
			return -1;
		break;
	case VJOB_RW_WRITE:
		for (uint64_t p = 0; p < d->pages; p++)
			*ms_word(d, p, half_off) = MS_VAL_B;
		break;
	case VJOB_RW_CHECK:
		for (uint64_t p = 0; p < d->pages; p++) {
			uint64_t x = *ms_word(d, p, 0);

			if (x != MS_VAL_A)
				return ms_err(d, me, "the VMM read 0x%llx in page %llu, where the guest "
					      "wrote 0x%llx", (unsigned long long)x,
					      (unsigned long long)p, (unsigned long long)MS_VAL_A);
			*ms_word(d, p, 0) = 0;
		}
		break;
	}
	return 0;
}

static int ms_member(void *ctx, unsigned idx, uint64_t gen)
{
	struct ms_ctx *d = ctx;

	return idx < d->cfg->vcpus ? ms_vcpu_part(d, idx) : ms_vmm_part(d);
}

static const char *ms_first_error(const struct ms_ctx *d)
{
	for (unsigned i = 0; i <= d->cfg->vcpus; i++)
		if (d->err[i][0])
			return d->err[i];
	return "a gang member failed";
}

/* One step of the gang. Return: its wall time in ns, or -1 with the run failed. */
static double ms_step(struct ms_ctx *d, const char *what)
{
	double t = bench_gang_step(&d->gang);

	if (t < 0)
		bench_run_fail(d->r, BENCH_FAILED, "%s: %s", what, ms_first_error(d));
	return t;
}

/* Every vCPU: @op over half @h of its slice (all of it when @h is 2), @n pages of it (0: all). */
static void ms_guest_set(struct ms_ctx *d, enum ms_gop op, unsigned h, uint64_t n, uint64_t off,
			 uint64_t val)
{
	for (unsigned i = 0; i < d->cfg->vcpus; i++) {
		struct ms_guest *g = &d->g[i];
		uint64_t first = h == 2 ? i * d->ppv : ms_half_first(d, i, h);
		uint64_t cnt = h == 2 ? d->ppv : ms_half_pages(d, h);

		*g = (struct ms_guest){
			.d = d, .op = op, .gpa = d->r->gpa_base + first * d->psz,
			.npages = n ? n : cnt, .stride = 1, .off = off, .val = val,
		};
	}
}

/* ---- checks between the tests -------------------------------------------------------- */

/*
 * Is the guest's table mapping exactly, in each vCPU's slice, the first @n
 * pages of half @half, and nothing else of the test memory?
 */
static int ms_check_mapped(struct ms_ctx *d, const char *after, unsigned half, uint64_t n)
{
	const uint64_t total = d->pages * d->psz;
	int64_t young = gpamm_vm_test_young(d->vm, d->r->gpa_base, total, d->mapped);
	uint64_t expect = (uint64_t)d->cfg->vcpus * n;

	if (young < 0)
		return bench_run_fail(d->r, BENCH_FAILED, "after %s: test_young: %s", after,
				      strerror((int)-young));
	for (uint64_t p = 0; p < d->pages; p++) {
		unsigned i = (unsigned)(p / d->ppv);
		uint64_t f = ms_half_first(d, i, half);
		bool want = p >= f && p < f + n, got = d->mapped[p / 64] >> (p % 64) & 1;

		if (want != got)
			return bench_run_fail(d->r, BENCH_FAILED, "after %s: page %llu (GPA 0x%llx) "
					      "is %s", after, (unsigned long long)p,
					      (unsigned long long)(d->r->gpa_base + p * d->psz),
					      got ? "still mapped though its backing was discarded"
						  : "not mapped though the guest has just written it");
	}
	if ((uint64_t)young != expect)
		return bench_run_fail(d->r, BENCH_FAILED, "after %s: %lld pages mapped, expected %llu",
				      after, (long long)young, (unsigned long long)expect);
	return 0;
}

/*
 * After the moves: the guest finds the slot's data at the destination,
 * nothing (MMIO) at the old address meanwhile, and the data again at the
 * old address once the slot is back.
 */
static int ms_verify_move(struct ms_ctx *d, const char *after)
{
	const uint64_t lp0 = (uint64_t)(d->nslots - 1) * d->pps, n = d->pages - lp0;
	const uint64_t stride = n > MS_VERIFY_PAGES ? n / MS_VERIFY_PAGES : 1;
	const uint64_t cnt = (n + stride - 1) / stride;
	const uint64_t gpas[3] = { d->move_dst, d->move_src, d->move_src };
	int ret;

	for (unsigned s = 0; s < 3; s++) {
		struct ms_guest *g = &d->g[0];

		if (s == 0 || s == 2) {
			ret = ms_move(d, s == 0 ? d->move_dst : d->move_src);
			if (ret)
				return bench_run_fail(d->r, BENCH_FAILED, "after %s: MOVE: %s", after,
						      strerror(-ret));
		}
		ms_guest_set(d, GOP_IDLE, 2, 0, 0, 0);
		*g = (struct ms_guest){
			.d = d, .op = GOP_VERIFY, .gpa = gpas[s], .npages = cnt, .stride = stride,
			.off = MS_PAT_OFF, .first_idx = lp0, .absent = s == 1,
		};
		d->vmm = (struct ms_vmm){ .job = VJOB_NONE };
		d->mmio_lo = s == 1 ? d->move_src : 0;
		d->mmio_hi = s == 1 ? d->move_src + n * d->psz : 0;
		if (ms_step(d, after) < 0)
			return -1;
		if (s == 1 && g->mmio_exits != cnt)
			return bench_run_fail(d->r, BENCH_FAILED, "after %s: %llu of %llu reads of the "
					      "moved slot's old GPAs exited, expected all",
					      after, (unsigned long long)g->mmio_exits,
					      (unsigned long long)cnt);
	}
	d->mmio_lo = d->mmio_hi = 0;
	return 0;
}

/* ---- the tests ---------------------------------------------------------------------- */

/*
 * One iteration of a test is at least MS_MIN_NS of whole turns of its loop
 * and records the time per turn, as the selftest runs its loop for a set
 * time and divides: a turn of a few microseconds (a MOVE, 2 MiB discards of
 * small memory) is then not at the mercy of one scheduler tick.
 */
typedef int (*ms_turn_fn)(struct ms_ctx *d, double *ns);

static int ms_iteration(struct ms_ctx *d, const char *key, unsigned it, ms_turn_fn turn,
			uint64_t *turns)
{
	double ns = 0;

	*turns = 0;
	do {
		if (turn(d, &ns))
			return -1;
		(*turns)++;
	} while (ns < MS_MIN_NS && *turns < MS_MAX_TURNS);
	bench_phase_record(d->r, key, it, ns / (double)*turns);
	d->turns += *turns;
	return 0;
}

/* @got counts over @turns turns must be @want per turn; else the run fails. */
static int ms_count(struct ms_ctx *d, const char *what, unsigned it, uint64_t got,
		    uint64_t turns, uint64_t want)
{
	if (got == turns * want)
		return 0;
	return bench_run_fail(d->r, BENCH_FAILED, "iteration %u: %llu %s in %llu turns, expected "
			      "%llu per turn", it, (unsigned long long)got, what,
			      (unsigned long long)turns, (unsigned long long)want);
}

static void ms_test_begin(struct ms_ctx *d, const char *name)
{
	d->turns = 0;
	if (d->cfg->out)
		fprintf(d->cfg->out, "\nTesting %s performance with %u iteration%s of at least "
			"%.0f ms of loop turns, %u slots\n", name, d->cfg->iterations,
			d->cfg->iterations == 1 ? "" : "s", MS_MIN_NS / 1e6, d->nslots);
}

/* The selftest's closing lines of a test. */
static void ms_test_end(struct ms_ctx *d, const char *key)
{
	const struct bench_run *r = d->r;
	int idx = bench_phase_index(r->suite, key);
	double sum = 0, best = 0;

	if (!d->cfg->out || idx < 0 || !r->nsamples[idx])
		return;
	for (unsigned k = 0; k < r->nsamples[idx]; k++) {
		sum += r->ns[idx][k];
		if (!k || r->ns[idx][k] < best)
			best = r->ns[idx][k];
	}
	fprintf(d->cfg->out, "Done %llu loop turns in %u iterations, avg %.9fs per turn\n",
		(unsigned long long)d->turns, r->nsamples[idx], sum / r->nsamples[idx] / 1e9);
	fprintf(d->cfg->out, "Best runtime result was %.9fs per turn (with %u iterations, "
		"%u slots)\n", best / 1e9, r->nsamples[idx], d->nslots);
}

/* map: the guest maps one half of its slice while the VMM discards the other, twice. */
static int ms_map_turn(struct ms_ctx *d, double *ns)
{
	double t1, t2;

	ms_guest_set(d, GOP_WRITE, 0, 0, 0, MS_VAL_A);
	d->vmm = (struct ms_vmm){ .job = VJOB_DISCARD, .half = 1 };
	t1 = ms_step(d, "map");
	if (t1 < 0)
		return -1;
	d->calls += d->vmm.calls;
	/* and the other way round, once the first halves read back */
	ms_guest_set(d, GOP_WRITE, 1, 0, 0, MS_VAL_B);
	d->vmm = (struct ms_vmm){ .job = VJOB_DISCARD, .half = 0, .check = 2, .want = MS_VAL_A };
	t2 = ms_step(d, "map");
	if (t2 < 0)
		return -1;
	d->calls += d->vmm.calls;
	*ns += t1 + t2;
	for (unsigned i = 0; i < d->cfg->vcpus; i++) {
		uint64_t f = ms_half_first(d, i, 1), l = f + ms_half_pages(d, 1) - 1;

		if (*ms_word(d, f, 0) != MS_VAL_B || *ms_word(d, l, 0) != MS_VAL_B)
			return bench_run_fail(d->r, BENCH_FAILED, "map: the guest's writes to pages "
					      "%llu..%llu do not read back", (unsigned long long)f,
					      (unsigned long long)l);
	}
	return 0;
}

static int ms_test_map(struct ms_ctx *d)
{
	struct gpamm_vm_stats st0, st1;
	uint64_t turns;
	int ret;

	ms_test_begin(d, "map");
	/*
	 * The selftest's steady state from the first turn on: every page
	 * the guest maps was discarded before (none still pre-touched).
	 */
	ret = ms_discard(d, 0, d->pages, 0, &d->calls);
	if (ret)
		return bench_run_fail(d->r, BENCH_FAILED, "map: MADV_DONTNEED: %s", strerror(-ret));
	d->calls = 0;
	for (unsigned it = 1; it <= d->cfg->iterations; it++) {
		gpamm_vm_stats(d->vm, &st0);
		if (ms_iteration(d, "map", it, ms_map_turn, &turns))
			return -1;
		gpamm_vm_stats(d->vm, &st1);
		/* every page was discarded before the guest wrote it again */
		if (ms_count(d, "guest faults in map", it, st1.faults - st0.faults, turns, d->pages))
			return -1;
		bench_count_record(d->r, "map_faults", it, (st1.faults - st0.faults) / turns);
	}
	ms_test_end(d, "map");
	if (d->cfg->out)
		fprintf(d->cfg->out, "(each turn: %llu discards of up to a slot each)\n",
			(unsigned long long)(d->calls / d->turns));
	/* the first halves were discarded last, the second ones written last */
	return ms_check_mapped(d, "map", 1, ms_half_pages(d, 1));
}

/* unmap: the VMM discards half by half, d->chunk pages a call; the guest re-touches one page. */
static int ms_unmap_turn(struct ms_ctx *d, double *ns)
{
	double t1, t2;

	ms_guest_set(d, GOP_WRITE, 1, 1, 0, MS_VAL_B);
	d->vmm = (struct ms_vmm){ .job = VJOB_DISCARD, .half = 0, .chunk = d->chunk, .check = 1,
				  .want = MS_VAL_A };
	t1 = ms_step(d, "unmap");
	if (t1 < 0)
		return -1;
	d->calls += d->vmm.calls;
	ms_guest_set(d, GOP_WRITE, 0, 1, 0, MS_VAL_A);
	d->vmm = (struct ms_vmm){ .job = VJOB_DISCARD, .half = 1, .chunk = d->chunk, .check = 1,
				  .want = MS_VAL_B };
	t2 = ms_step(d, "unmap");
	if (t2 < 0)
		return -1;
	d->calls += d->vmm.calls;
	*ns += t1 + t2;
	return 0;
}

static int ms_test_unmap(struct ms_ctx *d, bool chunked)
{
	const char *key = chunked ? "unmap_chunked" : "unmap";
	const char *name = chunked ? "unmap chunked" : "unmap";
	struct gpamm_vm_stats st0, st1;
	uint64_t turns, f;
	char sz[32];
	int ret;

	d->chunk = chunked ? MS_CHUNK_BYTES / d->psz : 1;
	if (!d->chunk)
		d->chunk = 1;
	ms_test_begin(d, name);
	/*
	 * Start from the selftest's steady state: nothing backed, nothing
	 * mapped but the page the guest touches first.
	 */
	ret = ms_discard(d, 0, d->pages, 0, &d->calls);
	if (ret)
		return bench_run_fail(d->r, BENCH_FAILED, "%s: MADV_DONTNEED: %s", name,
				      strerror(-ret));
	ms_guest_set(d, GOP_WRITE, 0, 1, 0, MS_VAL_A);
	d->vmm = (struct ms_vmm){ .job = VJOB_NONE };
	if (ms_step(d, name) < 0)
		return -1;
	d->calls = 0;
	for (unsigned it = 1; it <= d->cfg->iterations; it++) {
		gpamm_vm_stats(d->vm, &st0);
		if (ms_iteration(d, key, it, ms_unmap_turn, &turns))
			return -1;
		gpamm_vm_stats(d->vm, &st1);
		/* each vCPU re-touched one discarded page per half */
		f = st1.faults - st0.faults;
		if (ms_count(d, chunked ? "guest faults in unmap chunked" : "guest faults in unmap",
			     it, f, turns, 2ULL * d->cfg->vcpus))
			return -1;
		d->refaults[it - 1] += f / turns;
		if (chunked)
			bench_count_record(d->r, "unmap_faults", it, d->refaults[it - 1]);
	}
	ms_test_end(d, key);
	if (d->cfg->out)
		fprintf(d->cfg->out, "(each turn: %llu MADV_DONTNEED calls of up to %s, each inside "
			"an MMU-notifier invalidation)\n", (unsigned long long)(d->calls / d->turns),
			bench_size_str(d->chunk * d->psz, sz, sizeof(sz)));
	/* only the page each vCPU touched last is still mapped */
	return ms_check_mapped(d, name, 0, 1);
}

/*
 * move: the guest loops over its area from the first turn to the last; the
 * VMM, once every vCPU is in that loop, makes turns of two MOVEs (away and
 * back) for at least MS_MIN_NS and times only those.
 */
static int ms_test_move(struct ms_ctx *d, bool active)
{
	const char *key = active ? "move_active" : "move_inactive";
	const char *name = active ? "move active area" : "move inactive area";
	const uint64_t area = active ? d->move_src - d->move_half * d->psz
				     : d->move_src - 2 * d->move_half * d->psz;
	const uint64_t lp0 = (uint64_t)(d->nslots - 1) * d->pps;

	/* the moved slot's data, for the guest to find after the moves */
	for (uint64_t p = lp0; p < d->pages; p++)
		*ms_word(d, p, MS_PAT_OFF) = ms_pattern(p);
	ms_test_begin(d, name);
	d->mmio_lo = active ? d->move_src : 0;
	d->mmio_hi = active ? d->move_src + d->move_half * d->psz : 0;
	for (unsigned it = 1; it <= d->cfg->iterations; it++) {
		uint64_t exits = 0;

		atomic_store(&d->looping, 0);
		atomic_store(&d->stop, false);
		for (unsigned i = 0; i < d->cfg->vcpus; i++)
			d->g[i] = (struct ms_guest){
				.d = d, .op = GOP_LOOP, .gpa = area, .npages = 2 * d->move_half,
				.stride = 1, .val = MS_VAL_A,
			};
		d->vmm = (struct ms_vmm){ .job = VJOB_MOVE };
		if (ms_step(d, name) < 0)
			return -1;
		for (unsigned i = 0; i < d->cfg->vcpus; i++)
			exits += d->g[i].mmio_exits;
		bench_phase_record(d->r, key, it, d->vmm.ns / (double)d->vmm.turns);
		d->turns += d->vmm.turns;
		if (active)
			bench_count_record(d->r, "move_exits", it, exits);
		else if (exits)
			return bench_run_fail(d->r, BENCH_FAILED, "%s: %llu MMIO exits, though the "
					      "guest never touches the moved slot",
					      name, (unsigned long long)exits);
	}
	d->mmio_lo = d->mmio_hi = 0;
	ms_test_end(d, key);
	return ms_verify_move(d, name);
}

/* RW: each side writes its word of every page, then reads back the other's. */
static int ms_rw_turn(struct ms_ctx *d, double *ns)
{
	double t1, t2;

	ms_guest_set(d, GOP_WRITE, 2, 0, 0, MS_VAL_A);
	d->vmm = (struct ms_vmm){ .job = VJOB_RW_WRITE };
	t1 = ms_step(d, "RW");
	if (t1 < 0)
		return -1;
	ms_guest_set(d, GOP_CHECK, 2, 0, d->psz / 2, MS_VAL_B);
	d->vmm = (struct ms_vmm){ .job = VJOB_RW_CHECK };
	t2 = ms_step(d, "RW");
	if (t2 < 0)
		return -1;
	*ns += t1 + t2;
	return 0;
}

static int ms_test_rw(struct ms_ctx *d)
{
	struct gpamm_vm_stats st0, st1;
	uint64_t turns;

	ms_test_begin(d, "RW");
	/* everything mapped first: RW measures accesses, not faults */
	ms_guest_set(d, GOP_WRITE, 2, 0, 0, 0);
	d->vmm = (struct ms_vmm){ .job = VJOB_NONE };
	if (ms_step(d, "RW") < 0)
		return -1;
	for (unsigned it = 1; it <= d->cfg->iterations; it++) {
		gpamm_vm_stats(d->vm, &st0);
		if (ms_iteration(d, "rw", it, ms_rw_turn, &turns))
			return -1;
		gpamm_vm_stats(d->vm, &st1);
		if (ms_count(d, "guest faults in RW", it, st1.faults - st0.faults, turns, 0))
			return -1;
		bench_count_record(d->r, "rw_faults", it, (st1.faults - st0.faults) / turns);
	}
	ms_test_end(d, "rw");
	return 0;
}

/*
 * churn: every vCPU writes its slice in a loop while the VMM deletes and
 * creates the slots one after the other, for at least MS_MIN_NS. Each
 * delete zaps what the vCPUs mapped in that slot and each create lets them
 * fault it in again, so the vCPUs keep faulting (they are RCU readers in
 * the fault path) and every change waits for grace periods that have
 * readers to wait for. The figure is the time of one delete + create; the
 * text gives the changes per second. A vCPU's store to a slot that is gone
 * for the moment exits as MMIO and is dropped.
 */
static int ms_test_churn(struct ms_ctx *d)
{
	struct gpamm_vm_stats st0, st1;

	ms_test_begin(d, "slot churn while faulting");
	bench_phase_ops(d->r, "churn", 1); /* each sample is already per change */
	d->mmio_lo = d->r->gpa_base;
	d->mmio_hi = d->r->gpa_base + d->pages * d->psz;
	for (unsigned it = 1; it <= d->cfg->iterations; it++) {
		double per;

		atomic_store(&d->looping, 0);
		atomic_store(&d->stop, false);
		ms_guest_set(d, GOP_LOOP, 2, 0, 0, MS_VAL_A);
		d->vmm = (struct ms_vmm){ .job = VJOB_CHURN };
		gpamm_vm_stats(d->vm, &st0);
		if (ms_step(d, "slot churn") < 0)
			return -1;
		gpamm_vm_stats(d->vm, &st1);
		per = d->vmm.ns / (double)d->vmm.turns;
		bench_phase_record(d->r, "churn", it, per);
		bench_count_record(d->r, "churn_faults", it, st1.faults - st0.faults);
		d->turns += d->vmm.turns;
		if (d->cfg->out)
			fprintf(d->cfg->out, "Iteration %u: %llu slot changes (a delete and a create "
				"each) in %.3fs: %.0f creates + deletes per second; the vCPUs took "
				"%llu faults meanwhile\n", it, (unsigned long long)d->vmm.turns,
				d->vmm.ns / 1e9, 2e9 / per,
				(unsigned long long)(st1.faults - st0.faults));
		if (st1.faults == st0.faults)
			return bench_run_fail(d->r, BENCH_FAILED, "slot churn: the vCPUs took no "
					      "fault while the slots changed");
	}
	d->mmio_lo = d->mmio_hi = 0;
	ms_test_end(d, "churn");
	return 0;
}

/*
 * lookup: the GFN -> slot lookup of the fault path (the set's tree, without
 * the vCPU's last-slot cache in front), at random pages of the memory.
 */
#define MS_LOOKUPS (1u << 20)

static int ms_test_lookup(struct ms_ctx *d)
{
	uint64_t *gfns = malloc(MS_LOOKUPS * sizeof(*gfns)), x = 0x9e3779b97f4a7c15ULL;
	const uint64_t gfn0 = d->r->gpa_base >> d->cfg->page_shift;

	if (!gfns)
		return bench_run_fail(d->r, BENCH_FAILED, "lookup: out of memory");
	for (unsigned k = 0; k < MS_LOOKUPS; k++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		gfns[k] = gfn0 + x % d->pages;
	}
	bench_phase_ops(d->r, "lookup", MS_LOOKUPS);
	if (d->cfg->out)
		fprintf(d->cfg->out, "\nTesting random slot lookup with %u iteration%s of %u "
			"lookups, %u slots\n", d->cfg->iterations,
			d->cfg->iterations == 1 ? "" : "s", MS_LOOKUPS, d->nslots);
	for (unsigned it = 1; it <= d->cfg->iterations; it++) {
		double t0 = bench_now_ns();
		uint64_t found = bk_memslot_lookups(d->vm, gfns, MS_LOOKUPS);

		bench_phase_record(d->r, "lookup", it, bench_now_ns() - t0);
		if (found != MS_LOOKUPS) {
			free(gfns);
			return bench_run_fail(d->r, BENCH_FAILED, "lookup: %llu of %u GFNs found a "
					      "slot", (unsigned long long)found, MS_LOOKUPS);
		}
	}
	free(gfns);
	return 0;
}

/*
 * setup: the creation of every slot, timed as the selftest times it once
 * per run; each iteration deletes the slots (untimed, nothing is mapped
 * yet) and creates them again.
 */
static int ms_setup(struct ms_ctx *d)
{
	const uint64_t base = d->r->gpa_base;
	struct gpamm_userspace_memory_region reg;
	double t0;
	int ret;

	if (d->cfg->out)
		fprintf(d->cfg->out, "\nTesting slot setup with %u iteration%s, %u slots\n",
			d->cfg->iterations, d->cfg->iterations == 1 ? "" : "s", d->nslots);
	for (unsigned it = 1; it <= d->cfg->iterations; it++) {
		for (unsigned s = 0; it > 1 && s < d->nslots; s++) {
			reg = ms_region(d, s, base + (uint64_t)s * d->pps * d->psz);
			reg.memory_size = 0;
			ret = gpamm_vm_set_memory_region(d->vm, &reg);
			if (ret)
				return bench_run_fail(d->r, BENCH_FAILED, "deleting memslot %u: %s", s,
						      strerror(-ret));
		}
		bench_phase_ops(d->r, "setup", d->nslots);
		t0 = bench_now_ns();
		for (unsigned s = 0; s < d->nslots; s++) {
			reg = ms_region(d, s, base + (uint64_t)s * d->pps * d->psz);
			ret = gpamm_vm_set_memory_region(d->vm, &reg);
			if (ret)
				return bench_run_fail(d->r, BENCH_FAILED, "memslot %u: %s", s,
						      strerror(-ret));
		}
		bench_phase_record(d->r, "setup", it, bench_now_ns() - t0);
	}
	return 0;
}

static int ms_body(struct ms_ctx *d)
{
	const struct bench_run *r = d->r;
	int idx = bench_phase_index(r->suite, "setup");
	double best = r->ns[idx][0];

	if (ms_test_map(d) || ms_test_unmap(d, false) || ms_test_unmap(d, true) ||
	    ms_test_move(d, true) || ms_test_move(d, false) || ms_test_rw(d) ||
	    ms_test_lookup(d) || ms_test_churn(d))
		return -1;
	for (unsigned k = 1; k < r->nsamples[idx]; k++)
		if (r->ns[idx][k] < best)
			best = r->ns[idx][k];
	if (d->cfg->out)
		fprintf(d->cfg->out, "\nBest slot setup time for the whole test area was %.9fs "
			"(%u slots)\n\n", best / 1e9, d->nslots);
	return 0;
}

/* ---- setting up ---------------------------------------------------------------------- */

/* Slots, the move area and the guest-physical layout; 0 or -1 with the run failed. */
static int ms_layout(struct ms_ctx *d, const struct gpamm_geom *g)
{
	const struct bench_cfg *c = d->cfg;
	uint64_t last, before, total = d->pages * d->psz;
	char a[32], b[32];

	if (d->ppv < 2)
		return bench_run_fail(d->r, BENCH_FAILED, "memslot_perf needs at least 2 pages per "
				      "vCPU (a half to map while the other is discarded)");
	d->nslots = c->slots;
	if (d->nslots == 1) {
		d->nslots = MS_DEFAULT_SLOTS;
		if (d->nslots > d->pages / 2)
			d->nslots = (unsigned)(d->pages / 2);
		if (d->nslots < 2)
			d->nslots = 2;
	}
	if (d->nslots > d->pages / 2)
		return bench_run_fail(d->r, BENCH_FAILED, "%u slots for %llu pages: memslot_perf "
				      "needs at least 2 pages per slot", d->nslots,
				      (unsigned long long)d->pages);
	d->pps = d->pages / d->nslots;
	last = d->pages - (uint64_t)(d->nslots - 1) * d->pps;
	before = d->pages - last;
	/* the selftest's area: 96 KiB each side of the boundary, whole pages */
	d->move_half = (MS_MOVE_HALF + d->psz - 1) / d->psz;
	if (d->move_half > last)
		d->move_half = last;
	if (d->move_half > before / 2)
		d->move_half = before / 2;
	if (total + last * d->psz > gpamm_geom_space(g))
		return bench_run_fail(d->r, BENCH_FAILED, "%s and room to move its last slot "
				      "do not fit in the %s GPA space",
				      bench_size_str(total, a, sizeof(a)),
				      bench_size_str(gpamm_geom_space(g), b, sizeof(b)));
	/* at the top of the GPA space, with the move destination right above */
	d->r->gpa_base = (gpamm_geom_space(g) - total - last * d->psz) &
			 ~(gpamm_geom_huge_size(g) - 1);
	d->move_src = d->r->gpa_base + before * d->psz;
	d->move_dst = d->r->gpa_base + total;
	d->r->cfg.slots = d->nslots;
	return 0;
}

static void ms_header(struct ms_ctx *d)
{
	const struct bench_cfg *c = d->cfg;
	const struct bench_run *r = d->r;
	char lay[32], tot[32], per[32], ssz[32];

	if (!c->out)
		return;
	fprintf(c->out, "== gpamm: %s, %u vCPU%s x %s = %s (%llu pages), %u memslots of %s%s, "
		"%u iteration%s per test\n",
		bench_layout_name(c->page_shift, c->levels, lay, sizeof(lay)), c->vcpus,
		c->vcpus == 1 ? "" : "s", bench_size_str(c->bytes_per_vcpu, per, sizeof(per)),
		bench_size_str(d->pages * d->psz, tot, sizeof(tot)), (unsigned long long)d->pages,
		d->nslots, bench_size_str(d->pps * d->psz, ssz, sizeof(ssz)),
		d->pages % d->nslots ? " (the last one larger)" : "", c->iterations,
		c->iterations == 1 ? "" : "s");
	if (c->slots == 1)
		fprintf(c->out, "(-m 1 means this suite's default of %u slots, fewer for tiny memory: "
			"the tests need a slot boundary and a slot to move)\n", MS_DEFAULT_SLOTS);
	fprintf(c->out, "host: %s; pre-touched in %.2fs. Discards are real: map and unmap take "
		"host page faults when the guest touches discarded memory again\n",
		r->host_desc, r->touch_s);
	fprintf(c->out, "guest physical test memory: [0x%llx, 0x%llx); slot %u moves to 0x%llx "
		"and back; move area %llu pages\n",
		(unsigned long long)r->gpa_base,
		(unsigned long long)(r->gpa_base + d->pages * d->psz), d->nslots - 1,
		(unsigned long long)d->move_dst, (unsigned long long)(2 * d->move_half));
}

static int ms_run_gpamm(const struct bench_cfg *c, struct bench_run *r)
{
	struct gpamm_vm_config vcfg = { .page_shift = c->page_shift, .levels = c->levels,
					.max_vcpus = c->vcpus };
	struct gpamm_geom g;
	struct ms_ctx d;
	char err[256];
	int ret = -1;

	memset(&d, 0, sizeof(d));
	d.cfg = c;
	d.r = r;
	d.psz = 1ULL << c->page_shift;
	d.pages = bench_total_bytes(c) / d.psz;
	d.ppv = c->bytes_per_vcpu / d.psz;
	atomic_init(&d.stop, false);
	atomic_init(&d.failed, false);
	atomic_init(&d.looping, 0);
	if (gpamm_geom_init(&g, c->page_shift, c->levels))
		return bench_run_fail(r, BENCH_FAILED, "no layout with %u-byte pages and %u levels",
				      1u << c->page_shift, c->levels);
	if (ms_layout(&d, &g))
		return -1;

	if (bench_mem_alloc(&d.mem, d.pages * d.psz, d.psz, c->thp, err, sizeof(err)))
		return bench_run_fail(r, BENCH_FAILED, "%s", err);
	r->touch_s = d.mem.touch_s;
	snprintf(r->host_desc, sizeof(r->host_desc),
		 "direct host + MMU-notifier discards (MADV_DONTNEED inside invalidate_range_"
		 "start/end), anonymous %s, MAP_NORESERVE",
		 c->thp ? "THP-backed" : "4K host pages (THP off)");

	d.host = ms_host_create(c->page_shift);
	vcfg.host = d.host ? &d.host->h : NULL;
	if (!d.host || (ret = gpamm_vm_create(&vcfg, &d.vm))) {
		bench_run_fail(r, BENCH_FAILED, "cannot create the VM: %s",
			       d.host ? strerror(-ret) : "no host");
		ret = -1;
		goto out;
	}
	d.vcpu = calloc(c->vcpus, sizeof(*d.vcpu));
	d.g = calloc(c->vcpus, sizeof(*d.g));
	d.err = calloc(c->vcpus + 1, sizeof(*d.err));
	d.refaults = calloc(c->iterations, sizeof(*d.refaults));
	d.mapped = calloc((d.pages + 63) / 64, sizeof(*d.mapped));
	if (!d.vcpu || !d.g || !d.err || !d.refaults || !d.mapped) {
		ret = bench_run_fail(r, BENCH_FAILED, "out of memory");
		goto out;
	}

	for (unsigned i = 0; i < c->vcpus; i++) {
		ret = gpamm_vcpu_create(d.vm, i, &d.vcpu[i]);
		if (ret) {
			ret = bench_run_fail(r, BENCH_FAILED, "vCPU %u: %s", i, strerror(-ret));
			goto out;
		}
	}
	ms_header(&d);
	if (ms_setup(&d)) {
		ret = -1;
		goto out;
	}
	/* one more member than vCPUs: the VMM's part of each step */
	if (bench_gang_start(&d.gang, c->vcpus + 1, ms_member, &d)) {
		ret = bench_run_fail(r, BENCH_FAILED, "cannot start the vCPU threads");
		goto out;
	}
	d.gang_on = true;
	ret = ms_body(&d);
out:
	if (d.gang_on)
		bench_gang_stop(&d.gang);
	if (d.vm)
		gpamm_vm_destroy(d.vm);
	if (d.host)
		gpamm_host_destroy(&d.host->h);
	free(d.vcpu);
	free(d.g);
	free(d.err);
	free(d.refaults);
	free(d.mapped);
	bench_mem_free(&d.mem);
	return ret;
}

/*
 * After a sweep: the phases whose work does not grow with memory at a fixed
 * slot count, in time per turn rather than per page, to show that their
 * per-page figure falls because the cost is fixed.
 */
static void ms_sweep_explain(const struct bench_run *const *runs, const char *const *labels,
			     unsigned n, FILE *f)
{
	static const char *const fixed[] = { "setup", "move_active", "move_inactive",
					     "unmap_chunked" };
	const struct bench_suite *s = runs[0]->suite;

	if (runs[n - 1]->cfg.slots != runs[0]->cfg.slots) {
		/* a sweep over the slot count: setup is per slot, the rest per page */
		fprintf(f, "  memslot_perf: setup is time per slot created; a flat row means a "
			"slot costs the same at %u as at %u slots (KVM's sets since 5.17: O(log n) "
			"per change plus its grace periods)\n", runs[n - 1]->cfg.slots,
			runs[0]->cfg.slots);
		return;
	}
	fprintf(f, "  memslot_perf: time per turn of the phases with a fixed cost at %u slots "
		"(unmap chunked: in part):\n", runs[0]->cfg.slots);
	for (unsigned k = 0; k < sizeof(fixed) / sizeof(fixed[0]); k++) {
		int idx = bench_phase_index(s, fixed[k]);
		double lo = 0, hi = 0;

		fprintf(f, "  %-24s", s->phases[idx].table);
		for (unsigned i = 0; i < n; i++) {
			double t = bench_phase_mean_ns(runs[i], idx);

			fprintf(f, " %7.1fus", t / 1e3);
			lo = !i || t < lo ? t : lo;
			hi = !i || t > hi ? t : hi;
		}
		fprintf(f, "   %6.2fx\n", lo > 0 ? hi / lo : 0);
	}
	fprintf(f, "  (setup: %u slot creations, each a new slot set and an RCU grace period, none "
		"of it per page; a move: two MOVEs of one slot, flushing only what the guest "
		"mapped there; unmap chunked: one MADV_DONTNEED per 2 MiB plus two vCPU/VMM syncs "
		"per turn, a fixed part that weighs most on small memory)\n", runs[0]->cfg.slots);
	(void)labels;
}

const struct bench_suite bench_suite_memslot_perf = {
	.name = "memslot_perf",
	.summary = "setup, map, unmap, unmap chunked, move active/inactive, RW over -m slots "
		   "(default 32) (selftest)",
	.phases = ms_phases,
	.nphases = sizeof(ms_phases) / sizeof(ms_phases[0]),
	.counters = ms_counters,
	.ncounters = sizeof(ms_counters) / sizeof(ms_counters[0]),
	.run_gpamm = ms_run_gpamm,
	.run_kvm = NULL,
	.check = ms_check,
	.ratios = ms_ratios,
	.nratios = sizeof(ms_ratios) / sizeof(ms_ratios[0]),
	.flat = ms_flat,
	.uneven_slots = true,
	.sweep_explain = ms_sweep_explain,
};
