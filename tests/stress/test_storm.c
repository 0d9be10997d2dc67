// SPDX-License-Identifier: MIT
/*
 * The storm: everything at once, on the sim host in checking mode.
 *
 * vCPU threads run random 8-byte reads and writes over two logging slots.
 * The VMM thread runs dirty-log rounds (manual protect: GET, then CLEAR of
 * what GET reported), turns a slot's logging off and on again now and then
 * (FLAGS_ONLY, which must write-protect it), ages ranges, and every few
 * rounds pauses the vCPUs and compares guest memory, read by the host
 * itself, with the model. A host thread fires every host event at random: reclaim to swap
 * (the guest faults pages back in), migration, KSM merge (after the host
 * fills pages with identical bytes; a guest write must break the share),
 * MADV_DONTNEED (the guest then reads zeros), mprotect read-only and back
 * (guest writes exit with GPAMM_EXIT_MEMORY_FAULT meanwhile; the vCPU
 * thread waits and runs again), host aging, and the whole life cycle of a
 * slot: delete, munmap its memory, mmap fresh memory, create it again.
 *
 * Contents model. Each vCPU owns every NVCPU-th page and is the only guest
 * writer of it; it writes (vcpu id + 1, counter) values into the first
 * MW words of its pages and records them in a shadow copy. Words past MW
 * are never written by anyone, so they read as zero always (through MMIO
 * too). Events that change contents (dontneed, the host's fill, a slot's
 * rebirth) first freeze the pages they touch: the host thread publishes
 * the frozen range and waits until every vCPU has acknowledged it, after
 * which no guest writes those pages (reads go on), then it changes the
 * pages and the shadow together. A vCPU checks every read of a word of its
 * own unfrozen pages against the shadow.
 *
 * Dirty-log model (DESIGN.md contract 2, the dirty_log_test invariant). A
 * VMM phase counter is odd while a round runs GET..CLEAR and even between
 * rounds. After each completed write the vCPU records the phase it reads
 * then (the write completed before that phase ended). A page not reported
 * by round r whose last write completed in an even phase before it must
 * have been reported by an earlier round whose CLEAR ended after that write
 * (else the write was lost for migration); a page reported must have been
 * written since its last CLEAR, or have a write in flight.
 *
 * Asserted: no stale access, contents as modelled (during the run and at
 * the end), no lost dirty page, no page reported that was not written,
 * no pin held while the vCPUs are paused, and after VM destroy and the
 * munmap of everything, no frame live and all accounting back to zero.
 * The seed (tap_seed) drives every random choice; thread timing does not
 * replay. GPAMM_TEST_SCALE scales the number of host events (3000) and
 * the wall-clock cap on them (25 s), which only a loaded machine reaches.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness/tap.h"
#include "harness/vmtest.h"

#define PS 12
#define PSZ (1ULL << PS)
#define WORDS (PSZ / 8)
#define PAGES 256            /* per slot */
#define LEN (PAGES * PSZ)
#define NSLOT 2
#define NVCPU 3
#define MW 8                 /* modelled words at the start of each page */
#define FRAMES (8 * NSLOT * PAGES)
#define SWAP (2 * NSLOT * PAGES)
#define NWIN 64              /* mprotect windows remembered */
#define MAX_ERRS 8           /* failures printed per reporter */

static const uint64_t slot_gpa[NSLOT] = { 1ULL << 30, 2ULL << 30 };

static struct gpamm_host *host;
static struct gpamm_vm *vm;

/* ---- shared model state ----------------------------------------------------------- */

/* Guest memory as it should be. Written by the owning vCPU (unfrozen pages),
 * by the host thread (frozen pages, model_lock held); read by the VMM with
 * the vCPUs paused and model_lock held. */
static uint64_t shadow[NSLOT][PAGES][MW];
static pthread_mutex_t model_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t slot_hva[NSLOT];

/* the frozen range: pages [lo, hi) of slot fz_slot (-1: none) */
static _Atomic int fz_slot = -1;
static _Atomic uint64_t fz_lo, fz_hi, fz_epoch;

/* dirty-log model */
static _Atomic uint64_t phase = 2;                 /* odd during GET..CLEAR */
static _Atomic uint64_t lastb[NSLOT][PAGES];       /* phase after the last completed write (0: none) */
static _Atomic uint8_t inflight[NSLOT][PAGES];
static uint64_t covered[NSLOT][PAGES];             /* writes with lastb <= this are captured */
static uint64_t cleared_at[NSLOT][PAGES];          /* odd phase of the round that last cleared it */
static pthread_mutex_t dl_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t dl_missed, dl_spurious, dl_rounds, dl_reported, logging_toggles;

/* mprotect windows: ro_gen is odd while window (ro_gen - 1) / 2 is read-only */
static _Atomic uint64_t ro_gen;
static struct { _Atomic int slot; _Atomic uint64_t lo, hi; } ro_win[NWIN];

/* pausing the vCPUs */
static pthread_mutex_t pause_mx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pause_cv = PTHREAD_COND_INITIALIZER;
static int pause_req, parked, alive;

static atomic_int stop_guests, stop_vmm;
static _Atomic uint64_t content_errors;

/* host events done */
enum ev { EV_RECLAIM, EV_MIGRATE, EV_MERGE, EV_FILL_MERGE, EV_DONTNEED, EV_MPROTECT,
	  EV_REBIRTH, EV_AGE, EV_NR };
static const char *const ev_name[EV_NR] = { "reclaim", "migrate", "merge", "fill+merge",
					     "dontneed", "mprotect", "slot rebirth", "aging" };
static uint64_t ev_count[EV_NR], ev_pages[EV_NR];

/* ---- vCPUs --------------------------------------------------------------------------- */

struct vc {
	struct gpamm_vcpu *v;
	pthread_t th;
	unsigned id;
	uint64_t rng;
	_Atomic uint64_t ack;       /* last freeze epoch seen */
	uint64_t counter;
	uint64_t ro_gen_before;     /* ro_gen read before the current write */
	/* statistics, read after join */
	uint64_t reads, writes, checked, mmio_reads, memfaults, requests, errors;
} vcs[NVCPU];

static void report(uint64_t *errs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(uint64_t *errs, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	if (++*errs > MAX_ERRS) {
		if (*errs == MAX_ERRS + 1)
			tap_fail_async(__FILE__, __LINE__, "(more failures of this kind, not shown)");
		return;
	}
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	tap_fail_async(__FILE__, __LINE__, buf);
}

static bool frozen(int s, uint64_t p)
{
	return atomic_load(&fz_slot) == s && p >= atomic_load(&fz_lo) && p < atomic_load(&fz_hi);
}

static int guest(struct gpamm_vcpu *v, void *arg)
{
	struct vc *c = arg;

	while (!atomic_load_explicit(&stop_guests, memory_order_relaxed)) {
		/* Everything this vCPU did before is done; from here on it sees
		 * the frozen range of this epoch or a later one. */
		atomic_store_explicit(&c->ack, atomic_load(&fz_epoch), memory_order_seq_cst);
		uint64_t x = tap_xorshift(&c->rng);
		int s = (int)(x & 1);
		uint64_t p = (x >> 8) % PAGES;
		bool own = p % NVCPU == c->id, fz = frozen(s, p);
		unsigned w = (unsigned)((x >> 24) % MW);
		bool beyond = ((x >> 32) & 15) == 0; /* a word nobody writes */
		uint64_t gpa;

		if (beyond)
			w = MW + (unsigned)((x >> 36) % (WORDS - MW));
		gpa = slot_gpa[s] + p * PSZ + w * 8;
		if (own && !fz && !beyond && ((x >> 40) % 100) < 45) {
			uint64_t val = ((uint64_t)(c->id + 1) << 56) | ++c->counter;

			atomic_store(&inflight[s][p], 1);
			c->ro_gen_before = atomic_load(&ro_gen);
			gpamm_guest_write(v, gpa, 8, val);
			shadow[s][p][w] = val;
			atomic_store(&lastb[s][p], atomic_load(&phase));
			atomic_store(&inflight[s][p], 0);
			c->writes++;
		} else {
			uint64_t got = gpamm_guest_read(v, gpa, 8);

			c->reads++;
			if (beyond) {
				if (got)
					report(&c->errors, "vcpu %u: word %u of slot %d page %llu reads 0x%llx, never written",
					       c->id, w, s, (unsigned long long)p, (unsigned long long)got);
			} else if (own && !fz) {
				c->checked++;
				if (got != shadow[s][p][w])
					report(&c->errors, "vcpu %u: slot %d page %llu word %u reads 0x%llx, expected 0x%llx",
					       c->id, s, (unsigned long long)p, w, (unsigned long long)got,
					       (unsigned long long)shadow[s][p][w]);
			}
		}
	}
	return 0;
}

/* Which slot and page a GPA is, or -1. */
static int gpa_page(uint64_t gpa, uint64_t *page)
{
	for (int s = 0; s < NSLOT; s++)
		if (gpa - slot_gpa[s] < LEN) {
			*page = (gpa - slot_gpa[s]) / PSZ;
			return s;
		}
	return -1;
}

/* A memory-fault exit is right only for a write, into a window that was
 * read-only at some time during the access. */
static void check_memfault(struct vc *c, const struct gpamm_run *run)
{
	uint64_t g0 = c->ro_gen_before, g = atomic_load(&ro_gen), page = 0;
	int s = gpa_page(run->memory_fault.gpa, &page);
	uint64_t klo = g0 / 2, khi;
	bool in = false;

	if (!(run->memory_fault.flags & GPAMM_MEMORY_EXIT_FLAG_WRITE) ||
	    run->memory_fault.error != -EFAULT || run->memory_fault.size != PSZ || s < 0) {
		report(&c->errors, "vcpu %u: memory fault at 0x%llx, flags %llu, size %llu, error %d",
		       c->id, (unsigned long long)run->memory_fault.gpa,
		       (unsigned long long)run->memory_fault.flags,
		       (unsigned long long)run->memory_fault.size, run->memory_fault.error);
		return;
	}
	if (g == 0 || (g - 1) / 2 < klo) {
		report(&c->errors, "vcpu %u: write fault at slot %d page %llu with no read-only window",
		       c->id, s, (unsigned long long)page);
		return;
	}
	khi = (g - 1) / 2;
	if (khi - klo >= NWIN)
		klo = khi - NWIN + 1;
	for (uint64_t k = klo; k <= khi && !in; k++)
		in = atomic_load(&ro_win[k % NWIN].slot) == s && page >= atomic_load(&ro_win[k % NWIN].lo) &&
		     page < atomic_load(&ro_win[k % NWIN].hi);
	if (!in)
		report(&c->errors, "vcpu %u: write fault at slot %d page %llu, outside every read-only window",
		       c->id, s, (unsigned long long)page);
}

static void vcpu_loop(struct vc *c);

/* A vCPU thread that ends early must not leave the others waiting for it. */
static void *vcpu_thread(void *arg)
{
	struct vc *c = arg;

	vcpu_loop(c);
	atomic_store(&c->ack, UINT64_MAX);
	pthread_mutex_lock(&pause_mx);
	alive--;
	pthread_cond_broadcast(&pause_cv);
	pthread_mutex_unlock(&pause_mx);
	return NULL;
}

static void vcpu_loop(struct vc *c)
{
	struct gpamm_run *run = gpamm_vcpu_run_state(c->v);

	for (;;) {
		int rc = gpamm_vcpu_run(c->v);

		if (rc) {
			report(&c->errors, "vcpu %u: run returned %d", c->id, rc);
			return;
		}
		switch (run->exit_reason) {
		case GPAMM_EXIT_DONE:
			return;
		case GPAMM_EXIT_MMIO:
			/* only reads of a slot that is being reborn go here */
			if (run->mmio.is_write)
				report(&c->errors, "vcpu %u: MMIO write at 0x%llx", c->id,
				       (unsigned long long)run->mmio.phys_addr);
			memset(run->mmio.data, 0, sizeof(run->mmio.data));
			c->mmio_reads++;
			break;
		case GPAMM_EXIT_MEMORY_FAULT:
			c->memfaults++;
			check_memfault(c, run);
			usleep(20); /* the host makes the page writable again; retry */
			break;
		case GPAMM_EXIT_REQUEST:
			c->requests++;
			pthread_mutex_lock(&pause_mx);
			if (pause_req) {
				parked++;
				pthread_cond_broadcast(&pause_cv);
				while (pause_req)
					pthread_cond_wait(&pause_cv, &pause_mx);
				parked--;
			}
			pthread_mutex_unlock(&pause_mx);
			break;
		default:
			report(&c->errors, "vcpu %u: unexpected exit %u", c->id, run->exit_reason);
			return;
		}
	}
}

static void pause_vcpus(void)
{
	pthread_mutex_lock(&pause_mx);
	pause_req = 1;
	pthread_mutex_unlock(&pause_mx);
	for (int i = 0; i < NVCPU; i++)
		gpamm_vcpu_kick(vcs[i].v);
	pthread_mutex_lock(&pause_mx);
	while (parked < alive)
		pthread_cond_wait(&pause_cv, &pause_mx);
	pthread_mutex_unlock(&pause_mx);
}

static void resume_vcpus(void)
{
	pthread_mutex_lock(&pause_mx);
	pause_req = 0;
	pthread_cond_broadcast(&pause_cv);
	pthread_mutex_unlock(&pause_mx);
}

/* ---- checks ------------------------------------------------------------------------------- */

/* Guest memory, read by the host, against the shadow. Context: model_lock
 * held and no guest writing (paused or stopped). */
static uint64_t verify_contents(const char *when)
{
	static uint64_t buf[PAGES * WORDS];
	uint64_t bad = 0;

	for (int s = 0; s < NSLOT; s++) {
		int rc = gpamm_sim_read(host, atomic_load(&slot_hva[s]), buf, LEN);
		if (rc) {
			tap_diag("%s: gpamm_sim_read of slot %d: %d", when, s, rc);
			bad++;
			continue;
		}
		for (uint64_t p = 0; p < PAGES; p++)
			for (uint64_t w = 0; w < WORDS; w++) {
				uint64_t want = w < MW ? shadow[s][p][w] : 0, got = buf[p * WORDS + w];
				if (got != want && ++bad <= MAX_ERRS)
					tap_diag("%s: slot %d page %llu word %llu holds 0x%llx, expected 0x%llx",
						 when, s, (unsigned long long)p, (unsigned long long)w,
						 (unsigned long long)got, (unsigned long long)want);
			}
	}
	atomic_fetch_add(&content_errors, bad);
	return bad;
}

/* No pins while no vCPU is inside a fault, and no stale access so far. */
static void check_quiet(const char *when)
{
	struct gpamm_vm_stats st;
	struct gpamm_host_stats hs;

	gpamm_vm_stats(vm, &st);
	gpamm_host_stats(host, &hs);
	if (st.stale_accesses || st.pinned || hs.pinned) {
		char m[160];
		snprintf(m, sizeof m, "%s: %llu stale accesses, %llu pins (MMU), %llu pins (host)", when,
			 (unsigned long long)st.stale_accesses, (unsigned long long)st.pinned,
			 (unsigned long long)hs.pinned);
		tap_fail_async(__FILE__, __LINE__, m);
	}
}

/* One dirty-log round over both slots. Context: the VMM thread (or main at the end). */
static void dirty_round(void)
{
	static uint64_t bm[PAGES / 64];
	static uint64_t errs;

	pthread_mutex_lock(&dl_lock);
	uint64_t odd = atomic_fetch_add(&phase, 1) + 1;
	for (int s = 0; s < NSLOT; s++) {
		int rc = gpamm_vm_get_dirty_log(vm, (uint32_t)s, bm);
		if (rc) {
			report(&errs, "GET slot %d: %d", s, rc);
			continue;
		}
		for (uint64_t p = 0; p < PAGES; p++) {
			bool rep = bm[p / 64] >> (p % 64) & 1;
			uint8_t fl = atomic_load(&inflight[s][p]);
			uint64_t b = atomic_load(&lastb[s][p]);

			if (!rep && b && b < odd && b > covered[s][p]) {
				dl_missed++;
				report(&errs, "round %llu: slot %d page %llu written in phase %llu not reported (captured up to %llu)",
				       (unsigned long long)dl_rounds, s, (unsigned long long)p,
				       (unsigned long long)b, (unsigned long long)covered[s][p]);
			}
			if (rep && !fl && b < cleared_at[s][p]) {
				dl_spurious++;
				report(&errs, "round %llu: slot %d page %llu reported dirty, last written in phase %llu, cleared in %llu",
				       (unsigned long long)dl_rounds, s, (unsigned long long)p,
				       (unsigned long long)b, (unsigned long long)cleared_at[s][p]);
			}
			dl_reported += rep;
		}
		rc = gpamm_vm_clear_dirty_log(vm, (uint32_t)s, 0, PAGES, bm);
		if (rc)
			report(&errs, "CLEAR slot %d: %d", s, rc);
		for (uint64_t p = 0; p < PAGES; p++)
			if (bm[p / 64] >> (p % 64) & 1)
				covered[s][p] = cleared_at[s][p] = odd;
	}
	atomic_fetch_add(&phase, 1);
	dl_rounds++;
	pthread_mutex_unlock(&dl_lock);
}

static void set_slot(int s, uint64_t size, uint64_t hva, uint32_t flags)
{
	struct gpamm_userspace_memory_region r = { .slot = (uint32_t)s,
		.flags = flags, .guest_phys_addr = slot_gpa[s],
		.memory_size = size, .userspace_addr = hva };
	int rc = gpamm_vm_set_memory_region(vm, &r);
	if (rc) {
		char m[96];
		snprintf(m, sizeof m, "set_memory_region slot %d size %llu flags %u: %d", s,
			 (unsigned long long)size, flags, rc);
		tap_fail_async(__FILE__, __LINE__, m);
	}
}

static void *vmm_thread(void *arg)
{
	struct tap_rng rng;
	uint64_t errs = 0;

	tap_rng_seed(&rng, *(uint64_t *)arg);
	for (unsigned r = 1; !atomic_load(&stop_vmm); r++) {
		dirty_round();
		if (tap_below(&rng, 8) == 0) {
			/* VMM-side aging while everything runs: only the return codes are known */
			int s = (int)tap_below(&rng, NSLOT);
			uint64_t a = tap_below(&rng, PAGES), n = 1 + tap_below(&rng, PAGES - a);
			int64_t m = gpamm_vm_mark_idle(vm, slot_gpa[s] + a * PSZ, n * PSZ);
			int64_t y = gpamm_vm_test_young(vm, slot_gpa[s] + a * PSZ, n * PSZ, NULL);
			if (m < 0 || (uint64_t)m > n || y < 0 || (uint64_t)y > n)
				report(&errs, "aging slot %d pages %llu+%llu: mark_idle %lld, test_young %lld",
				       s, (unsigned long long)a, (unsigned long long)n, (long long)m,
				       (long long)y);
		}
		if (r % 24 == 12) {
			/* logging off for a while (writes go unlogged), then on again:
			 * FLAGS_ONLY must write-protect every page that became writable */
			int s = (int)tap_below(&rng, NSLOT);
			pthread_mutex_lock(&dl_lock);
			set_slot(s, LEN, atomic_load(&slot_hva[s]), 0);
			usleep(100 + tap_below(&rng, 400));
			set_slot(s, LEN, atomic_load(&slot_hva[s]), GPAMM_MEM_LOG_DIRTY_PAGES);
			/* Writes that completed before now are in the migration's full
			 * copy; later ones must be logged. A write that completes between
			 * the call's return and the bump may be logged without counting as
			 * new: it is neither required nor refused. */
			uint64_t now = atomic_fetch_add(&phase, 2);
			for (uint64_t p = 0; p < PAGES; p++) {
				covered[s][p] = now + 1;
				cleared_at[s][p] = now;
			}
			logging_toggles++;
			pthread_mutex_unlock(&dl_lock);
		}
		if (r % 16 == 0) {
			char when[48];
			pause_vcpus();
			pthread_mutex_lock(&model_lock);
			snprintf(when, sizeof when, "pause after round %u", r);
			verify_contents(when);
			check_quiet(when);
			pthread_mutex_unlock(&model_lock);
			resume_vcpus();
		}
		usleep(200 + tap_below(&rng, 800));
	}
	return NULL;
}

/* ---- host events --------------------------------------------------------------------------- */

/* Stop guest writes to pages [lo, hi) of slot s: returns once every vCPU has seen it. */
static void freeze(int s, uint64_t lo, uint64_t hi)
{
	atomic_store(&fz_lo, lo);
	atomic_store(&fz_hi, hi);
	atomic_store(&fz_slot, s);
	uint64_t e = atomic_fetch_add(&fz_epoch, 1) + 1;
	for (int i = 0; i < NVCPU; i++)
		while (atomic_load(&vcs[i].ack) < e)
			usleep(10);
}

static void thaw(void)
{
	atomic_store(&fz_slot, -1);
	atomic_fetch_add(&fz_epoch, 1);
}

static uint64_t hva_of(int s, uint64_t page)
{
	return atomic_load(&slot_hva[s]) + page * PSZ;
}

/* A random run of pages of a slot: [*lo, *hi), at most @max long. */
static int pick(struct tap_rng *rng, uint64_t max, uint64_t *lo, uint64_t *hi)
{
	int s = (int)tap_below(rng, NSLOT);
	uint64_t n = 1 + tap_below(rng, max);

	*lo = tap_below(rng, PAGES);
	*hi = *lo + n > PAGES ? PAGES : *lo + n;
	return s;
}

static void host_event(struct tap_rng *rng, enum ev ev, uint64_t *errs)
{
	uint64_t lo, hi;
	int s = pick(rng, PAGES / 4, &lo, &hi);
	int64_t n = 0;
	int rc = 0;

	if (ev >= EV_NR)
		return;
	switch (ev) {
	case EV_RECLAIM:
		if (tap_below(rng, 4) == 0) { /* both VMAs, and the gap between them */
			uint64_t a = atomic_load(&slot_hva[0]), b = atomic_load(&slot_hva[1]);
			uint64_t x = a < b ? a : b, y = (a < b ? b : a) + LEN;
			n = gpamm_sim_reclaim(host, x, y - x, tap_below(rng, 2 * PAGES));
		} else {
			n = gpamm_sim_reclaim(host, hva_of(s, lo), (hi - lo) * PSZ, 1 + tap_below(rng, hi - lo));
		}
		if (n < 0 && n != -ENOSPC)
			report(errs, "reclaim: %lld", (long long)n);
		break;
	case EV_MIGRATE:
		n = gpamm_sim_migrate(host, hva_of(s, lo), (hi - lo) * PSZ);
		if (n < 0 && n != -ENOMEM)
			report(errs, "migrate: %lld", (long long)n);
		break;
	case EV_MERGE:
		/* zero pages (read but never written, or dontneed'ed and read) merge */
		n = gpamm_sim_merge(host, hva_of(s, 0), LEN);
		if (n < 0)
			report(errs, "merge: %lld", (long long)n);
		break;
	case EV_FILL_MERGE: {
		/* the VMM fills pages with identical bytes, then KSM merges them */
		uint64_t pat[MW], k = 2 + tap_below(rng, 15);
		hi = lo + k > PAGES ? PAGES : lo + k;
		for (int w = 0; w < MW; w++)
			pat[w] = tap_rand(rng) | 1;
		freeze(s, lo, hi);
		pthread_mutex_lock(&model_lock);
		for (uint64_t p = lo; p < hi; p++) {
			rc = gpamm_sim_write(host, hva_of(s, p), pat, sizeof(pat));
			if (rc)
				report(errs, "host write slot %d page %llu: %d", s, (unsigned long long)p, rc);
			memcpy(shadow[s][p], pat, sizeof(pat));
		}
		n = gpamm_sim_merge(host, hva_of(s, lo), (hi - lo) * PSZ);
		if (n < 0)
			report(errs, "merge: %lld", (long long)n);
		pthread_mutex_unlock(&model_lock);
		thaw();
		break;
	}
	case EV_DONTNEED:
		freeze(s, lo, hi);
		pthread_mutex_lock(&model_lock);
		rc = gpamm_sim_madv_dontneed(host, hva_of(s, lo), (hi - lo) * PSZ);
		if (rc)
			report(errs, "dontneed: %d", rc);
		for (uint64_t p = lo; p < hi; p++)
			memset(shadow[s][p], 0, sizeof(shadow[s][p]));
		n = (int64_t)(hi - lo);
		pthread_mutex_unlock(&model_lock);
		thaw();
		break;
	case EV_MPROTECT: {
		uint64_t k = atomic_load(&ro_gen) / 2;
		atomic_store(&ro_win[k % NWIN].slot, s);
		atomic_store(&ro_win[k % NWIN].lo, lo);
		atomic_store(&ro_win[k % NWIN].hi, hi);
		atomic_fetch_add(&ro_gen, 1); /* odd: window k */
		rc = gpamm_sim_mprotect(host, hva_of(s, lo), (hi - lo) * PSZ, false);
		if (rc)
			report(errs, "mprotect read-only: %d", rc);
		usleep(500 + tap_below(rng, 2000));
		rc = gpamm_sim_mprotect(host, hva_of(s, lo), (hi - lo) * PSZ, true);
		if (rc)
			report(errs, "mprotect writable: %d", rc);
		atomic_fetch_add(&ro_gen, 1);
		n = (int64_t)(hi - lo);
		break;
	}
	case EV_REBIRTH: {
		uint64_t old = atomic_load(&slot_hva[s]), fresh = 0;
		freeze(s, 0, PAGES);
		pthread_mutex_lock(&dl_lock);
		pthread_mutex_lock(&model_lock);
		set_slot(s, 0, old, 0);
		usleep(200 + tap_below(rng, 800)); /* guest reads of the slot exit as MMIO */
		rc = gpamm_sim_munmap(host, old, LEN);
		if (rc)
			report(errs, "munmap: %d", rc);
		rc = gpamm_sim_mmap(host, LEN, 0, &fresh);
		if (rc)
			report(errs, "mmap: %d", rc);
		memset(shadow[s], 0, sizeof(shadow[s]));
		atomic_store(&slot_hva[s], fresh);
		set_slot(s, LEN, fresh, GPAMM_MEM_LOG_DIRTY_PAGES);
		/* the old memory's writes went with it; the new bitmap starts clear */
		uint64_t now = atomic_load(&phase);
		for (uint64_t p = 0; p < PAGES; p++)
			covered[s][p] = cleared_at[s][p] = now + 1;
		atomic_fetch_add(&phase, 2);
		pthread_mutex_unlock(&model_lock);
		pthread_mutex_unlock(&dl_lock);
		thaw();
		n = PAGES;
		break;
	}
	case EV_AGE: {
		bool y;
		rc = gpamm_sim_clear_young(host, hva_of(s, lo), (hi - lo) * PSZ, tap_below(rng, 2), &y);
		if (!rc)
			rc = gpamm_sim_test_young(host, hva_of(s, 0), LEN, &y);
		if (rc)
			report(errs, "aging: %d", rc);
		break;
	}
	default:
		break;
	}
	ev_count[ev]++;
	if (n > 0)
		ev_pages[ev] += (uint64_t)n;
}

struct host_args {
	uint64_t seed;
	unsigned events;
	double deadline;   /* CLOCK_MONOTONIC seconds: stop early on a loaded machine */
	unsigned done;
	uint64_t errs;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *host_thread(void *arg)
{
	struct host_args *ha = arg;
	struct tap_rng rng;

	tap_rng_seed(&rng, ha->seed);
	/* every kind once, then at random */
	for (unsigned i = 0; i < ha->events; i++) {
		enum ev ev = i < EV_NR ? (enum ev)i : (enum ev)tap_below(&rng, EV_NR);
		host_event(&rng, ev, &ha->errs);
		usleep(tap_below(&rng, 400));
		ha->done = i + 1;
		if (i >= 4 * EV_NR && now_s() > ha->deadline)
			break;
	}
	return NULL;
}

/* ---- the test -------------------------------------------------------------------------------- */

static void test_storm(void)
{
	struct gpamm_sim_config sc = { .page_shift = PS, .frames = FRAMES, .swap_pages = SWAP,
				       .checking = true };
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };
	uint64_t seed = tap_seed(), vmm_seed = seed ^ 0x766d6d;
	struct host_args ha = { .seed = seed ^ 0x686f7374,
				.events = (unsigned)(3000 * tap_scale()) };
	pthread_t hth, vth;
	double t0 = now_s();

	/* about 10 s on an idle machine at -O2; never much more than 25 s per unit of scale */
	ha.deadline = t0 + 25 * tap_scale();

	host = gpamm_host_sim_create(&sc);
	ASSERT(host);
	cfg.host = host;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	ASSERT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(vm, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0);
	for (int s = 0; s < NSLOT; s++) {
		uint64_t hva;
		ASSERT_EQ_INT(gpamm_sim_mmap(host, LEN, 0, &hva), 0);
		atomic_store(&slot_hva[s], hva);
		struct gpamm_userspace_memory_region r = { .slot = (uint32_t)s,
			.flags = GPAMM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = slot_gpa[s],
			.memory_size = LEN, .userspace_addr = hva };
		ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);
	}
	for (unsigned i = 0; i < NVCPU; i++) {
		vcs[i].id = i;
		vcs[i].rng = (seed + 1) * 0x9e3779b97f4a7c15ULL + i * 0x632be59bd9b4e019ULL;
		if (!vcs[i].rng)
			vcs[i].rng = 1;
		ASSERT_EQ_INT(gpamm_vcpu_create(vm, i, &vcs[i].v), 0);
		ASSERT_EQ_INT(gpamm_vcpu_set_guest(vcs[i].v, guest, &vcs[i], 0), 0);
	}
	for (uint64_t p = 0; p < PAGES; p++)
		for (int s = 0; s < NSLOT; s++)
			cleared_at[s][p] = 1; /* below every phase a write can record */
	alive = NVCPU;
	for (unsigned i = 0; i < NVCPU; i++)
		ASSERT_EQ_INT(pthread_create(&vcs[i].th, NULL, vcpu_thread, &vcs[i]), 0);
	ASSERT_EQ_INT(pthread_create(&vth, NULL, vmm_thread, &vmm_seed), 0);
	ASSERT_EQ_INT(pthread_create(&hth, NULL, host_thread, &ha), 0);

	pthread_join(hth, NULL);
	atomic_store(&stop_vmm, 1);
	pthread_join(vth, NULL);
	atomic_store(&stop_guests, 1);
	for (unsigned i = 0; i < NVCPU; i++)
		pthread_join(vcs[i].th, NULL);

	/* everything has stopped: the last round must account for every write */
	dirty_round();
	pthread_mutex_lock(&model_lock);
	uint64_t bad = verify_contents("at the end");
	pthread_mutex_unlock(&model_lock);
	check_quiet("at the end");

	struct gpamm_vm_stats st;
	struct gpamm_host_stats hs;
	uint64_t reads = 0, writes = 0, checked = 0, mmio = 0, memf = 0, verrs = 0;
	gpamm_vm_stats(vm, &st);
	gpamm_host_stats(host, &hs);
	for (unsigned i = 0; i < NVCPU; i++) {
		reads += vcs[i].reads;
		writes += vcs[i].writes;
		checked += vcs[i].checked;
		mmio += vcs[i].mmio_reads;
		memf += vcs[i].memfaults;
		verrs += vcs[i].errors;
	}
	if (ha.done < ha.events)
		tap_diag("time cap: %u of %u host events done", ha.done, ha.events);
	tap_diag("%.1f s: %llu reads (%llu checked), %llu writes, %llu MMIO reads, %llu memory-fault exits",
		 now_s() - t0, (unsigned long long)reads, (unsigned long long)checked,
		 (unsigned long long)writes, (unsigned long long)mmio, (unsigned long long)memf);
	tap_diag("faults %llu (fast %llu, slow %llu, retries %llu), remote flushes %llu, stale %llu",
		 (unsigned long long)st.faults, (unsigned long long)st.fast_faults,
		 (unsigned long long)st.slow_faults, (unsigned long long)st.fault_retries,
		 (unsigned long long)st.remote_flushes, (unsigned long long)st.stale_accesses);
	tap_diag("dirty log: %llu rounds, %llu pages reported, %llu missed, %llu spurious, logging off/on %llu times",
		 (unsigned long long)dl_rounds, (unsigned long long)dl_reported,
		 (unsigned long long)dl_missed, (unsigned long long)dl_spurious,
		 (unsigned long long)logging_toggles);
	for (int e = 0; e < EV_NR; e++)
		tap_diag("host event %-12s x%-4llu pages %llu", ev_name[e],
			 (unsigned long long)ev_count[e], (unsigned long long)ev_pages[e]);
	tap_diag("host: %llu events, %llu faults in, %llu swapped now, %llu frames live",
		 (unsigned long long)hs.events, (unsigned long long)hs.faults_in,
		 (unsigned long long)hs.swapped, (unsigned long long)hs.frames_live);

	ASSERT_EQ(st.stale_accesses, 0);
	ASSERT_EQ(hs.stale_accesses, 0);
	ASSERT_EQ(st.pinned, 0);
	ASSERT_EQ(hs.pinned, 0);
	ASSERT_EQ(bad, 0);
	ASSERT_EQ(atomic_load(&content_errors), 0);
	ASSERT_EQ(verrs, 0);
	ASSERT_EQ(ha.errs, 0);
	ASSERT_EQ(dl_missed, 0);
	ASSERT_EQ(dl_spurious, 0);
	/* the storm really blew: every kind of event did something, and the guest saw it */
	ASSERT(writes > 0 && checked > 0 && dl_reported > 0 && logging_toggles > 0);
	ASSERT(mmio > 0);
	ASSERT(memf > 0);
	for (int e = 0; e < EV_NR; e++)
		ASSERT(ev_count[e] > 0);
	ASSERT(ev_pages[EV_RECLAIM] > 0);
	ASSERT(ev_pages[EV_MIGRATE] > 0);
	ASSERT(ev_pages[EV_FILL_MERGE] > 0);
	ASSERT(st.fault_retries + st.slow_faults > 0);

	gpamm_vm_destroy(vm);
	vm = NULL;
	for (int s = 0; s < NSLOT; s++)
		ASSERT_EQ_INT(gpamm_sim_munmap(host, atomic_load(&slot_hva[s]), LEN), 0);
	gpamm_host_stats(host, &hs);
	ASSERT_EQ(hs.frames_live, 0);
	ASSERT_EQ(hs.pinned, 0);
	ASSERT_EQ(hs.swapped, 0);
	gpamm_host_destroy(host);
	host = NULL;
	struct gpamm_live l;
	gpamm_live_objects(&l);
	ASSERT_EQ(l.vms, 0);
	ASSERT_EQ(l.vcpus, 0);
	ASSERT_EQ(l.tpools, 0);
	ASSERT_EQ(l.threads, 0);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_storm);
	return tap_done();
}
