// SPDX-License-Identifier: MIT
/*
 * Live migration, pre-copy, through the dirty log, while the host moves the
 * guest's memory about (DESIGN.md contracts 2 and 3; REFERENCE.md §6.6 and
 * §7.7: the bug this catches is "migration lost dirty pages").
 *
 * vCPU threads keep storing random values into a 24 MiB slot of 4K pages on
 * the sim host in checking mode (every guest access is checked against the
 * host page table, so a store through a stale translation is counted):
 * most stores go to a small hot set of pages, the rest anywhere, some
 * straddle a page boundary, and a quarter of the accesses are loads. A host
 * thread meanwhile reclaims (swaps out), migrates and merges (KSM) random
 * runs of the slot's pages; none of that may lose a byte or a dirty page.
 *
 * The VMM migrates to a plain buffer: it turns logging on (flags-only, the
 * vCPUs running), copies all memory (round 0), then each round collects the
 * log, re-protects (GET + CLEAR in manual-protect mode, GET in classic
 * mode, harvest + reset in ring mode) and only then copies the pages
 * reported, so that a store racing with the copy is either in the copy or
 * faults and is reported next round. After the last round the vCPUs stop
 * at their pause point (outside gpamm_vcpu_run(), every store completed),
 * a final collection and copy follow, and the buffer must equal guest
 * memory byte for byte. The VM's walker has PTW: a write-protect that left
 * WRITE set would let stores through without a fault, unlogged (§7.7).
 * The host also makes runs of pages read-only for a moment (guest stores
 * there exit with a memory fault and are retried). Then: no stale access, no pin, and after destroy
 * and munmap no live frame.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/tap.h"
#include "harness/vcpu_gang.h"
#include "harness/vmtest.h"

#define PS 12
#define PSZ (1ULL << PS)
#define NPAGES ((24ULL << 20) / PSZ)
#define NWORDS ((NPAGES + 63) / 64)
#define LEN (NPAGES * PSZ)
#define GPA_BASE (1ULL << 34)
#define SLOT 1
#define NVCPU 2
#define HOT 96               /* pages in each vCPU's hot set */
#define RING_ENTRIES 1024
#define FRAMES (2 * NPAGES + 1024)
#define SWAP (NPAGES / 2)

enum mode { M_CLASSIC, M_MANUAL, M_RING };
static const char *const mode_name[] = { "classic", "manual-protect", "ring" };

struct vc {
	struct vg_vcpu g;         /* the vCPU, its thread, parking and ring */
	uint64_t seed, hot;
	atomic_ulong stores, loads;
};

/* The vCPU threads, parked by the VMM (stop-and-copy) and by a full ring. */
static struct vcpu_gang G = VCPU_GANG_INIT;

static struct {
	enum mode mode;
	struct gpamm_vm *vm;
	struct gpamm_host *h;
	uint64_t hva;
	atomic_int host_stop;
	struct vc c[NVCPU];
	atomic_ulong ev_reclaim, ev_migrate, ev_merge, ev_mprotect, pages_moved, memfaults;
} D;

#define CHECK(cond, ...) VG_CHECK(&G, cond, __VA_ARGS__)

static int mig_guest(struct gpamm_vcpu *v, void *arg)
{
	struct vc *c = arg;
	uint64_t s = c->seed | 1;

	while (!vg_quitting(&G)) {
		if (vg_pausing(&G)) {
			vg_guest_park(&c->g);
			continue;
		}
		uint64_t x = tap_xorshift(&s), val = tap_xorshift(&s);
		uint64_t page = (x & 7) ? (c->hot + (x >> 8) % HOT) % NPAGES : (x >> 8) % NPAGES;
		uint64_t gpa = GPA_BASE + page * PSZ + ((x >> 40) % (PSZ / 8)) * 8;

		switch ((x >> 3) & 31) {
		case 0: case 1: case 2: case 3: case 4: case 5: case 6: case 7:
			(void)gpamm_guest_read(v, GPA_BASE + ((val >> 5) % NPAGES) * PSZ, 8);
			atomic_fetch_add_explicit(&c->loads, 1, memory_order_relaxed);
			break;
		case 8:
			if (page + 1 < NPAGES) { /* 24 bytes across a page boundary */
				uint64_t buf[3] = { val, ~val, val * 3 };
				gpamm_guest_write_buf(v, GPA_BASE + (page + 1) * PSZ - 8 - (x >> 61) * 4,
						      buf, sizeof(buf));
				break;
			}
			/* fall through */
		default:
			gpamm_guest_write(v, gpa, 8, val);
			break;
		}
		atomic_fetch_add_explicit(&c->stores, 1, memory_order_relaxed);
	}
	return 0;
}

/* A write to a page the host made read-only for a moment: retried. */
static enum vg_exit mig_exit(struct vg_vcpu *c, struct gpamm_run *run)
{
	if (run->exit_reason != GPAMM_EXIT_MEMORY_FAULT)
		return VG_EXIT_UNKNOWN;
	if (run->memory_fault.error != -EFAULT ||
	    !(run->memory_fault.flags & GPAMM_MEMORY_EXIT_FLAG_WRITE)) {
		tap_diag("vCPU %u: memory fault gpa 0x%llx error %d flags 0x%llx", c->idx,
			 (unsigned long long)run->memory_fault.gpa, run->memory_fault.error,
			 (unsigned long long)run->memory_fault.flags);
		tap_fail_async(__FILE__, __LINE__, "unexpected memory fault");
		return VG_EXIT_FAIL;
	}
	atomic_fetch_add(&D.memfaults, 1);
	usleep(10);
	return VG_EXIT_RUN_ON;
}

/* The host: reclaim, migrate and merge random runs of the slot's pages. */
static void *host_thread(void *arg)
{
	uint64_t s = *(uint64_t *)arg | 1;

	while (!atomic_load(&D.host_stop)) {
		uint64_t x = tap_xorshift(&s);
		uint64_t first = (x >> 8) % NPAGES, n = 1 + (x >> 40) % 64;
		uint64_t hva = D.hva + first * PSZ;
		int64_t r;

		if (first + n > NPAGES)
			n = NPAGES - first;
		switch (x % 6) {
		case 5:
			/* read-only for a moment: guest writes there exit with a memory
			 * fault and are retried; a fault racing with this must retry */
			r = gpamm_sim_mprotect(D.h, hva, n * PSZ, false);
			if (!r) {
				usleep(20 + (x >> 59) * 4);
				r = gpamm_sim_mprotect(D.h, hva, n * PSZ, true);
			}
			atomic_fetch_add(&D.ev_mprotect, 1);
			break;
		case 0: case 1:
			r = gpamm_sim_reclaim(D.h, hva, n * PSZ, n);
			if (r == -ENOSPC)
				r = 0; /* swap full: allowed */
			atomic_fetch_add(&D.ev_reclaim, 1);
			break;
		case 2: case 3:
			r = gpamm_sim_migrate(D.h, hva, n * PSZ);
			if (r == -ENOMEM)
				r = 0; /* no free frame: allowed */
			atomic_fetch_add(&D.ev_migrate, 1);
			break;
		default:
			r = gpamm_sim_merge(D.h, hva, n * PSZ);
			atomic_fetch_add(&D.ev_merge, 1);
			break;
		}
		if (r < 0) {
			tap_diag("host event %llu failed: %lld", (unsigned long long)(x % 6),
				 (long long)r);
			tap_fail_async(__FILE__, __LINE__, "host event failed");
			break;
		}
		atomic_fetch_add(&D.pages_moved, (uint64_t)r);
		usleep(50 + (x >> 58) * 8);
	}
	return NULL;
}

/* ---- the VMM ---------------------------------------------------------------- */

/* Collect the log into @bm (or'ed in) and re-protect what it reported. */
static void sync_log(uint64_t *bm)
{
	uint64_t tmp[NWORDS];
	int r;

	if (D.mode == M_RING) {
		vg_ring_collect(&G, SLOT, NPAGES, bm);
		return;
	}
	r = gpamm_vm_get_dirty_log(D.vm, SLOT, tmp);
	CHECK(r == 0, "GET: %d", r);
	if (D.mode == M_MANUAL) {
		r = gpamm_vm_clear_dirty_log(D.vm, SLOT, 0, NPAGES, tmp);
		CHECK(r == 0, "CLEAR: %d", r);
	}
	for (unsigned w = 0; w < NWORDS; w++)
		bm[w] |= tmp[w];
}

static uint64_t copy_pages(const uint64_t *bm, uint8_t *dst)
{
	uint64_t n = 0;

	for (uint64_t p = 0; p < NPAGES; p++) {
		if (!(bm[p / 64] >> (p % 64) & 1))
			continue;
		int r = gpamm_sim_read(D.h, D.hva + p * PSZ, dst + p * PSZ, PSZ);
		CHECK(r == 0, "host read of page %llu: %d", (unsigned long long)p, r);
		n++;
	}
	return n;
}

/* While the vCPUs stop, ring entries made meanwhile go to @bm. */
static void stop_tick(void *bm)
{
	if (D.mode == M_RING)
		sync_log(bm);
}

/* Sleep about @us, harvesting rings that stop a vCPU meanwhile (into @bm). */
static void run_for(unsigned us, uint64_t *bm)
{
	for (unsigned t = 0; t < us; t += 100) {
		if (D.mode == M_RING && vg_any_ring_full(&G))
			sync_log(bm);
		usleep(100);
	}
}

static void run_mode(enum mode mode)
{
	struct gpamm_sim_config scfg = { .page_shift = PS, .frames = FRAMES, .swap_pages = SWAP,
					 .checking = true };
	/* a walker with PTW, as on the CPUs where the seed lost dirty pages */
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3, .flags = GPAMM_VM_PTW };
	uint8_t *dst = malloc(LEN), *cur = malloc(LEN);
	uint64_t bm[NWORDS], seed = tap_seed() + 77 * (uint64_t)mode, host_seed;
	unsigned rounds = (unsigned)(24 * tap_scale()), round;
	uint64_t copied = 0, final_pages, stores = 0, loads = 0, full = 0;
	pthread_t ht;
	bool stuck = false;
	struct tap_rng rng;
	struct gpamm_live l0, l;

	gpamm_live_objects(&l0);
	ASSERT(dst && cur);
	tap_rng_seed(&rng, seed);
	memset(&D.c, 0, sizeof(D.c));
	D.mode = mode;
	atomic_store(&D.host_stop, 0);
	atomic_store(&D.ev_reclaim, 0);
	atomic_store(&D.ev_migrate, 0);
	atomic_store(&D.ev_merge, 0);
	atomic_store(&D.ev_mprotect, 0);
	atomic_store(&D.memfaults, 0);
	atomic_store(&D.pages_moved, 0);

	D.h = gpamm_host_sim_create(&scfg);
	ASSERT(D.h);
	cfg.host = D.h;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &D.vm), 0);
	vg_reset(&G, D.vm, mode == M_RING, mig_exit);
	if (mode == M_RING)
		ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(D.vm, RING_ENTRIES), 0);
	if (mode == M_MANUAL)
		ASSERT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(
				      D.vm, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(D.h, LEN, 0, &D.hva), 0);
	struct gpamm_userspace_memory_region r = {
		.slot = SLOT, .guest_phys_addr = GPA_BASE, .memory_size = LEN, .userspace_addr = D.hva,
	};
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(D.vm, &r), 0);
	for (unsigned i = 0; i < NVCPU; i++) {
		struct vc *c = &D.c[i];
		struct gpamm_vcpu *v;

		c->seed = seed * (i + 5) + 1;
		c->hot = tap_below(&rng, NPAGES);
		ASSERT_EQ_INT(gpamm_vcpu_create(D.vm, i, &v), 0);
		vg_add(&G, &c->g, v);
		ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, mig_guest, c, 0), 0);
		if (mode == M_RING)
			ASSERT(c->g.ring);
	}
	vg_start(&G);
	host_seed = tap_rand(&rng);
	ASSERT_EQ_INT(pthread_create(&ht, NULL, host_thread, &host_seed), 0);

	/* the guest runs a while before the migration starts */
	while (atomic_load(&D.c[0].stores) + atomic_load(&D.c[1].stores) < NPAGES &&
	       !vg_failed(&G))
		usleep(200);

	/* start: logging on while the vCPUs run, then copy everything */
	memset(bm, 0, sizeof(bm));
	r.flags = GPAMM_MEM_LOG_DIRTY_PAGES;
	CHECK(gpamm_vm_set_memory_region(D.vm, &r) == 0, "enabling logging failed");
	for (uint64_t off = 0; off < LEN; off += 64 * PSZ) {
		CHECK(gpamm_sim_read(D.h, D.hva + off, dst + off, 64 * PSZ) == 0, "round 0 read");
		if (mode == M_RING && vg_any_ring_full(&G))
			sync_log(bm); /* keep the vCPUs going; copied in round 1 */
	}
	for (round = 1; round <= rounds && !G.errors && !vg_failed(&G); round++) {
		run_for(200 + (unsigned)tap_below(&rng, 1500), bm);
		sync_log(bm);
		copied += copy_pages(bm, dst);
		memset(bm, 0, sizeof(bm));
	}

	/* stop-and-copy */
	stuck = !vg_stop(&G, 100, 100000, stop_tick, bm);
	sync_log(bm);
	final_pages = copy_pages(bm, dst);

	atomic_store(&D.host_stop, 1);
	pthread_join(ht, NULL);
	if (!stuck) {
		CHECK(gpamm_sim_read(D.h, D.hva, cur, LEN) == 0, "final host read");
		uint64_t bad = 0;
		for (uint64_t p = 0; p < NPAGES; p++) {
			if (!memcmp(dst + p * PSZ, cur + p * PSZ, PSZ))
				continue;
			if (bad++ < 8)
				tap_diag("%s: page %llu differs after migration (reported in the final "
					 "collection: %d)", mode_name[mode], (unsigned long long)p,
					 (int)(bm[p / 64] >> (p % 64) & 1));
		}
		CHECK(bad == 0, "%s: %llu pages lost", mode_name[mode], (unsigned long long)bad);
	}

	vg_quit(&G);
	for (unsigned i = 0; i < NVCPU; i++) {
		stores += atomic_load(&D.c[i].stores);
		loads += atomic_load(&D.c[i].loads);
		full += atomic_load(&D.c[i].g.ring_full_exits);
	}
	struct gpamm_vm_stats st;
	gpamm_vm_stats(D.vm, &st);
	tap_diag("%s: %u rounds, %llu pages copied in rounds, %llu in the final copy; %llu "
		 "accesses (%llu loads); host: %llu reclaims, %llu migrations, %llu merges, "
		 "%llu mprotects, %llu pages moved, %llu memory-fault exits; %llu faults (%llu retries), %llu ring entries, %llu ring-full "
		 "exits, %llu stale", mode_name[mode], round - 1, (unsigned long long)copied,
		 (unsigned long long)final_pages, (unsigned long long)stores,
		 (unsigned long long)loads, (unsigned long long)D.ev_reclaim,
		 (unsigned long long)D.ev_migrate, (unsigned long long)D.ev_merge,
		 (unsigned long long)D.ev_mprotect, (unsigned long long)D.pages_moved,
		 (unsigned long long)D.memfaults, (unsigned long long)st.faults,
		 (unsigned long long)st.fault_retries, (unsigned long long)G.ring_collected,
		 (unsigned long long)full, (unsigned long long)st.stale_accesses);
	/* tear down first, so that a failure here leaks nothing */
	struct gpamm_host_stats hs;
	gpamm_vm_destroy(D.vm);
	int unmapped = gpamm_sim_munmap(D.h, D.hva, LEN);
	gpamm_host_stats(D.h, &hs);
	gpamm_host_destroy(D.h);
	free(dst);
	free(cur);
	gpamm_live_objects(&l);
	ASSERT(!stuck);
	ASSERT_EQ(G.errors, 0);
	ASSERT_EQ(st.stale_accesses, 0);
	ASSERT_EQ(st.pinned, 0);
	ASSERT(copied > 0);
	ASSERT(D.pages_moved > 0);
	if (mode == M_RING)
		ASSERT_EQ(G.ring_collected, G.ring_reset);
	ASSERT_EQ_INT(unmapped, 0);
	ASSERT_EQ(hs.pinned, 0);
	ASSERT_EQ(hs.frames_live, 0);
	ASSERT_EQ(hs.stale_accesses, 0);
	ASSERT_EQ(l.vms + l.vcpus + l.tpools + l.threads, l0.vms + l0.vcpus + l0.tpools + l0.threads);
}

static void test_migration_manual_protect(void)
{
	run_mode(M_MANUAL);
}

static void test_migration_ring(void)
{
	run_mode(M_RING);
}

static void test_migration_classic(void)
{
	run_mode(M_CLASSIC);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_migration_manual_protect);
	TEST(test_migration_ring);
	TEST(test_migration_classic);
	return tap_done();
}
