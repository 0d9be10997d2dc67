// SPDX-License-Identifier: MIT
/*
 * The Linux dirty_log_test invariant (REFERENCE.md §8, DESIGN.md contract 2)
 * with real threads, in the three ways a VMM reads the log: bitmap classic
 * (GET clears and write-protects), bitmap manual-protect (GET, then CLEAR
 * with the bitmap GET returned) and the dirty ring (harvest DIRTY entries,
 * mark them RESET, reset the rings; a full ring stops its vCPU until then).
 *
 * The guest: vCPU threads write the current iteration number (read from a
 * shared atomic before every store) into random pages of a logged slot of
 * a little more than 16 MiB of 4K pages (the "+3" makes the last bitmap
 * word partial, as the selftest does; one store in four sweeps through the
 * pages in order instead, so that whole bitmap words get dirty), each vCPU
 * into its own 8 bytes of
 * the page (offset 8 * vCPU index), now and then into a second slot that
 * does not log, and one access in eight is a load of a random page; at most a random budget of stores per iteration, so
 * that some iterations leave most pages clean and others dirty nearly all.
 * Before every store the guest looks at a "pause" flag; when it is set (or
 * the budget is spent) the guest leaves with gpamm_guest_exit() and its
 * thread parks outside gpamm_vcpu_run() until the VMM lets it go. A vCPU never
 * parks anywhere else: an exit in the middle of a store (a kick, a full
 * ring) is resumed, so every store a parked vCPU issued has completed.
 *
 * One iteration, k = 1, 2, ...: with all vCPUs parked the VMM sets the
 * iteration to k and releases them; while they run it collects the log
 * once at a random moment (the ring also whenever a vCPU waits on a full
 * ring); then it raises "pause" (and kicks, which only speeds things up;
 * a vCPU exiting for a kick is simply run again), waits until every vCPU is
 * parked (harvesting the ring meanwhile, or a vCPU blocked on a full ring
 * could never reach its pause point), collects again and verifies.
 *
 * The rule, worked out from the selftest (vm_dirty_log_verify() of the
 * version that stops the vCPU before the second collection) for this
 * setting. The log is empty when iteration k starts: the last collection of
 * k - 1 ran with every vCPU parked, so it took every entry made by then,
 * and every store of k - 1 had completed (a store is logged by its write
 * fault, before it lands). During k every store carries the value k. So:
 *  - reported dirty in either collection of k  ->  the page was stored to
 *    in k: one of its vCPU words holds k now (the selftest's "val ==
 *    iteration"). The selftest's exceptions for the dirty ring (the last
 *    harvested page may still hold an older value because KVM logs the GFN
 *    and exits for a full ring before the store retires, and may then be
 *    stopped there) do not apply: our vCPUs park only at their pause
 *    point, after the store completed, and a resumed store carries the
 *    value read before it, which is the value of the same iteration.
 *  - not reported  ->  no store in k completed: every word still holds the
 *    value it had at the last check, which is older than k (the
 *    selftest's "val < iteration", made exact by a shadow copy).
 *  - either way a word holds either its old value or k, nothing else.
 * Which of the two collections reported a page does not change the rule: a
 * page reported only by the first one (taken while the vCPUs ran) was
 * logged by a store of k that may not have landed then, but it had landed
 * by the time of the check, so it too holds exactly k (a weaker "<= k and
 * newer than at the last check" would let a store that landed with a wrong
 * value pass). The selftest's other exception, a never-written page in the
 * first bitmap of iteration 1 under INITIALLY_SET, cannot arise: the
 * manual-protect run does not use INITIALLY_SET (a test of its own does).
 * For the ring also: the entries reset equal the entries collected, and
 * every entry names the logging slot and a page inside it.
 *
 * Classic and ring mode run on a VM whose walker has PTW (it sets DIRTY
 * itself on a store through an entry with WRITE), manual-protect without.
 *
 * Before iteration 1 the vCPUs populate memory (value 0) with logging still
 * off (classic, ring: logging is then switched on with a flags-only change,
 * which must write-protect what they mapped dirty) or on (manual: that log
 * is collected and thrown away). Also checked: GET/CLEAR with bad
 * arguments return the documented errno and change neither the log nor
 * the GPA table; a ring VM refuses GET/CLEAR with -ENXIO; INITIALLY_SET
 * makes the first GET report every page.
 */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/tap.h"
#include "harness/vcpu_gang.h"
#include "harness/vmtest.h"
#include "vm.h" /* to look at the GPA table: a failed call must not change it */

#define PS 12
#define PSZ (1ULL << PS)
#define NPAGES ((16ULL << 20) / PSZ + 3) /* 4099: last bitmap word partial */
#define NWORDS ((NPAGES + 63) / 64)
#define LEN (NPAGES * PSZ)
#define SLOT 5
#define NL_SLOT 9          /* a slot that does not log */
#define NL_PAGES 64
#define NL_GPA (1ULL << 30)
#define NVCPU 2
#define MIN_WRITES 400     /* per vCPU per iteration, a floor on coverage */
#define RING_ENTRIES 512   /* small: the ring fills several times an iteration */
#define TICK_US 200

enum mode { M_CLASSIC, M_MANUAL, M_RING };
static const char *const mode_name[] = { "classic", "manual-protect", "ring" };

struct vc {
	struct vg_vcpu g;         /* the vCPU, its thread, parking and ring */
	uint64_t seed;
	/* guest side (runs on the vCPU thread) */
	uint64_t sweep;           /* the sequential part of the guest's stores */
	/* vCPU thread <-> VMM */
	atomic_ulong writes;      /* stores completed in this iteration */
	atomic_ulong nl_writes;
};

/* The vCPU threads, parked by the VMM (pause) and by a full ring. */
static struct vcpu_gang G = VCPU_GANG_INIT;

static struct {
	enum mode mode;
	struct gpamm_vm *vm;
	uint64_t gpa;            /* of the logged slot */
	atomic_ulong iter;
	atomic_ulong budget;     /* stores per vCPU per iteration */
	struct vc c[NVCPU];
	uint64_t collections;
} D;

static int dl_guest(struct gpamm_vcpu *v, void *arg)
{
	struct vc *c = arg;
	uint64_t s = c->seed | 1;

	while (!vg_quitting(&G)) {
		/* told to pause, or done for this iteration: wait outside */
		if (vg_pausing(&G) ||
		    atomic_load_explicit(&c->writes, memory_order_relaxed) >=
		    atomic_load_explicit(&D.budget, memory_order_relaxed)) {
			vg_guest_park(&c->g);
			continue;
		}
		uint64_t x = tap_xorshift(&s);
		uint64_t val = atomic_load_explicit(&D.iter, memory_order_relaxed);
		if ((x & 63) == 0) {
			gpamm_guest_write(v, NL_GPA + ((x >> 8) % NL_PAGES) * PSZ + c->g.idx * 8, 8,
					  val);
			atomic_fetch_add_explicit(&c->nl_writes, 1, memory_order_relaxed);
			continue;
		}
		if ((x & 7) == 1) {
			/* a load: a read fault under logging must map the page clean */
			(void)gpamm_guest_read(v, D.gpa + ((x >> 20) % NPAGES) * PSZ, 8);
			continue;
		}
		/* one store in four sweeps on sequentially: whole bitmap words get dirty */
		uint64_t page = (x & 0x18) ? (x >> 8) % NPAGES : c->sweep++ % NPAGES;
		gpamm_guest_write(v, D.gpa + page * PSZ + c->g.idx * 8, 8, val);
		atomic_fetch_add_explicit(&c->writes, 1, memory_order_relaxed);
	}
	return 0;
}

/* ---- the VMM side ------------------------------------------------------- */

#define CHECK(cond, ...) VG_CHECK(&G, cond, __VA_ARGS__)

static inline bool bit(const uint64_t *bm, uint64_t i)
{
	return bm[i / 64] >> (i % 64) & 1;
}

/* One collection of the log, or'ed into @bm. */
static void collect(uint64_t *bm)
{
	uint64_t tmp[NWORDS + 1];
	int r;

	D.collections++;
	if (D.mode == M_RING) {
		vg_ring_collect(&G, SLOT, NPAGES, bm);
		return;
	}
	tmp[NWORDS] = 0x5a5a5a5a5a5a5a5aULL;
	r = gpamm_vm_get_dirty_log(D.vm, SLOT, tmp);
	CHECK(r == 0, "GET: %d", r);
	CHECK(tmp[NWORDS] == 0x5a5a5a5a5a5a5a5aULL, "GET wrote past ceil(npages / 64) words");
	CHECK(!(tmp[NWORDS - 1] >> (NPAGES % 64)), "GET reports pages past the end of the slot");
	if (D.mode == M_MANUAL) {
		r = gpamm_vm_clear_dirty_log(D.vm, SLOT, 0, NPAGES, tmp);
		CHECK(r == 0, "CLEAR: %d", r);
	}
	for (unsigned w = 0; w < NWORDS; w++)
		bm[w] |= tmp[w];
}

/* While the vCPUs stop, ring entries made meanwhile go to @bm. */
static void stop_tick(void *bm)
{
	if (D.mode == M_RING)
		collect(bm);
}

/* Raise pause and wait until every vCPU is parked; ring entries made
 * meanwhile go to @bm. Return false on a timeout or a vCPU failure. */
static bool stop_all(uint64_t *bm)
{
	return vg_stop(&G, TICK_US / 2, 10 * 1000 * 1000 / TICK_US, stop_tick, bm);
}

/*
 * The check, page by page (see the rule at the top). @shadow holds each
 * vCPU word as it was at the last check.
 */
static void verify(uint64_t k, const uint64_t *bm0, const uint64_t *bm1, uint64_t *shadow,
		   const uint64_t *ram, uint64_t *ndirty)
{
	uint64_t dirty = 0;

	for (uint64_t p = 0; p < NPAGES; p++) {
		bool rep = bit(bm0, p) || bit(bm1, p), now = false;

		for (unsigned i = 0; i < NVCPU; i++) {
			uint64_t val = __atomic_load_n(&ram[p * (PSZ / 8) + i], __ATOMIC_RELAXED);
			uint64_t old = shadow[p * NVCPU + i];
			if (val == k)
				now = true;
			else
				CHECK(val == old, "iteration %llu: page %llu word %u holds %llu, "
				      "was %llu (reported %d)", (unsigned long long)k,
				      (unsigned long long)p, i, (unsigned long long)val,
				      (unsigned long long)old, rep);
			shadow[p * NVCPU + i] = val;
		}
		CHECK(!rep || now, "iteration %llu: page %llu reported dirty (first %d, second %d) "
		      "but not written in this iteration", (unsigned long long)k,
		      (unsigned long long)p, bit(bm0, p), bit(bm1, p));
		CHECK(rep || !now, "iteration %llu: page %llu written in this iteration but not "
		      "reported: a lost dirty page", (unsigned long long)k, (unsigned long long)p);
		dirty += rep;
	}
	*ndirty += dirty;
}

static void run_mode(enum mode mode, unsigned iters)
{
	struct gpamm_host *host;
	struct gpamm_vm *vm;
	uint64_t *ram = vt_alloc(LEN, PS), *nl = vt_alloc(NL_PAGES * PSZ, PS);
	uint64_t *shadow = calloc(NPAGES * NVCPU, sizeof(uint64_t));
	uint64_t bm0[NWORDS], bm1[NWORDS], discard[NWORDS];
	uint64_t seed = tap_seed() ^ ((uint64_t)mode * 0x9e3779b97f4a7c15ULL);
	uint64_t ndirty = 0, nwrites = 0, ring_full = 0, nl_w = 0;
	struct tap_rng rng;
	unsigned k = 0;
	bool stuck = false;
	struct gpamm_live l0, l;

	gpamm_live_objects(&l0);
	/* classic and ring run on a walker with PTW (REFERENCE.md §6.6), manual without */
	host = gpamm_host_direct_create(PS);
	ASSERT(host);
	ASSERT_EQ_INT(gpamm_vm_create(&(struct gpamm_vm_config){ .page_shift = PS, .levels = 3,
		.host = host, .flags = mode == M_MANUAL ? 0 : GPAMM_VM_PTW }, &vm), 0);
	ASSERT(ram && nl && shadow);
	tap_rng_seed(&rng, seed);
	vg_reset(&G, vm, mode == M_RING, NULL);
	memset(&D.c, 0, sizeof(D.c));
	D.mode = mode;
	D.vm = vm;
	D.gpa = gpamm_geom_space(gpamm_vm_geom(vm)) - LEN; /* the top of the GPA space */
	D.collections = 0;
	atomic_store(&D.iter, 0);
	atomic_store(&D.budget, UINT64_MAX);

	if (mode == M_RING)
		ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, RING_ENTRIES), 0);
	if (mode == M_MANUAL)
		ASSERT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(
				      vm, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0);
	struct gpamm_userspace_memory_region r = {
		.slot = SLOT, .flags = mode == M_MANUAL ? GPAMM_MEM_LOG_DIRTY_PAGES : 0,
		.guest_phys_addr = D.gpa, .memory_size = LEN, .userspace_addr = (uintptr_t)ram,
	};
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = NL_SLOT, .guest_phys_addr = NL_GPA, .memory_size = NL_PAGES * PSZ,
		.userspace_addr = (uintptr_t)nl }), 0);

	for (unsigned i = 0; i < NVCPU; i++) {
		struct vc *c = &D.c[i];
		struct gpamm_vcpu *v;

		c->seed = seed * (2 * i + 3) + i;
		c->sweep = tap_below(&rng, NPAGES);
		ASSERT_EQ_INT(gpamm_vcpu_create(vm, i, &v), 0);
		vg_add(&G, &c->g, v);
		ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, dl_guest, c, 0), 0);
		if (mode == M_RING) {
			ASSERT(c->g.ring);
			ASSERT_EQ(c->g.ring_size, RING_ENTRIES);
		} else {
			uint32_t n = 7;
			ASSERT(!gpamm_vcpu_dirty_ring(v, &n));
		}
	}
	vg_start(&G);

	/* Iteration 0: populate (value 0) until most pages are mapped. */
	while (atomic_load(&D.c[0].writes) + atomic_load(&D.c[1].writes) < 2 * NPAGES &&
	       !vg_failed(&G)) {
		if (mode == M_RING && vg_any_ring_full(&G))
			collect(discard); /* not reached: nothing logs yet */
		usleep(TICK_US);
	}
	memset(discard, 0, sizeof(discard));
	stuck = !stop_all(discard);
	if (!stuck && mode == M_MANUAL) {
		collect(discard); /* the populate log, thrown away */
	} else if (!stuck) {
		r.flags = GPAMM_MEM_LOG_DIRTY_PAGES; /* flags only: write-protect */
		CHECK(gpamm_vm_set_memory_region(vm, &r) == 0, "enabling logging failed");
	}

	for (k = 1; k <= iters && !stuck && !G.errors; k++) {
		unsigned reap = (unsigned)tap_below(&rng, 12), t;
		memset(bm0, 0, sizeof(bm0));
		memset(bm1, 0, sizeof(bm1));
		atomic_store(&D.iter, k);
		/* sparse and dense iterations, so that clean pages are checked too */
		atomic_store(&D.budget, MIN_WRITES + tap_below(&rng, NPAGES));
		for (unsigned i = 0; i < NVCPU; i++)
			atomic_store(&D.c[i].writes, 0);
		vg_release(&G);
		for (t = 0;; t++) {
			usleep(TICK_US);
			if (t == reap || (mode == M_RING && t > reap && vg_any_ring_full(&G)))
				collect(bm0);
			if (t >= reap && atomic_load(&D.c[0].writes) >= MIN_WRITES &&
			    atomic_load(&D.c[1].writes) >= MIN_WRITES)
				break;
			if (t > 10 * 1000 * 1000 / TICK_US || vg_failed(&G)) {
				stuck = true;
				break;
			}
		}
		if (stuck || !stop_all(bm1)) {
			stuck = true;
			break;
		}
		collect(bm1);
		for (unsigned i = 0; i < NVCPU; i++)
			nwrites += atomic_load(&D.c[i].writes);
		verify(k, bm0, bm1, shadow, ram, &ndirty);
	}

	vg_quit(&G);
	for (unsigned i = 0; i < NVCPU; i++) {
		ring_full += atomic_load(&D.c[i].g.ring_full_exits);
		nl_w += atomic_load(&D.c[i].nl_writes);
	}
	tap_diag("%s: %u iterations, %llu stores, %llu pages reported dirty, %llu collections, "
		 "%llu ring entries (%llu reset), %llu ring-full exits, %llu stores to the "
		 "unlogged slot", mode_name[mode], k - 1, (unsigned long long)nwrites,
		 (unsigned long long)ndirty, (unsigned long long)D.collections,
		 (unsigned long long)G.ring_collected, (unsigned long long)G.ring_reset,
		 (unsigned long long)ring_full, (unsigned long long)nl_w);
	/* everything is torn down first, so that a failure here leaks nothing */
	struct gpamm_vm_stats st;
	gpamm_vm_stats(vm, &st);
	gpamm_vm_destroy(vm);
	gpamm_host_destroy(host);
	vt_free(ram, LEN);
	vt_free(nl, NL_PAGES * PSZ);
	free(shadow);
	gpamm_live_objects(&l);
	ASSERT(!stuck);
	ASSERT_EQ(G.errors, 0);
	ASSERT_EQ(k - 1, iters);
	if (mode == M_RING)
		ASSERT_EQ(G.ring_collected, G.ring_reset);
	ASSERT(ndirty > 0);
	ASSERT_EQ(st.pinned, 0);
	ASSERT_EQ(l.vms + l.vcpus + l.tpools + l.threads, l0.vms + l0.vcpus + l0.tpools + l0.threads);
}

static unsigned iterations(void)
{
	unsigned n = (unsigned)(100 * tap_scale());
	return n ? n : 1;
}

static void test_dirty_log_classic(void)
{
	run_mode(M_CLASSIC, iterations());
}

static void test_dirty_log_manual_protect(void)
{
	run_mode(M_MANUAL, iterations());
}

static void test_dirty_log_ring(void)
{
	run_mode(M_RING, iterations());
}

/* ---- API checks without threads ----------------------------------------- */

struct wr { const uint64_t *gpa; unsigned n; };

static int write_pages(struct gpamm_vcpu *v, void *arg)
{
	struct wr *w = arg;
	for (unsigned i = 0; i < w->n; i++)
		gpamm_guest_write(v, w->gpa[i], 8, 0x1000 + i);
	return 0;
}

static void guest_writes(struct gpamm_vcpu *v, const uint64_t *gpa, unsigned n)
{
	struct wr w = { gpa, n };
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, write_pages, &w, 0), 0);
	vt_run_to_done(v, 0, NULL);
}

#define SPAGES 197 /* 3 words and a partial one */
#define SW ((SPAGES + 63) / 64)

static void expect_log(struct gpamm_vm *vm, uint32_t slot, const uint64_t *want)
{
	uint64_t got[SW + 1];

	memset(got, 0xa5, sizeof(got));
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, slot, got), 0);
	for (unsigned w = 0; w < SW; w++)
		ASSERT_EQ(got[w], want[w]);
	ASSERT_EQ(got[SW], 0xa5a5a5a5a5a5a5a5ULL); /* nothing written past the bitmap */
}

/*
 * Bad GET/CLEAR arguments: the documented errno, and neither the log nor
 * the GPA table changes (the dirty pages stay dirty and writable).
 */
static void bad_args_one(bool manual)
{
	struct gpamm_host *host;
	struct gpamm_vm *vm = vt_vm_direct(PS, 3, &host);
	uint8_t *ram = vt_alloc(SPAGES * PSZ, PS), *ram2 = vt_alloc(64 * PSZ, PS);
	struct gpamm_vcpu *v;
	const uint64_t base = 1ULL << 32;
	const uint64_t pages[] = { 0, 5, 64, 130, SPAGES - 1 };
	uint64_t want[SW] = { 0 }, gpa[5], bm[SW + 1], ones[SW + 1];
	gpamm_pte_t pte[5];

	ASSERT(ram && ram2);
	if (manual)
		ASSERT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(
				      vm, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .flags = GPAMM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = base,
		.memory_size = SPAGES * PSZ, .userspace_addr = (uintptr_t)ram }), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 1, .guest_phys_addr = 2 * base, .memory_size = 64 * PSZ,
		.userspace_addr = (uintptr_t)ram2 }), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	for (unsigned i = 0; i < 5; i++) {
		gpa[i] = base + pages[i] * PSZ;
		want[pages[i] / 64] |= 1ULL << (pages[i] % 64);
	}
	guest_writes(v, gpa, 5);
	for (unsigned i = 0; i < 5; i++) {
		pte[i] = gpamm_pgt_lookup(&vm->pgt, gpa[i], NULL);
		ASSERT_EQ(pte[i] & GPAMM_PTE_WRITEABLE, GPAMM_PTE_WRITEABLE);
	}
	memset(ones, 0xff, sizeof(ones));
	memset(bm, 0, sizeof(bm));

	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, GPAMM_USER_MEM_SLOTS, bm), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, UINT32_MAX, bm), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, NULL), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, 7, bm), -ENOENT);     /* no such slot */
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, 1, bm), -ENOENT);     /* does not log */
	for (unsigned w = 0; w < SW; w++)
		ASSERT_EQ(bm[w], 0); /* failed calls wrote nothing */

	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, GPAMM_USER_MEM_SLOTS, 0, 64, ones), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 1, 64, ones), -EINVAL);   /* first % 64 */
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 32, 64, ones), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 0, 63, ones), -EINVAL);   /* num % 64 */
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 64, 65, ones), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 128, 70, ones), -EINVAL); /* past the end */
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 192, 64, ones), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 256, 64, ones), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 0, SPAGES + 64, ones), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 1ULL << 63, 64, ones), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 0, UINT64_MAX - 63, ones), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 1ULL << 63, 1ULL << 63, ones), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 0, 64, NULL), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 7, 0, 64, ones), -ENOENT);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 1, 0, 64, ones), -ENOENT);

	/* Nothing changed: every entry as it was, the log as it was. */
	for (unsigned i = 0; i < 5; i++)
		ASSERT_EQ(gpamm_pgt_lookup(&vm->pgt, gpa[i], NULL), pte[i]);
	if (manual) {
		expect_log(vm, 0, want);
		expect_log(vm, 0, want); /* GET alone clears nothing */
		/* the legal short range: it ends at the end of the slot */
		uint64_t last[2] = { 0, 0 };
		last[(SPAGES - 1 - 128) / 64] = 1ULL << ((SPAGES - 1 - 128) % 64);
		ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 128, SPAGES - 128, last), 0);
		ASSERT_EQ(gpamm_pgt_lookup(&vm->pgt, gpa[4], NULL) & GPAMM_PTE_WRITEABLE, 0);
		ASSERT_EQ(gpamm_pgt_lookup(&vm->pgt, gpa[3], NULL), pte[3]); /* not in the mask */
		want[SW - 1] &= ~(1ULL << ((SPAGES - 1) % 64));
		expect_log(vm, 0, want);
		/* CLEAR of a page that is not dirty is harmless */
		ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 0, 64, ones), 0);
		want[0] = 0;
		expect_log(vm, 0, want);
		ASSERT_EQ(gpamm_pgt_lookup(&vm->pgt, gpa[0], NULL) & GPAMM_PTE_WRITEABLE, 0);
		ASSERT_EQ(gpamm_pgt_lookup(&vm->pgt, gpa[2], NULL), pte[2]);
	} else {
		expect_log(vm, 0, want);        /* reports, clears, write-protects */
		for (unsigned i = 0; i < 5; i++) {
			gpamm_pte_t e = gpamm_pgt_lookup(&vm->pgt, gpa[i], NULL);
			ASSERT(e & GPAMM_PTE_PRESENT);
			ASSERT_EQ(e & GPAMM_PTE_WRITEABLE, 0);
			ASSERT(e & GPAMM_PTE_WR_MARKER);
		}
		memset(want, 0, sizeof(want));
		expect_log(vm, 0, want);
		/* the next write to each faults and is logged again */
		guest_writes(v, gpa + 1, 2);
		want[0] = 1ULL << 5;
		want[1] = 1ULL << 0;
		expect_log(vm, 0, want);
	}
	gpamm_vm_destroy(vm);
	gpamm_host_destroy(host);
	vt_free(ram, SPAGES * PSZ);
	vt_free(ram2, 64 * PSZ);
}

static void test_get_clear_bad_args_change_nothing(void)
{
	bad_args_one(false);
	bad_args_one(true);
}

/* The ring and the bitmap exclude each other; ring set-up errors. */
static void test_ring_excludes_bitmap(void)
{
	struct gpamm_host *host;
	struct gpamm_vm *vm = vt_vm_direct(PS, 3, &host);
	uint8_t *ram = vt_alloc(SPAGES * PSZ, PS);
	struct gpamm_vcpu *v;
	uint64_t bm[SW + 1], ones[SW + 1];
	uint32_t n = 0;
	const uint64_t base = 1ULL << 32;
	struct gpamm_userspace_memory_region r = {
		.slot = 0, .flags = GPAMM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = base,
		.memory_size = SPAGES * PSZ, .userspace_addr = (uintptr_t)ram,
	};

	ASSERT(ram);
	memset(ones, 0xff, sizeof(ones));
	/* without a ring */
	ASSERT_EQ_INT(gpamm_vm_reset_dirty_rings(vm), -EINVAL); /* KVM: no ring */
	ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, 0), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, GPAMM_DIRTY_RING_RSVD), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, 2 * GPAMM_DIRTY_RING_RSVD + 64), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, 1000), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, 131072), -E2BIG);
	ASSERT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(vm, GPAMM_DIRTY_LOG_INITIALLY_SET),
		      -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(vm, 1u << 7), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, 2 * GPAMM_DIRTY_RING_RSVD), 0);
	ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, 256), -EINVAL); /* already */
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	ASSERT(gpamm_vcpu_dirty_ring(v, &n));
	ASSERT_EQ(n, 2 * GPAMM_DIRTY_RING_RSVD);
	{
		const uint64_t g[2] = { base, base + 7 * PSZ };
		guest_writes(v, g, 2);
	}
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, bm), -ENXIO);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 0, 64, ones), -ENXIO);
	/* the pages are still dirty and writable: the refused CLEAR did nothing */
	ASSERT_EQ(gpamm_pgt_lookup(&vm->pgt, base, NULL) & GPAMM_PTE_WRITEABLE, GPAMM_PTE_WRITEABLE);
	gpamm_vm_destroy(vm);

	/* vCPUs or logging slots already there */
	vm = NULL;
	{
		struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3, .host = host };
		ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
		ASSERT_EQ_INT(gpamm_vcpu_create(vm, 3, &v), 0);
		ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, 256), -EINVAL);
		gpamm_vm_destroy(vm);
		ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
		ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);
		ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, 256), -EINVAL);
		ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
		ASSERT(!gpamm_vcpu_dirty_ring(v, &n));
		gpamm_vm_destroy(vm);
	}
	gpamm_host_destroy(host);
	vt_free(ram, SPAGES * PSZ);
}

/*
 * A full ring: the vCPU exits with DIRTY_RING_FULL, makes no progress
 * until entries are reset, and every page it wrote is in the ring.
 */
struct ring_prog { uint64_t base; unsigned n; unsigned done; };

static int ring_writer(struct gpamm_vcpu *v, void *arg)
{
	struct ring_prog *p = arg;
	for (p->done = 0; p->done < p->n; p->done++)
		gpamm_guest_write(v, p->base + (uint64_t)p->done * PSZ, 8, p->done + 1);
	return 0;
}

static void test_ring_full_blocks_until_reset(void)
{
	struct gpamm_host *host;
	struct gpamm_vm *vm = vt_vm_direct(PS, 3, &host);
	uint8_t *ram = vt_alloc(SPAGES * PSZ, PS);
	struct gpamm_vcpu *v;
	struct gpamm_dirty_gfn *ring;
	uint32_t size = 0;
	uint64_t fetch = 0, seen[SW] = { 0 };
	const uint64_t base = 1ULL << 32;
	struct ring_prog p = { base, SPAGES, 0 };
	unsigned full = 0;

	ASSERT(ram);
	ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, 2 * GPAMM_DIRTY_RING_RSVD), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 2, .flags = GPAMM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = base,
		.memory_size = SPAGES * PSZ, .userspace_addr = (uintptr_t)ram }), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	ring = gpamm_vcpu_dirty_ring(v, &size);
	ASSERT(ring);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, ring_writer, &p, 0), 0);
	struct gpamm_run *run = gpamm_vcpu_run_state(v);
	for (;;) {
		ASSERT_EQ_INT(gpamm_vcpu_run(v), 0);
		if (run->exit_reason == GPAMM_EXIT_DONE)
			break;
		ASSERT_EQ(run->exit_reason, GPAMM_EXIT_DIRTY_RING_FULL);
		full++;
		/* entries in use when it stopped: at least size - RSVD, at most size */
		uint64_t used = 0;
		while (used < size &&
		       (__atomic_load_n(&ring[(fetch + used) & (size - 1)].flags, __ATOMIC_ACQUIRE) &
			GPAMM_DIRTY_GFN_F_DIRTY))
			used++;
		ASSERT_GE(used, size - GPAMM_DIRTY_RING_RSVD);
		/* no progress until a reset */
		unsigned done = p.done;
		ASSERT_EQ_INT(gpamm_vcpu_run(v), 0);
		ASSERT_EQ(run->exit_reason, GPAMM_EXIT_DIRTY_RING_FULL);
		ASSERT_EQ(p.done, done);
		/* a reset with nothing marked frees nothing */
		ASSERT_EQ_INT(gpamm_vm_reset_dirty_rings(vm), 0);
		for (uint64_t i = 0; i < used; i++) {
			struct gpamm_dirty_gfn *e = &ring[(fetch + i) & (size - 1)];
			ASSERT_EQ(e->slot, 2);
			ASSERT_LT(e->offset, SPAGES);
			seen[e->offset / 64] |= 1ULL << (e->offset % 64);
			__atomic_store_n(&e->flags, GPAMM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
		}
		fetch += used;
		ASSERT_EQ_INT(gpamm_vm_reset_dirty_rings(vm), (int64_t)used);
		ASSERT_EQ_INT(gpamm_vm_reset_dirty_rings(vm), 0);
		ASSERT(full < 100);
	}
	/* what is left after the guest finished */
	for (;; fetch++) {
		struct gpamm_dirty_gfn *e = &ring[fetch & (size - 1)];
		if (!(__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & GPAMM_DIRTY_GFN_F_DIRTY))
			break;
		ASSERT_LT(e->offset, SPAGES);
		seen[e->offset / 64] |= 1ULL << (e->offset % 64);
		__atomic_store_n(&e->flags, GPAMM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
	}
	gpamm_vm_reset_dirty_rings(vm);
	tap_diag("%u ring-full exits for %u pages on a ring of %u", full, SPAGES, size);
	ASSERT_GE(full, 1);
	for (unsigned i = 0; i < SPAGES; i++)
		ASSERT(bit(seen, i));
	for (unsigned i = 0; i < SPAGES; i++)
		ASSERT_EQ(*(uint64_t *)(ram + i * PSZ), i + 1);
	/* after the resets every page is write-protected again */
	for (unsigned i = 0; i < SPAGES; i++)
		ASSERT_EQ(gpamm_pgt_lookup(&vm->pgt, base + i * PSZ, NULL) & GPAMM_PTE_WRITEABLE, 0);
	gpamm_vm_destroy(vm);
	gpamm_host_destroy(host);
	vt_free(ram, SPAGES * PSZ);
}

/* INITIALLY_SET: the first GET reports every page of the slot. */
static void test_initially_set_first_get_reports_all(void)
{
	struct gpamm_host *host;
	struct gpamm_vm *vm = vt_vm_direct(PS, 3, &host);
	uint8_t *ram = vt_alloc(SPAGES * PSZ, PS);
	struct gpamm_vcpu *v;
	uint64_t want[SW], none[SW] = { 0 };
	const uint64_t base = 1ULL << 33;

	ASSERT(ram);
	ASSERT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(vm,
		GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | GPAMM_DIRTY_LOG_INITIALLY_SET), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 4, .flags = GPAMM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = base,
		.memory_size = SPAGES * PSZ, .userspace_addr = (uintptr_t)ram }), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	for (unsigned w = 0; w < SW; w++)
		want[w] = w + 1 < SW ? ~0ULL : (1ULL << (SPAGES % 64)) - 1;
	expect_log(vm, 4, want); /* never written, all reported */
	expect_log(vm, 4, want);
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(vm, 4, 0, SPAGES, want), 0);
	expect_log(vm, 4, none);
	{
		const uint64_t g[1] = { base + 100 * PSZ };
		guest_writes(v, g, 1);
	}
	none[1] = 1ULL << 36;
	expect_log(vm, 4, none);
	gpamm_vm_destroy(vm);
	gpamm_host_destroy(host);
	vt_free(ram, SPAGES * PSZ);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_get_clear_bad_args_change_nothing);
	TEST(test_ring_excludes_bitmap);
	TEST(test_ring_full_blocks_until_reset);
	TEST(test_initially_set_first_get_reports_all);
	TEST(test_dirty_log_classic);
	TEST(test_dirty_log_manual_protect);
	TEST(test_dirty_log_ring);
	return tap_done();
}
