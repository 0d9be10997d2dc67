// SPDX-License-Identifier: MIT
/*
 * Suite tlb_flush: what a remote TLB flush (gpamm_vm_flush_remote_tlbs,
 * KVM's kvm_flush_remote_tlbs) costs the VMM with -v vCPUs in guest mode.
 * Each vCPU thread runs a guest that stores to its own few pages in a loop
 * (so it is in guest mode and its TLB is warm), while this thread makes
 * flushes back to back: each one raises the request on every vCPU and
 * waits until every vCPU that was in guest mode has seen it, as KVM's
 * kick-and-wait does. Per iteration: FLUSHES_PER_ITER flushes, ns per
 * flush (ns/op).
 *
 * The cost is a round trip to every running vCPU: with more vCPU threads
 * than CPUs (the VMM's thread counts too), a flush waits until the
 * scheduler runs each vCPU, and the figure becomes a scheduling latency
 * (milliseconds), not the MMU's. The header says when that is so. Memory
 * beyond the few pages each guest touches is not used: -b only sizes the
 * slot.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "gpamm/gpamm.h"
#include "lib/common.h"
#include "lib/suite.h"

#define TF_FLUSHES   200  /* per iteration */
#define TF_PAGES     4    /* each guest's working set */
#define TF_WARM_NS   20e6 /* the guests run this long before the first flush */

static const struct bench_phase_def tf_phases[] = {
	{ "flush", "remote TLB flush time", "Remote TLB flush", "remote flush (avg)", true,
	  BENCH_NORM_OP },
};

enum { TF_EXITS };

static const struct bench_counter_def tf_counters[] = {
	[TF_EXITS] = { "vcpu_stores", "guest stores made by all vCPUs during the flushes" },
};

struct tf_guest {
	uint64_t gpa;
	atomic_uint_fast64_t stores;
	const atomic_bool *stop;
};

static int tf_guest_fn(struct gpamm_vcpu *v, void *arg)
{
	struct tf_guest *g = arg;
	uint64_t n = 0;

	while (!atomic_load_explicit(g->stop, memory_order_relaxed)) {
		for (unsigned p = 0; p < TF_PAGES; p++)
			gpamm_guest_write(v, g->gpa + ((uint64_t)p << 12), 8, n);
		n += TF_PAGES;
		atomic_store_explicit(&g->stores, n, memory_order_relaxed);
	}
	return 0;
}

struct tf_thread {
	struct gpamm_vcpu *v;
	int ret;
};

static void *tf_vcpu_thread(void *arg)
{
	struct tf_thread *t = arg;

	t->ret = gpamm_vcpu_run(t->v);
	return NULL;
}

static int tf_run_gpamm(const struct bench_cfg *c, struct bench_run *r)
{
	struct bench_rig k;
	struct tf_guest *g = NULL;
	struct tf_thread *t = NULL;
	pthread_t *th = NULL;
	atomic_bool stop = false;
	unsigned started = 0, cpus = bench_online_cpus();
	int ret = -1;

	if (bench_rig_init(&k, c, r, c->vcpus) || bench_rig_vm_up(&k, 0))
		goto out;
	bench_rig_header(&k, "%u iteration%s of %u flushes; %u vCPU thread%s + this one on %u "
			 "CPU%s%s", c->iterations, c->iterations == 1 ? "" : "s", TF_FLUSHES,
			 c->vcpus, c->vcpus == 1 ? "" : "s", cpus, cpus == 1 ? "" : "s",
			 c->vcpus + 1 > cpus ? " (more threads than CPUs: a flush waits for the "
					       "scheduler)" : "");
	g = calloc(c->vcpus, sizeof(*g));
	t = calloc(c->vcpus, sizeof(*t));
	th = calloc(c->vcpus, sizeof(*th));
	if (!g || !t || !th) {
		bench_run_fail(r, BENCH_FAILED, "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < c->vcpus; i++) {
		int err;

		g[i].gpa = r->gpa_base + i * c->bytes_per_vcpu;
		g[i].stop = &stop;
		t[i].v = k.vcpu[i];
		err = gpamm_vcpu_set_guest(k.vcpu[i], tf_guest_fn, &g[i], 0);
		if (err) {
			bench_run_fail(r, BENCH_FAILED, "vCPU %u: set_guest: %s", i, strerror(-err));
			goto stop;
		}
		if (pthread_create(&th[i], NULL, tf_vcpu_thread, &t[i])) {
			bench_run_fail(r, BENCH_FAILED, "vCPU %u: no thread", i);
			goto stop;
		}
		started++;
	}
	/* every guest has stored to its pages: its TLB holds them */
	for (double t0 = bench_now_ns(); bench_now_ns() - t0 < TF_WARM_NS;)
		usleep(1000);
	bench_phase_ops(r, "flush", TF_FLUSHES);
	for (unsigned it = 1; it <= c->iterations; it++) {
		uint64_t s0 = 0, s1 = 0;
		double t0;

		for (unsigned i = 0; i < c->vcpus; i++)
			s0 += atomic_load(&g[i].stores);
		t0 = bench_now_ns();
		for (unsigned f = 0; f < TF_FLUSHES; f++)
			gpamm_vm_flush_remote_tlbs(k.vm);
		bench_phase_record(r, "flush", it, bench_now_ns() - t0);
		for (unsigned i = 0; i < c->vcpus; i++)
			s1 += atomic_load(&g[i].stores);
		bench_count_record(r, "vcpu_stores", it, s1 - s0);
	}
	ret = 0;
stop:
	atomic_store(&stop, true);
	for (unsigned i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		if (t[i].ret && !ret)
			ret = bench_run_fail(r, BENCH_FAILED, "vCPU %u: run: %s", i,
					     strerror(-t[i].ret));
	}
out:
	free(g);
	free(t);
	free(th);
	bench_rig_destroy(&k);
	return ret;
}

/* Every flush must have completed with the guests running (they made stores meanwhile). */
static bool tf_check(const struct bench_run *r, char *why, size_t len)
{
	for (unsigned k = 0; k < r->cfg.iterations; k++)
		if (!r->count[TF_EXITS][k]) {
			snprintf(why, len, "iteration %u: no guest store during the flushes: the "
				 "vCPUs were not running", k + 1);
			return false;
		}
	return true;
}

const struct bench_suite bench_suite_tlb_flush = {
	.name = "tlb_flush",
	.summary = "remote TLB flush with -v vCPUs in guest mode (kick and wait)",
	.phases = tf_phases,
	.nphases = sizeof(tf_phases) / sizeof(tf_phases[0]),
	.counters = tf_counters,
	.ncounters = sizeof(tf_counters) / sizeof(tf_counters[0]),
	.run_gpamm = tf_run_gpamm,
	.check = tf_check,
};
