/* SPDX-License-Identifier: MIT */
/*
 * The machinery behind "gpamm bench": a run configuration, the result of
 * one run of one suite on one backend (gpamm, or the host's KVM as a
 * peer), the suite table entry, and the helpers every suite shares:
 * guest-RAM buffers that are pre-touched by the host, a gang of vCPU
 * threads stepped one pass at a time (as the selftests' memstress steps
 * its vCPUs), and the selftest-style phase lines.
 *
 * A suite describes its phases once (struct bench_phase_def); a backend
 * records each measurement with bench_phase_record(), which stores it and
 * prints the selftest line for it. Everything after that -- averages,
 * side-by-side tables, sweeps, flatness, JSON -- is generic in
 * driver.c, so a new suite is a phase table and a run function per
 * backend.
 */
#ifndef GPAMM_BENCH_SUITE_H
#define GPAMM_BENCH_SUITE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BENCH_MAX_PHASES   24
#define BENCH_MAX_COUNTERS 8
#define BENCH_MAX_ITERS    1000

/* What one run does. Sizes are bytes. */
struct bench_cfg {
	unsigned vcpus;
	uint64_t bytes_per_vcpu;
	unsigned iterations;
	unsigned page_shift, levels; /* gpamm's layout; the KVM peer always uses 4K */
	unsigned slots;              /* memory split evenly into this many memslots */
	bool manual_protect;         /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (GET + CLEAR) */
	bool initially_set;          /* with manual protect: KVM_DIRTY_LOG_INITIALLY_SET, the
				      * selftest's default (enabling logging protects nothing;
				      * the first CLEAR does) */
	bool thp;                    /* back guest RAM with transparent huge pages */
	bool serial_faults;          /* GPAMM_VM_SERIAL_FAULTS: one fault at a time */
	FILE *out;                   /* selftest-style lines go here; NULL: quiet (--json) */
};

static inline uint64_t bench_total_bytes(const struct bench_cfg *c)
{
	return c->bytes_per_vcpu * c->vcpus;
}

/* How a phase's time is turned into a per-page figure. */
enum bench_norm {
	BENCH_NORM_PAGE,      /* wall time / all pages (log calls: one thread does the work) */
	BENCH_NORM_VCPU_PAGE, /* wall time / pages per vCPU (each vCPU's cost per access) */
	BENCH_NORM_OP,        /* wall time / the operations the run counted for the phase
			       * (bench_phase_ops): accesses, lookups; "ns/op" */
};

struct bench_phase_def {
	const char *key;       /* JSON and table key: "dirty" */
	const char *label;     /* selftest line: "dirty memory time" / "Populate memory time" */
	const char *avg_label; /* per-iteration phases: "Dirty memory" (the "over N iterations" line) */
	const char *table;     /* side-by-side row: "dirty memory (avg)" */
	bool per_iter;         /* one sample per iteration, printed "Iteration N <label>" */
	enum bench_norm norm;
};

struct bench_counter_def {
	const char *key;   /* JSON: "pages_dirty" */
	const char *label; /* text: "pages reported dirty" */
};

enum bench_status { BENCH_RAN, BENCH_SKIPPED, BENCH_FAILED };

struct bench_suite;

/* One run of one suite on one backend. */
struct bench_run {
	const struct bench_suite *suite;
	const char *backend;       /* "gpamm", "kvm" */
	enum bench_status status;
	char reason[400];          /* SKIPPED / FAILED: why */
	struct bench_cfg cfg;
	uint64_t page_size, pages, pages_per_vcpu;
	uint64_t gpa_base;
	double touch_s;            /* host pre-touch of guest RAM (not part of any phase) */
	char host_desc[200];       /* what backs guest RAM, for the header line */
	bool has[BENCH_MAX_PHASES];
	unsigned nsamples[BENCH_MAX_PHASES];
	double *ns[BENCH_MAX_PHASES];          /* 1 sample, or one per iteration */
	bool has_count[BENCH_MAX_COUNTERS];
	uint64_t *count[BENCH_MAX_COUNTERS];   /* one per iteration */
	uint64_t ops[BENCH_MAX_PHASES];        /* BENCH_NORM_OP: operations per sample */
};

/* A comparison target between gpamm and a peer: per-page ratio <= max_ratio. */
struct bench_target {
	const char *phase_key;
	const char *what;
	double max_ratio;
};

/*
 * A ratio within one run: phase @key's per-page (or per-op) figure over
 * phase @base's, e.g. a guest access over the native store measured next
 * to it. With both phases per iteration it is the median of the
 * per-iteration ratios (steady when a shared machine slows down for a
 * while), else the ratio of the means. @max_ratio 0: no target.
 */
struct bench_ratio {
	const char *key, *base;
	const char *what;
	double max_ratio;
	unsigned only_shift;  /* the target applies at this page shift only; 0: at any */
};
/*
 * A bound is a bench_ratio without @base: phase @key's own per-page (or
 * per-op) figure against @max_ratio, in the phase's unit ("<= 250 ns per
 * page"). Bounds and ratios print and judge alike.
 */
#define BENCH_BOUND(key, what, max, shift) { key, NULL, what, max, shift }

/**
 * struct bench_suite - one entry of the suite table.
 * @run_gpamm: required. @run_kvm: NULL when the suite has no KVM peer.
 * Both fill @r (already set up by bench_run_init) and return 0, or -1
 * with r->status FAILED or SKIPPED and r->reason set.
 * @check: optional consistency check of a finished run (counts add up);
 * returns false with a message in @why.
 */
struct bench_suite {
	const char *name;
	const char *summary;
	const struct bench_phase_def *phases;
	unsigned nphases;
	const struct bench_counter_def *counters;
	unsigned ncounters;
	int (*run_gpamm)(const struct bench_cfg *cfg, struct bench_run *r);
	int (*run_kvm)(const struct bench_cfg *cfg, struct bench_run *r);
	const struct bench_target *targets;
	unsigned ntargets;
	const char *targets_for;   /* the configuration the targets are set for */
	bool (*targets_apply)(const struct bench_cfg *cfg);
	bool (*check)(const struct bench_run *r, char *why, size_t len);
	const struct bench_ratio *ratios;  /* printed after each run, in its JSON, in sweeps */
	unsigned nratios;
	/* optional: after a sweep's gpamm table, targets that compare the sweep's
	 * runs with each other (2 vCPUs against 1); each is judged with
	 * bench_target_report() */
	void (*sweep_targets)(const struct bench_run *const *runs, const char *const *labels,
			      unsigned n, FILE *f);
	const char *const *flat; /* phases that must be flat across a sweep (targets of
				  * `make bench`), NULL-terminated; may be NULL */
	bool uneven_slots;         /* memory splits into -m slots as the selftest's does (the
				    * last slot takes the remainder), not only evenly */
	/* optional: after a sweep's gpamm table, say why a phase is not flat (@n runs that ran) */
	void (*sweep_explain)(const struct bench_run *const *runs, const char *const *labels,
			      unsigned n, FILE *f);
};

extern const struct bench_suite bench_suite_dirty_log_perf;
extern const struct bench_suite bench_suite_access_tracking_perf;
extern const struct bench_suite bench_suite_demand_paging;
extern const struct bench_suite bench_suite_memslot_perf;
extern const struct bench_suite bench_suite_access_cost;
extern const struct bench_suite bench_suite_pgtable;
extern const struct bench_suite bench_suite_tlb_flush;
extern const struct bench_suite bench_suite_fault_scaling;

/* ---- runs ---------------------------------------------------------------------- */

/* Set up @r for @suite on @backend; allocates the sample arrays. Return: 0, -1 (ENOMEM). */
int bench_run_init(struct bench_run *r, const struct bench_suite *suite, const char *backend,
		   const struct bench_cfg *cfg, uint64_t page_size);
void bench_run_free(struct bench_run *r);
/* Mark the run skipped/failed with a formatted reason; returns -1. */
__attribute__((format(printf, 3, 4)))
int bench_run_fail(struct bench_run *r, enum bench_status st, const char *fmt, ...);

/* Index of phase @key in the suite, or -1. */
int bench_phase_index(const struct bench_suite *s, const char *key);
/**
 * bench_phase_record() - store @ns for phase @key (iteration @iter, 1-based,
 * for per-iteration phases; 0 otherwise) and print its selftest line to
 * cfg.out, with the per-page figure.
 */
void bench_phase_record(struct bench_run *r, const char *key, unsigned iter, double ns);
void bench_count_record(struct bench_run *r, const char *key, unsigned iter, uint64_t v);
/* Mean over the samples of phase @idx (NAN when absent). */
double bench_phase_mean_ns(const struct bench_run *r, int idx);
/* Mean per page, by the phase's normalisation (NAN when absent). */
double bench_phase_per_page(const struct bench_run *r, int idx);
/* The same from the median of the iterations (robust on a shared machine). */
double bench_phase_median_ns(const struct bench_run *r, int idx);
double bench_phase_median_per_page(const struct bench_run *r, int idx);
/* BENCH_NORM_OP: the operations each sample of phase @key did. */
void bench_phase_ops(struct bench_run *r, const char *key, uint64_t ops);
/* "ns per page", "ns per page per vCPU", "ns per op": what per_page figures are. */
const char *bench_norm_unit(const struct bench_phase_def *d);
/* Value of ratio @rt in @r (see struct bench_ratio); NAN when a phase is absent. */
double bench_ratio_value(const struct bench_run *r, const struct bench_ratio *rt);
/* "PASS", "MISS", or "" without a target (or one for another page size than @r's). */
const char *bench_ratio_verdict(const struct bench_run *r, const struct bench_ratio *rt, double v);
/* The target of @rt as text ("<= 2.00x", "<= 250 ns per page"), "" without one. */
const char *bench_ratio_target(const struct bench_run *r, const struct bench_ratio *rt, char *buf,
			       size_t len);
/* The value of @rt as text: "2.13x", or a bound's figure with its unit. */
const char *bench_ratio_text(const struct bench_run *r, const struct bench_ratio *rt, double v,
			     char *buf, size_t len);
/*
 * A target a suite judges itself (sweep_targets): one line on @f, and a row
 * of `make bench`'s summary. @value and @target are text ("1.93x",
 * ">= 1.80x").
 */
void bench_target_report(FILE *f, const char *what, const char *value, const char *target,
			 bool pass);
/* Print the suite's ratios of a finished run to cfg.out. */
void bench_print_ratios(const struct bench_run *r);
/* Print the "... over N iterations took ..." lines. */
void bench_print_averages(const struct bench_run *r);

/* ---- guest RAM ------------------------------------------------------------------- */

struct bench_mem {
	uint8_t *p;        /* aligned start */
	void *raw;
	size_t len, rawlen;
	double touch_s;
};

/**
 * bench_mem_alloc() - @len bytes of anonymous memory aligned to @align,
 * MAP_NORESERVE, THP on or off as asked, then populated for writing
 * (MADV_POPULATE_WRITE, or one write per 4 KiB on older kernels; several
 * threads) so that no measured phase takes a host page fault.
 * Refuses sizes that do not fit in MemAvailable (rather than be OOM-killed).
 * Return: 0, or -1 with a message in @err.
 */
int bench_mem_alloc(struct bench_mem *m, uint64_t len, uint64_t align, bool thp,
		    char *err, size_t errlen);
void bench_mem_free(struct bench_mem *m);
/* MemAvailable in bytes, 0 when unknown. */
uint64_t bench_mem_available(void);

/* ---- vCPU threads ------------------------------------------------------------------ */

/*
 * A gang of n threads, one per vCPU. bench_gang_step() starts generation
 * g+1 on every thread (each calls fn(ctx, idx, g+1) once) and returns when
 * all have finished: the wall time of one pass of all vCPUs, measured as
 * the selftest does (from the go signal to the last vCPU done).
 */
typedef int (*bench_gang_fn)(void *ctx, unsigned idx, uint64_t gen);

struct bench_gang {
	pthread_mutex_t lock;
	pthread_cond_t go, done_cv;
	unsigned n, done, started;
	uint64_t gen;
	bool stop;
	int err;
	bench_gang_fn fn;
	void *ctx;
	pthread_t *th;
	struct bench_gang_member *mem;
};

int bench_gang_start(struct bench_gang *g, unsigned n, bench_gang_fn fn, void *ctx);
/* Return: elapsed ns (> 0), or -1 if any member's fn returned nonzero. */
double bench_gang_step(struct bench_gang *g);
void bench_gang_stop(struct bench_gang *g);

/* ---- a memstress VM ---------------------------------------------------------------- */

struct gpamm_host;
struct gpamm_vm;
struct gpamm_vcpu;
struct gpamm_workload;

/*
 * What the vCPU-workload suites share: guest RAM pre-touched by the host
 * and placed at the top of the guest-physical space (as memstress), a
 * direct host and a VM with the memory split evenly into cfg->slots
 * memslots, vCPU i owning slice [base + i * bytes_per_vcpu, + bytes_per_vcpu)
 * with a sequential one-access-per-page workload, and a gang of vCPU
 * threads of which each step runs one more pass of every vCPU's workload.
 */
struct bench_rig {
	const struct bench_cfg *cfg;
	struct bench_run *r;
	struct bench_mem mem;
	uint64_t total, slot_bytes;
	unsigned nvcpus;              /* vCPUs created (cfg->vcpus unless asked otherwise) */
	struct gpamm_host *host;      /* NULL while the VM is down */
	struct gpamm_vm *vm;
	struct gpamm_vcpu **vcpu;
	struct gpamm_workload *w;     /* per vCPU: its slice */
	unsigned write_percent;       /* of the next step's passes; set between steps */
	unsigned active;              /* vCPUs 0..active-1 run the next steps (0: all) */
	double *vcpu_ns;              /* per vCPU: the time of its last pass */
	double *vcpu_cpu_ns;          /* per vCPU: its thread's CPU time in that pass */
	unsigned vm_flags;            /* more gpamm_vm_config flags for bench_rig_vm_up() */
	char (*verr)[160];            /* per vCPU: what went wrong */
	struct bench_gang gang;
	bool gang_on;
};

/**
 * bench_rig_init() - check the layout, place and allocate the test memory
 * (r->gpa_base, r->touch_s, r->host_desc) for @nvcpus vCPUs (0: cfg->vcpus).
 * Return: 0, or -1 with @r failed.
 */
int bench_rig_init(struct bench_rig *k, const struct bench_cfg *c, struct bench_run *r,
		   unsigned nvcpus);
/**
 * bench_rig_vm_up() - a direct host and a VM with @dirty_caps (manual
 * dirty-log protect flags, 0 for none), every memslot created, and the
 * vCPUs with fresh workloads (an empty GPA table).
 * Return: 0, or -1 with the run failed.
 */
int bench_rig_vm_up(struct bench_rig *k, unsigned dirty_caps);
/* Destroy the VM (its vCPUs too) and its host; the memory stays. */
void bench_rig_vm_down(struct bench_rig *k);
/**
 * bench_rig_slots() - set every memslot to @flags (create, or FLAGS_ONLY),
 * or delete them all (@on false). @what names the change in a failure.
 */
int bench_rig_slots(struct bench_rig *k, bool on, uint32_t flags, const char *what);
/* Start the vCPU threads. Return: 0, or -1 with the run failed. */
int bench_rig_start(struct bench_rig *k);
/**
 * bench_rig_step() - one more pass of every vCPU's workload (at
 * k->write_percent), wall time from the go signal to the last vCPU done.
 * Return: the ns, or -1 with the run failed "@what: the first vCPU error".
 */
__attribute__((format(printf, 2, 3)))
double bench_rig_step(struct bench_rig *k, const char *what_fmt, ...);
/**
 * bench_rig_header() - the run's header on cfg->out: layout, vCPUs x slice,
 * pages, slots and the suite's own tail (a format), the host and where
 * the test memory is.
 */
__attribute__((format(printf, 2, 3)))
void bench_rig_header(const struct bench_rig *k, const char *tail_fmt, ...);
void bench_rig_destroy(struct bench_rig *k);

/*
 * One dirty bitmap per slot for the VMM side of a log call, written once
 * before use so that no GET measures page faults of the caller's own
 * buffer (the selftest's buffers are warm after its first iteration).
 * Return: the array, or NULL (ENOMEM). Free with bench_bitmaps_free().
 */
uint64_t **bench_bitmaps_alloc(unsigned slots, uint64_t pages_per_slot);
void bench_bitmaps_free(uint64_t **b, unsigned slots);

/* ---- small things --------------------------------------------------------------------- */

double bench_now_ns(void);
/* CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), ns. */
double bench_thread_cpu_ns(void);
/* "1G", "256M", "16K", "4096": K/M/G/T suffixes (binary), optional "iB"/"B". */
/* "1 GiB", "256 MiB", "1.5 GiB" for any size. */
const char *bench_size_str(uint64_t bytes, char *buf, size_t len);
/* A per-page figure with precision that suits its size: "3904", "12.2", "0.043". */
const char *bench_fmt_ns(double ns, char *buf, size_t len);
unsigned bench_online_cpus(void);
/* Size of CPU 0's level-@level data or unified cache (sysfs), 0 when unknown. */
uint64_t bench_cache_bytes(unsigned level);
/* "4K/3-level". */
const char *bench_layout_name(unsigned page_shift, unsigned levels, char *buf, size_t len);
/* "manual protect, initially set", "manual protect", or "classic GET (no manual protect)". */
const char *bench_protect_mode(const struct bench_cfg *c);

#endif
