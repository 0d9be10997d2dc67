// SPDX-License-Identifier: MIT
/*
 * VM-level benchmark: what a guest access and a fault cost, next to plain
 * native loops measured in the same run. Figures are medians of several
 * repetitions; ratios are to the native loop of the same shape.
 *   populate (pre-touched host memory)        ns/page, target <= 250
 *   populate (fresh memory) vs first touch    ratio,   target <= 1.2
 *   TLB-hit access vs native store            ratio,   target <= 2
 *   TLB-miss access vs native random store    ratio,   target <= 5
 *   memslot lookup with 1..32767 slots        ns,      must grow no faster than log
 *   remote TLB flush with 1, 2, 4, 8 vCPUs    us
 * Options: --quick (smaller sizes), --json. The populate and access loops
 * are the kernels of lib/kernels_vm.c, the same that "gpamm bench
 * access_cost" runs.
 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "gpamm/gpamm.h"
#include "lib/kernels_vm.h"
#include "vm.h" /* memslot lookup is measured directly */

static bool quick, json;
static int reps = 5;

static bool host_thp; /* back guest RAM with transparent huge pages */

static void *map_aligned(size_t len, unsigned shift, bool touch)
{
	size_t align = (size_t)1 << (host_thp ? 21 : shift);
	uint8_t *raw = mmap(NULL, len + align, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint8_t *p;

	if (raw == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	p = (uint8_t *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
	madvise(p, len, host_thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	if (touch)
		memset(p, 1, len);
	return p;
}

struct rig {
	struct gpamm_host *host;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *vcpu;
	uint8_t *mem;
	size_t len;
	unsigned ps;
};

static void rig_init(struct rig *r, unsigned ps, size_t len, bool touch, unsigned nvcpu)
{
	struct gpamm_vm_config cfg = { .page_shift = ps, .levels = 3 };

	r->ps = ps;
	r->len = len;
	r->host = gpamm_host_direct_create(ps);
	cfg.host = r->host;
	if (gpamm_vm_create(&cfg, &r->vm)) {
		fprintf(stderr, "vm create failed\n");
		exit(1);
	}
	r->mem = map_aligned(len, ps, touch);
	struct gpamm_userspace_memory_region reg = { .slot = 0, .guest_phys_addr = 1ULL << 32,
		.memory_size = len, .userspace_addr = (uintptr_t)r->mem };
	if (gpamm_vm_set_memory_region(r->vm, &reg)) {
		fprintf(stderr, "set memory region failed\n");
		exit(1);
	}
	for (unsigned i = 0; i < nvcpu; i++) {
		struct gpamm_vcpu *v;
		gpamm_vcpu_create(r->vm, i, &v);
		if (i == 0)
			r->vcpu = v;
	}
}

static void rig_destroy(struct rig *r)
{
	gpamm_vm_destroy(r->vm);
	gpamm_host_destroy(r->host);
	munmap(r->mem, r->len);
}

/* A guest that does not finish its workload leaves nothing to measure. */
static double checked(struct gpamm_vcpu *v, double ns)
{
	if (ns < 0) {
		fprintf(stderr, "workload exited with %u\n", gpamm_vcpu_run_state(v)->exit_reason);
		exit(1);
	}
	return ns;
}

struct fig {
	const char *name;
	double value;
	const char *unit;
	double ratio;      /* NAN when not a ratio figure */
	double target;     /* NAN when none */
	bool ratio_target; /* the target applies to the ratio */
};

static struct fig figs[64];
static int nfigs;

static void fig(const char *name, double value, const char *unit, double ratio, double target,
		bool ratio_target)
{
	figs[nfigs++] = (struct fig){ name, value, unit, ratio, target, ratio_target };
}

static const char *verdict(const struct fig *f)
{
	double v = f->ratio_target ? f->ratio : f->value;
	if (isnan(f->target))
		return "";
	return v <= f->target ? "PASS" : "MISS";
}

/* ---- populate ------------------------------------------------------------- */

static void bench_populate(unsigned ps)
{
	size_t len = quick ? (128u << 20) : (1u << 30);
	uint64_t pages = len >> ps;
	double pre[9], fresh[9], native[9];
	int n = quick ? 3 : reps;
	char name[96];

	for (int i = 0; i < n; i++) {
		struct rig r;

		rig_init(&r, ps, len, true, 1);
		pre[i] = checked(r.vcpu, bk_populate(r.vcpu, 1ULL << 32, len)) / pages;
		rig_destroy(&r);

		rig_init(&r, ps, len, false, 1);
		fresh[i] = checked(r.vcpu, bk_populate(r.vcpu, 1ULL << 32, len)) / pages;
		rig_destroy(&r);

		uint8_t *m = map_aligned(len, ps, false);
		double t0 = now_ns();
		for (uint64_t p = 0; p < pages; p++)
			*(volatile uint64_t *)(m + (p << ps)) = p;
		native[i] = (now_ns() - t0) / pages;
		munmap(m, len);
	}
	double rr[9];
	for (int i = 0; i < n; i++)
		rr[i] = fresh[i] / native[i];
	double mp = median(pre, n), mf = median(fresh, n), mn = median(native, n);
	snprintf(name, sizeof name, "populate %uK pre-touched", 1u << (ps - 10));
	fig(strdup(name), mp, "ns/page", NAN, ps == 12 ? 250 : NAN, false);
	snprintf(name, sizeof name, "populate %uK fresh memory", 1u << (ps - 10));
	fig(strdup(name), mf, "ns/page", median(rr, n), ps == 12 ? 1.2 : NAN, true);
	snprintf(name, sizeof name, "  native first touch %uK", 1u << (ps - 10));
	fig(strdup(name), mn, "ns/page", NAN, NAN, false);
}

/* ---- access cost -------------------------------------------------------------- */

static void bench_hit(void)
{
	const unsigned ps = 12;
	/* 32 pages, every 8-byte word, many passes: always in the TLB */
	const size_t len = 32u << ps;
	const uint64_t passes = quick ? 200 : 2000, words = len / 8;
	double hit[9], nat[9], simd[9];
	struct rig r;

	rig_init(&r, ps, len, true, 1);
	for (int i = 0; i < reps; i++) {
		struct bk_access a;

		if (bk_tlb_hit(r.vcpu, 1ULL << 32, r.mem, len, passes, &a))
			checked(r.vcpu, -1);
		hit[i] = a.guest_ns / (double)a.accesses;
		nat[i] = a.native_ns / (double)(words * passes);

		double t0 = now_ns();
		bk_native_stores_simd((uint64_t *)r.mem, words, passes);
		simd[i] = (now_ns() - t0) / (double)(words * passes);
	}
	rig_destroy(&r);
	double rr[9];
	for (int i = 0; i < reps; i++)
		rr[i] = hit[i] / nat[i];
	double h = median(hit, reps), nh = median(nat, reps);
	fig("TLB-hit access (8-byte store)", h, "ns", median(rr, reps), 2.0, true);
	fig("  native store", nh, "ns", NAN, NAN, false);
	fig("  native store, compiler-vectorised", median(simd, reps), "ns", NAN, NAN, false);
}

/*
 * TLB misses: four times the pages the TLB reaches (2048 pairs, 4096 pages), one 8-byte store
 * per page, in random order, after a populate pass (so no faults). The
 * native loop stores to the same pages in the same order. With host pages
 * of 4K both sides also miss the host's own DTLB on nearly every store;
 * with THP-backed guest RAM only the guest TLB misses remain.
 */
static void bench_miss(bool thp)
{
	const unsigned ps = 12;
	const size_t len = 64u << 20;
	const uint64_t pages = len >> ps;
	double miss[9], nat[9];
	struct rig r;

	host_thp = thp;
	rig_init(&r, ps, len, true, 1);
	host_thp = false;
	checked(r.vcpu, bk_populate(r.vcpu, 1ULL << 32, len));
	uint64_t misses = 0;
	for (int i = 0; i < reps; i++) {
		struct bk_access a;

		if (bk_tlb_miss(r.vcpu, 1ULL << 32, r.mem, len, ps, 2, 7 + i, &a))
			checked(r.vcpu, -1);
		miss[i] = a.guest_ns / (double)a.accesses;
		nat[i] = a.native_ns / (double)(2 * pages);
		misses += a.tlb_misses;
	}
	rig_destroy(&r);
	double rr[9];
	for (int i = 0; i < reps; i++)
		rr[i] = miss[i] / nat[i];
	double m = median(miss, reps), nm = median(nat, reps);
	double rate = (double)misses / (double)(reps * 2 * pages);
	fig(thp ? "TLB-miss access (THP host memory)" : "TLB-miss access (4K host pages)",
	    m, "ns", median(rr, reps), 5.0, true);
	fig("  native random store", nm, "ns", NAN, NAN, false);
	fig("  guest TLB miss rate", 100.0 * rate, "%", NAN, NAN, false);
}

/* ---- memslot lookup ----------------------------------------------------------- */

static void bench_memslot(void)
{
	static const unsigned counts[] = { 1, 32, 1024, 32767 };
	struct gpamm_host *h = gpamm_host_direct_create(12);
	double prev = 0;

	for (unsigned c = 0; c < 4; c++) {
		unsigned nslots = quick && counts[c] > 1024 ? 4096 : counts[c];
		struct gpamm_vm_config cfg = { .page_shift = 12, .levels = 4, .host = h };
		struct gpamm_vm *vm;
		double t[9];
		char name[64];

		gpamm_vm_create(&cfg, &vm);
		/* one page per slot; the host pages are never touched */
		for (unsigned i = 0; i < nslots; i++) {
			struct gpamm_userspace_memory_region r = { .slot = i,
				.guest_phys_addr = (uint64_t)i << 16, .memory_size = 4096,
				.userspace_addr = 0x100000000ULL + ((uint64_t)i << 12) };
			if (gpamm_vm_set_memory_region(vm, &r)) {
				fprintf(stderr, "slot %u failed\n", i);
				exit(1);
			}
		}
		const uint64_t lookups = 2000000;
		uint64_t *gfns = malloc(lookups * sizeof(*gfns)), s = 12345, sum = 0;
		for (uint64_t k = 0; k < lookups; k++) {
			s = s * 6364136223846793005ULL + 1442695040888963407ULL;
			gfns[k] = ((s >> 33) % nslots) << 4;
		}
		for (int i = 0; i < reps; i++) {
			struct gpamm_memslots *set = atomic_load(&vm->slots);
			double t0 = now_ns();
			for (uint64_t k = 0; k < lookups; k++)
				sum += (uintptr_t)gpamm_memslot_lookup(set, gfns[k], false);
			t[i] = (now_ns() - t0) / lookups;
		}
		if (!sum)
			puts("");
		free(gfns);
		double m = median(t, reps);
		snprintf(name, sizeof name, "memslot lookup, %u slots", nslots);
		fig(strdup(name), m, "ns", prev ? m / prev : NAN, NAN, false);
		prev = m;
		gpamm_vm_destroy(vm);
	}
	gpamm_host_destroy(h);
}

/* ---- remote flush --------------------------------------------------------------- */

static atomic_int flush_stop;

static int spin_guest(struct gpamm_vcpu *v, void *arg)
{
	uint64_t gpa = *(uint64_t *)arg;
	while (!atomic_load_explicit(&flush_stop, memory_order_relaxed))
		for (int i = 0; i < 64; i++)
			gpamm_guest_write(v, gpa + i * 8, 8, i);
	return 0;
}

static void *vcpu_thread(void *arg)
{
	struct gpamm_vcpu *v = arg;
	gpamm_vcpu_run(v);
	return NULL;
}

static void bench_flush(void)
{
	static const unsigned counts[] = { 1, 2, 4, 8 };

	for (unsigned c = 0; c < 4; c++) {
		unsigned nv = counts[c];
		struct rig r;
		pthread_t th[8];
		uint64_t gpa[8];
		struct gpamm_vcpu *vs[8];
		double t[9];
		char name[64];

		rig_init(&r, 12, 8u << 12, true, 0);
		atomic_store(&flush_stop, 0);
		for (unsigned i = 0; i < nv; i++) {
			gpamm_vcpu_create(r.vm, i, &vs[i]);
			gpa[i] = (1ULL << 32) + ((uint64_t)i << 12);
			gpamm_vcpu_set_guest(vs[i], spin_guest, &gpa[i], 0);
			pthread_create(&th[i], NULL, vcpu_thread, vs[i]);
		}
		usleep(20000);
		const int flushes = quick ? 200 : 2000;
		for (int i = 0; i < reps; i++) {
			double t0 = now_ns();
			for (int k = 0; k < flushes; k++)
				gpamm_vm_flush_remote_tlbs(r.vm);
			t[i] = (now_ns() - t0) / flushes / 1000.0;
		}
		atomic_store(&flush_stop, 1);
		for (unsigned i = 0; i < nv; i++)
			pthread_join(th[i], NULL);
		snprintf(name, sizeof name, "remote TLB flush, %u vCPU%s running", nv, nv > 1 ? "s" : "");
		fig(strdup(name), median(t, reps), "us", NAN, NAN, false);
		rig_destroy(&r);
	}
}

int main(int argc, char **argv)
{
	if (bench_parse_quick_json(argc, argv, &quick, &json))
		return 2;
	if (quick)
		reps = 3;
	/* One CPU for the single-threaded parts: a VM's CPUs can differ 2x. */
	cpu_set_t all;
	int cpu = bench_pin_here(&all);
	bench_populate(12);
	bench_populate(14);
	bench_hit();
	bench_miss(false);
	bench_miss(true);
	bench_memslot();
	sched_setaffinity(0, sizeof(all), &all);
	bench_flush();

	if (json) {
		printf("{\"bench\":\"vm\",\"reps\":%d,\"figures\":[", reps);
		for (int i = 0; i < nfigs; i++)
		{
			char ratio[32] = "null";
			if (!isnan(figs[i].ratio))
				snprintf(ratio, sizeof(ratio), "%.3f", figs[i].ratio);
			printf("%s{\"name\":\"%s\",\"value\":%.3f,\"unit\":\"%s\",\"ratio\":%s,\"verdict\":\"%s\"}",
			       i ? "," : "", figs[i].name, figs[i].value, figs[i].unit, ratio,
			       verdict(&figs[i]));
		}
		printf("]}\n");
		return 0;
	}
	printf("\n== gpamm VM benchmark (median of %d; direct host; pinned to CPU %d for all but the flush;"
	       " ratio = median of per-repetition ratios to the native loop) ==\n", reps, cpu);
	printf("%-42s %12s %-8s %8s %8s %s\n", "figure", "value", "unit", "ratio", "target", "");
	for (int i = 0; i < nfigs; i++) {
		char ratio[16] = "", target[16] = "";
		if (!isnan(figs[i].ratio))
			snprintf(ratio, sizeof ratio, "%.2fx", figs[i].ratio);
		if (!isnan(figs[i].target))
			snprintf(target, sizeof target, figs[i].ratio_target ? "<=%.1fx" : "<=%.0f",
				 figs[i].target);
		printf("%-42s %12.2f %-8s %8s %8s %s\n", figs[i].name, figs[i].value, figs[i].unit,
		       ratio, target, verdict(&figs[i]));
	}
	printf("(memslot ratio column: cost relative to the previous row; 32x, 32x, 32x more slots)\n");
	return 0;
}
