// SPDX-License-Identifier: MIT
/*
 * Folding and running for "gpamm replay" (the rule is in replay_run.h).
 *
 * The run: one VMM thread per vCPU (vCPU 0 on the caller's thread). The
 * folded accesses are one array; access j belongs to vCPU (j / chunk) % N.
 * The trace is cut into intervals of cfg->age_interval accesses; in each,
 * every vCPU's guest program replays its accesses of the interval and then
 * leaves with gpamm_guest_exit(). The VMM threads meet at a barrier, one of
 * them counts the young pages of the slot (gpamm_vm_test_young) and marks
 * them all idle again (gpamm_vm_mark_idle), and all go on. No vCPU is in
 * guest mode while that happens, so each sample is exactly the set of pages
 * accessed in its interval.
 *
 * Every store writes bytes that are never zero, into guest RAM that starts
 * zero-filled; at the end the VMM reads guest RAM back and checks that the
 * frames that changed are exactly the frames the trace stored to.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "replay_run.h"

/* ---- folding ---------------------------------------------------------------- */

void replay_fold_init(struct replay_fold *f, unsigned page_shift, bool ifetch)
{
	memset(f, 0, sizeof(*f));
	f->page_shift = page_shift;
	f->ifetch = ifetch;
}

void replay_fold_free(struct replay_fold *f)
{
	free(f->keys);
	free(f->vals);
	free(f->written);
	free(f->ops);
	memset(f, 0, sizeof(*f));
}

static inline uint64_t page_hash(uint64_t key, uint64_t cap)
{
	return (key * 0x9e3779b97f4a7c15ULL) >> (64 - __builtin_ctzll(cap));
}

static int map_grow(struct replay_fold *f)
{
	uint64_t ncap = f->cap ? f->cap * 2 : 1024;
	uint64_t *nkeys = calloc(ncap, sizeof(*nkeys));
	uint32_t *nvals = malloc(ncap * sizeof(*nvals));

	if (!nkeys || !nvals) {
		free(nkeys);
		free(nvals);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < f->cap; i++) {
		uint64_t h;

		if (!f->keys[i])
			continue;
		for (h = page_hash(f->keys[i], ncap); nkeys[h]; h = (h + 1) & (ncap - 1))
			;
		nkeys[h] = f->keys[i];
		nvals[h] = f->vals[i];
	}
	free(f->keys);
	free(f->vals);
	f->keys = nkeys;
	f->vals = nvals;
	f->cap = ncap;
	return 0;
}

/* The frame of process page @page, given the next one if it is new. */
static int page_rank(struct replay_fold *f, uint64_t page, uint32_t *rank)
{
	const uint64_t key = page + 1; /* page < 2^52: never 0, never wraps */
	uint64_t h;

	if ((f->npages + 1) * 2 > f->cap && map_grow(f))
		return -ENOMEM;
	for (h = page_hash(key, f->cap); f->keys[h]; h = (h + 1) & (f->cap - 1)) {
		if (f->keys[h] == key) {
			*rank = f->vals[h];
			return 0;
		}
	}
	if (f->npages >= UINT32_MAX)
		return -E2BIG;
	if (f->npages / 64 >= f->written_words) {
		uint64_t nw = f->written_words ? f->written_words * 2 : 64;
		uint64_t *w = realloc(f->written, nw * sizeof(*w));

		if (!w)
			return -ENOMEM;
		memset(w + f->written_words, 0, (nw - f->written_words) * sizeof(*w));
		f->written = w;
		f->written_words = nw;
	}
	f->keys[h] = key;
	f->vals[h] = (uint32_t)f->npages;
	*rank = (uint32_t)f->npages++;
	return 0;
}

static void mark_written(struct replay_fold *f, uint32_t rank)
{
	uint64_t bit = 1ULL << (rank % 64);

	if (!(f->written[rank / 64] & bit)) {
		f->written[rank / 64] |= bit;
		f->nwritten++;
	}
}

int replay_fold_add(struct replay_fold *f, const struct replay_rec *rec)
{
	const unsigned ps = f->page_shift;
	const uint64_t mask = (1ULL << ps) - 1;
	struct replay_op *op;
	uint64_t first = rec->addr >> ps, last = (rec->addr + rec->size - 1) >> ps;
	uint32_t r0, r1;
	int ret;

	f->records++;
	f->count[rec->type & 3]++;
	if (rec->type == REPLAY_I && !f->ifetch)
		return 0;
	if (f->nops == f->ops_cap) {
		uint64_t ncap = f->ops_cap ? f->ops_cap * 2 : 4096;
		struct replay_op *n = realloc(f->ops, ncap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		f->ops = n;
		f->ops_cap = ncap;
	}
	/* first-touch order: the first part's page before the second's */
	ret = page_rank(f, first, &r0);
	if (!ret)
		ret = last != first ? page_rank(f, last, &r1) : (r1 = r0, 0);
	if (ret)
		return ret;
	if (rec->type == REPLAY_S || rec->type == REPLAY_M) {
		mark_written(f, r0);
		mark_written(f, r1);
	}
	op = &f->ops[f->nops++];
	op->page0 = r0;
	op->page1 = r1;
	op->off = (uint16_t)(rec->addr & mask);
	op->size = (uint16_t)rec->size;
	op->type = rec->type;
	return 0;
}

/* ---- the run ------------------------------------------------------------------ */

struct shared {
	const struct replay_fold *f;
	const struct replay_cfg *cfg;
	struct gpamm_vm *vm;
	unsigned ps;
	uint64_t psz, slot_bytes;
	uint64_t interval, nint;
	pthread_barrier_t barrier;
	pthread_mutex_t start; /* held while the threads are created */
	struct replay_sample *series;
	uint64_t prev_slow, prev_fast;
	/* the first failure; every thread still meets the others at the barriers */
	pthread_mutex_t lock;
	int failed;
	char *err;
	size_t errlen;
};

struct rv {
	struct shared *sh;
	struct gpamm_vcpu *vcpu;
	unsigned idx;
	uint64_t loads, stores, translations;
	uint64_t sink;
	pthread_t th;
	bool started;
};

/* Bytes stored by accesses of more than 8 bytes: never zero. */
static uint8_t store_bytes[REPLAY_MAX_SIZE];

__attribute__((format(printf, 2, 3)))
static void fail(struct shared *sh, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&sh->lock);
	if (!sh->failed) {
		va_start(ap, fmt);
		vsnprintf(sh->err, sh->errlen, fmt, ap);
		va_end(ap);
	}
	__atomic_store_n(&sh->failed, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&sh->lock);
}

static bool failed(struct shared *sh)
{
	return __atomic_load_n(&sh->failed, __ATOMIC_RELAXED);
}

/* One part of an access, inside one page. */
static inline void part(struct rv *rv, uint64_t gpa, unsigned len, bool write, uint64_t val)
{
	uint8_t buf[REPLAY_MAX_SIZE];

	if (len <= 8) {
		if (write)
			gpamm_guest_write(rv->vcpu, gpa, len, val);
		else
			rv->sink += gpamm_guest_read(rv->vcpu, gpa, len);
	} else if (write) {
		gpamm_guest_write_buf(rv->vcpu, gpa, store_bytes, len);
	} else {
		gpamm_guest_read_buf(rv->vcpu, gpa, buf, len);
		rv->sink += buf[0];
	}
}

static inline void replay_op(struct rv *rv, const struct replay_op *o, uint64_t j)
{
	const struct shared *sh = rv->sh;
	const uint64_t g0 = (uint64_t)o->page0 << sh->ps | o->off;
	const uint64_t g1 = (uint64_t)o->page1 << sh->ps;
	const unsigned size = o->size;
	const unsigned len0 = o->off + size > sh->psz ? (unsigned)(sh->psz - o->off) : size;
	const unsigned parts = len0 < size ? 2 : 1;
	const uint64_t val = 0x0101010101010101ULL * (1 + j % 255);

	if (o->type != REPLAY_S) { /* I (with --ifetch), L, M */
		part(rv, g0, len0, false, 0);
		if (parts == 2)
			part(rv, g1, size - len0, false, 0);
		rv->loads++;
		rv->translations += parts;
	}
	if (o->type == REPLAY_S || o->type == REPLAY_M) {
		part(rv, g0, len0, true, val);
		if (parts == 2)
			part(rv, g1, size - len0, true, val);
		rv->stores++;
		rv->translations += parts;
	}
}

/* The guest program: this vCPU's accesses, an exit at the end of each interval. */
static int replay_guest(struct gpamm_vcpu *vcpu, void *arg)
{
	struct rv *rv = arg;
	const struct shared *sh = rv->sh;
	const struct replay_op *ops = sh->f->ops;
	const uint64_t nops = sh->f->nops, chunk = sh->cfg->chunk, nv = sh->cfg->vcpus;

	for (uint64_t i = 0; i < sh->nint; i++) {
		uint64_t j = i * sh->interval;
		uint64_t end = j + sh->interval < nops ? j + sh->interval : nops;

		while (j < end) {
			uint64_t c = j / chunk, cend = (c + 1) * chunk;

			if (c % nv != rv->idx) {
				j = cend;
				continue;
			}
			if (cend > end)
				cend = end;
			for (; j < cend; j++)
				replay_op(rv, &ops[j], j);
		}
		gpamm_guest_exit(vcpu);
	}
	return 0;
}

/* Run the vCPU until it exits as expected; false (and sh->failed) otherwise. */
static bool run_until(struct rv *rv, uint32_t want)
{
	struct gpamm_run *run = gpamm_vcpu_run_state(rv->vcpu);
	int r;

	r = gpamm_vcpu_run(rv->vcpu);
	if (r) {
		fail(rv->sh, "vCPU %u: gpamm_vcpu_run: %s", rv->idx, strerror(-r));
		return false;
	}
	if (run->exit_reason == want)
		return true;
	switch (run->exit_reason) {
	case GPAMM_EXIT_MMIO:
		fail(rv->sh, "vCPU %u: unexpected MMIO exit at GPA 0x%llx (every GPA of the "
		     "trace should be RAM)", rv->idx, (unsigned long long)run->mmio.phys_addr);
		break;
	case GPAMM_EXIT_MEMORY_FAULT:
		fail(rv->sh, "vCPU %u: memory fault at GPA 0x%llx: %s", rv->idx,
		     (unsigned long long)run->memory_fault.gpa, strerror(-run->memory_fault.error));
		break;
	case GPAMM_EXIT_DONE:
		fail(rv->sh, "vCPU %u: the guest program ended before its last interval", rv->idx);
		break;
	default:
		fail(rv->sh, "vCPU %u: unexpected exit %u", rv->idx, run->exit_reason);
		break;
	}
	return false;
}

/* Between intervals, every vCPU out of guest mode: count young pages, make all idle. */
static void sample(struct shared *sh, uint64_t i)
{
	struct gpamm_vm_stats st;
	struct replay_sample *s = &sh->series[i];
	int64_t young, idle;

	gpamm_vm_stats(sh->vm, &st);
	young = gpamm_vm_test_young(sh->vm, 0, sh->slot_bytes, NULL);
	idle = gpamm_vm_mark_idle(sh->vm, 0, sh->slot_bytes);
	if (young < 0 || idle < 0) {
		fail(sh, "aging the slot: %s", strerror((int)-(young < 0 ? young : idle)));
		return;
	}
	if (idle != young && !failed(sh))
		fail(sh, "interval %llu: test_young counted %lld young pages, mark_idle %lld",
		     (unsigned long long)i, (long long)young, (long long)idle);
	s->end = (i + 1) * sh->interval < sh->f->nops ? (i + 1) * sh->interval : sh->f->nops;
	s->young = (uint64_t)young;
	s->slow_faults = st.slow_faults - sh->prev_slow;
	s->fast_faults = st.fast_faults - sh->prev_fast;
	sh->prev_slow = st.slow_faults;
	sh->prev_fast = st.fast_faults;
}

static void *vmm_thread(void *arg)
{
	struct rv *rv = arg;
	struct shared *sh = rv->sh;
	bool ok = true;

	/* the barrier is set up once every thread exists */
	pthread_mutex_lock(&sh->start);
	pthread_mutex_unlock(&sh->start);
	for (uint64_t i = 0; i < sh->nint; i++) {
		if (ok && !failed(sh))
			ok = run_until(rv, GPAMM_EXIT_REQUEST);
		if (pthread_barrier_wait(&sh->barrier) == PTHREAD_BARRIER_SERIAL_THREAD)
			sample(sh, i);
		pthread_barrier_wait(&sh->barrier);
	}
	if (ok && !failed(sh))
		run_until(rv, GPAMM_EXIT_DONE);
	return NULL;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Frames whose bytes changed, checked against the frames the trace stored to. */
static void check_written(struct shared *sh, const uint8_t *ram, struct replay_result *res)
{
	const struct replay_fold *f = sh->f;
	uint64_t first_bad = UINT64_MAX;
	bool bad_is_lost = false;

	for (uint64_t p = 0; p < f->npages; p++) {
		const uint64_t *w = (const uint64_t *)(ram + (p << sh->ps));
		bool changed = false, expect = f->written[p / 64] >> (p % 64) & 1;

		for (uint64_t k = 0; k < sh->psz / 8 && !changed; k++)
			changed = w[k] != 0;
		res->pages_written += changed;
		if (changed != expect && first_bad == UINT64_MAX) {
			first_bad = p;
			bad_is_lost = expect;
		}
	}
	if (first_bad != UINT64_MAX)
		fail(sh, "guest RAM does not match the trace: frame %llu %s (%llu frames changed, "
		     "the trace stores to %llu)", (unsigned long long)first_bad,
		     bad_is_lost ? "was stored to but is unchanged" : "changed but was never stored to",
		     (unsigned long long)res->pages_written, (unsigned long long)f->nwritten);
}

int replay_run(const struct replay_cfg *cfg, const struct replay_fold *f,
	       struct replay_result *res, char *err, size_t errlen)
{
	struct shared sh = { .f = f, .cfg = cfg, .err = err, .errlen = errlen };
	struct gpamm_host *host = NULL;
	struct gpamm_vm *vm = NULL;
	struct gpamm_vm_config vc;
	struct gpamm_userspace_memory_region reg;
	struct gpamm_host_stats hs;
	struct gpamm_live live;
	struct gpamm_geom g;
	struct rv *rvs = NULL;
	uint8_t *map = MAP_FAILED, *ram;
	size_t map_len = 0;
	double t0;
	int r;

	memset(res, 0, sizeof(*res));
	pthread_mutex_init(&sh.lock, NULL);
	if (gpamm_geom_init(&g, cfg->page_shift, cfg->levels)) {
		fail(&sh, "no layout with page shift %u and %u levels", cfg->page_shift, cfg->levels);
		goto out_lock;
	}
	if (!f->nops) {
		fail(&sh, "nothing to replay");
		goto out_lock;
	}
	sh.ps = cfg->page_shift;
	sh.psz = 1ULL << sh.ps;
	res->slot_pages = (f->npages + 63) / 64 * 64;
	if (res->slot_pages > gpamm_geom_space(&g) >> sh.ps) {
		fail(&sh, "the trace touches %llu pages; the GPA space of this layout holds %llu",
		     (unsigned long long)f->npages,
		     (unsigned long long)(gpamm_geom_space(&g) >> sh.ps));
		goto out_lock;
	}
	sh.slot_bytes = res->slot_pages << sh.ps;
	sh.interval = cfg->age_interval ? cfg->age_interval : f->nops;
	sh.nint = f->nops / sh.interval + (f->nops % sh.interval != 0); /* no overflow */
	sh.series = calloc(sh.nint, sizeof(*sh.series));
	rvs = calloc(cfg->vcpus, sizeof(*rvs));
	if (!sh.series || !rvs) {
		fail(&sh, "out of memory");
		goto out_free;
	}
	memset(store_bytes, 0xa5, sizeof(store_bytes));

	/* Guest RAM: our own memory, aligned to the page size, zero-filled. */
	map_len = sh.slot_bytes + sh.psz;
	map = mmap(NULL, map_len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (map == MAP_FAILED) {
		fail(&sh, "cannot map %llu bytes of guest RAM: %s",
		     (unsigned long long)sh.slot_bytes, strerror(errno));
		goto out_free;
	}
	ram = (uint8_t *)(((uintptr_t)map + sh.psz - 1) & ~(uintptr_t)(sh.psz - 1));

	host = gpamm_host_direct_create(sh.ps);
	if (!host) {
		fail(&sh, "cannot create the direct host");
		goto out_free;
	}
	memset(&vc, 0, sizeof(vc));
	vc.page_shift = sh.ps;
	vc.levels = cfg->levels;
	vc.host = host;
	vc.max_vcpus = cfg->vcpus;
	r = gpamm_vm_create(&vc, &vm);
	if (r) {
		fail(&sh, "gpamm_vm_create: %s", strerror(-r));
		goto out_free;
	}
	sh.vm = vm;
	memset(&reg, 0, sizeof(reg));
	reg.slot = 0;
	reg.guest_phys_addr = 0;
	reg.memory_size = sh.slot_bytes;
	reg.userspace_addr = (uint64_t)(uintptr_t)ram;
	r = gpamm_vm_set_memory_region(vm, &reg);
	if (r) {
		fail(&sh, "gpamm_vm_set_memory_region: %s", strerror(-r));
		goto out_vm;
	}
	for (unsigned i = 0; i < cfg->vcpus; i++) {
		rvs[i].sh = &sh;
		rvs[i].idx = i;
		r = gpamm_vcpu_create(vm, i, &rvs[i].vcpu);
		if (!r)
			r = gpamm_vcpu_set_guest(rvs[i].vcpu, replay_guest, &rvs[i], 0);
		if (r) {
			fail(&sh, "vCPU %u: %s", i, strerror(-r));
			goto out_vm;
		}
	}
	/*
	 * Threads for vCPUs 1..N-1 wait for the barrier; if one cannot be
	 * created, the run fails and the barrier counts the threads there are.
	 */
	unsigned nthreads = 1;
	pthread_mutex_init(&sh.start, NULL);
	pthread_mutex_lock(&sh.start);
	for (unsigned i = 1; i < cfg->vcpus; i++) {
		r = pthread_create(&rvs[i].th, NULL, vmm_thread, &rvs[i]);
		if (r) {
			fail(&sh, "cannot start the thread of vCPU %u: %s", i, strerror(r));
			break;
		}
		rvs[i].started = true;
		nthreads++;
	}
	r = pthread_barrier_init(&sh.barrier, NULL, nthreads);
	if (r) {
		fprintf(stderr, "gpamm replay: pthread_barrier_init: %s\n", strerror(r));
		abort(); /* threads wait for it: nothing sane is left to do */
	}
	t0 = now();
	pthread_mutex_unlock(&sh.start);
	vmm_thread(&rvs[0]);
	for (unsigned i = 1; i < cfg->vcpus; i++)
		if (rvs[i].started)
			pthread_join(rvs[i].th, NULL);
	res->seconds = now() - t0;
	pthread_barrier_destroy(&sh.barrier);
	pthread_mutex_destroy(&sh.start);

	gpamm_vm_stats(vm, &res->st);
	for (unsigned i = 0; i < cfg->vcpus; i++) {
		res->guest_loads += rvs[i].loads;
		res->guest_stores += rvs[i].stores;
		res->translations += rvs[i].translations;
	}
	if (!failed(&sh))
		check_written(&sh, ram, res);

out_vm:
	gpamm_vm_destroy(vm);
	gpamm_host_stats(host, &hs);
	gpamm_live_objects(&live);
	if (!failed(&sh) && (hs.pinned || live.vms || live.vcpus || live.tpools || live.threads))
		fail(&sh, "left after destroy: %llu pins, %llu VMs, %llu vCPUs, %llu table pools, "
		     "%llu threads", (unsigned long long)hs.pinned, (unsigned long long)live.vms,
		     (unsigned long long)live.vcpus, (unsigned long long)live.tpools,
		     (unsigned long long)live.threads);
out_free:
	gpamm_host_destroy(host);
	if (map != MAP_FAILED)
		munmap(map, map_len);
	free(rvs);
	res->series = sh.series;
	res->nseries = sh.series ? sh.nint : 0;
out_lock:
	pthread_mutex_destroy(&sh.lock);
	return failed(&sh) ? -1 : 0;
}
