// SPDX-License-Identifier: MIT
/*
 * Helpers shared by the "gpamm bench" suites and backends: run records
 * and their selftest-style lines, pre-touched guest RAM, the vCPU thread
 * gang, sizes and number formatting. See suite.h.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "suite.h"
#include "common.h"

double bench_now_ns(void)
{
	return now_ns();
}

double bench_thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

unsigned bench_online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? (unsigned)n : 1;
}

uint64_t bench_cache_bytes(unsigned level)
{
	uint64_t best = 0;

	for (unsigned i = 0; i < 8; i++) {
		char path[96], type[32] = "";
		unsigned lvl = 0;
		unsigned long long sz = 0;
		char unit = 0;
		FILE *f;

		snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu0/cache/index%u/level", i);
		f = fopen(path, "r");
		if (!f)
			break;
		if (fscanf(f, "%u", &lvl) != 1)
			lvl = 0;
		fclose(f);
		snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu0/cache/index%u/type", i);
		f = fopen(path, "r");
		if (f) {
			if (fscanf(f, "%31s", type) != 1)
				type[0] = '\0';
			fclose(f);
		}
		snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu0/cache/index%u/size", i);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fscanf(f, "%llu%c", &sz, &unit) < 1)
			sz = 0;
		fclose(f);
		if (unit == 'K')
			sz <<= 10;
		else if (unit == 'M')
			sz <<= 20;
		if (lvl == level && strcmp(type, "Instruction") && sz > best)
			best = sz;
	}
	return best;
}

/* ---- runs ----------------------------------------------------------------------- */

int bench_run_init(struct bench_run *r, const struct bench_suite *suite, const char *backend,
		   const struct bench_cfg *cfg, uint64_t page_size)
{
	unsigned i;

	memset(r, 0, sizeof(*r));
	r->suite = suite;
	r->backend = backend;
	r->status = BENCH_RAN;
	r->cfg = *cfg;
	r->page_size = page_size;
	r->pages = bench_total_bytes(cfg) / page_size;
	r->pages_per_vcpu = cfg->bytes_per_vcpu / page_size;
	for (i = 0; i < suite->nphases; i++) {
		unsigned n = suite->phases[i].per_iter ? cfg->iterations : 1;

		r->ns[i] = calloc(n, sizeof(double));
		if (!r->ns[i])
			goto nomem;
	}
	for (i = 0; i < suite->ncounters; i++) {
		r->count[i] = calloc(cfg->iterations, sizeof(uint64_t));
		if (!r->count[i])
			goto nomem;
	}
	return 0;
nomem:
	bench_run_free(r);
	return -1;
}

void bench_run_free(struct bench_run *r)
{
	for (unsigned i = 0; i < BENCH_MAX_PHASES; i++) {
		free(r->ns[i]);
		r->ns[i] = NULL;
	}
	for (unsigned i = 0; i < BENCH_MAX_COUNTERS; i++) {
		free(r->count[i]);
		r->count[i] = NULL;
	}
}

int bench_run_fail(struct bench_run *r, enum bench_status st, const char *fmt, ...)
{
	va_list ap;

	r->status = st;
	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
	return -1;
}

int bench_phase_index(const struct bench_suite *s, const char *key)
{
	for (unsigned i = 0; i < s->nphases; i++)
		if (!strcmp(s->phases[i].key, key))
			return (int)i;
	return -1;
}

static double per_page(const struct bench_run *r, const struct bench_phase_def *d, double ns)
{
	uint64_t n = d->norm == BENCH_NORM_VCPU_PAGE ? r->pages_per_vcpu :
		     d->norm == BENCH_NORM_OP ? r->ops[d - r->suite->phases] : r->pages;

	return n ? ns / (double)n : NAN;
}

static const char *norm_suffix(const struct bench_phase_def *d)
{
	return d->norm == BENCH_NORM_VCPU_PAGE ? "ns/page per vCPU" :
	       d->norm == BENCH_NORM_OP ? "ns/op" : "ns/page";
}

const char *bench_norm_unit(const struct bench_phase_def *d)
{
	return d->norm == BENCH_NORM_VCPU_PAGE ? "ns per page per vCPU" :
	       d->norm == BENCH_NORM_OP ? "ns per op" : "ns per page";
}

void bench_phase_ops(struct bench_run *r, const char *key, uint64_t ops)
{
	int i = bench_phase_index(r->suite, key);

	if (i >= 0)
		r->ops[i] = ops;
}

void bench_phase_record(struct bench_run *r, const char *key, unsigned iter, double ns)
{
	int i = bench_phase_index(r->suite, key);
	const struct bench_phase_def *d;
	char pp[32];

	if (i < 0)
		return;
	d = &r->suite->phases[i];
	if (d->per_iter) {
		if (iter < 1 || iter > r->cfg.iterations)
			return;
		r->ns[i][iter - 1] = ns;
		if (iter > r->nsamples[i])
			r->nsamples[i] = iter;
	} else {
		r->ns[i][0] = ns;
		r->nsamples[i] = 1;
	}
	r->has[i] = true;
	if (!r->cfg.out)
		return;
	bench_fmt_ns(per_page(r, d, ns), pp, sizeof(pp));
	if (d->per_iter)
		fprintf(r->cfg.out, "Iteration %u %s: %.9fs (%s %s)\n", iter, d->label, ns / 1e9,
			pp, norm_suffix(d));
	else
		fprintf(r->cfg.out, "%s: %.9fs (%s %s)\n", d->label, ns / 1e9, pp, norm_suffix(d));
	fflush(r->cfg.out);
}

void bench_count_record(struct bench_run *r, const char *key, unsigned iter, uint64_t v)
{
	for (unsigned i = 0; i < r->suite->ncounters; i++) {
		if (strcmp(r->suite->counters[i].key, key))
			continue;
		if (iter >= 1 && iter <= r->cfg.iterations) {
			r->count[i][iter - 1] = v;
			r->has_count[i] = true;
		}
		return;
	}
}

double bench_phase_mean_ns(const struct bench_run *r, int idx)
{
	double sum = 0;

	if (idx < 0 || !r->has[idx] || !r->nsamples[idx])
		return NAN;
	for (unsigned k = 0; k < r->nsamples[idx]; k++)
		sum += r->ns[idx][k];
	return sum / r->nsamples[idx];
}

double bench_phase_median_ns(const struct bench_run *r, int idx)
{
	double v[BENCH_MAX_ITERS];
	unsigned n = 0;

	if (idx < 0 || !r->has[idx] || !r->nsamples[idx])
		return NAN;
	for (unsigned k = 0; k < r->nsamples[idx] && n < BENCH_MAX_ITERS; k++)
		v[n++] = r->ns[idx][k];
	return median(v, (int)n);
}

double bench_phase_median_per_page(const struct bench_run *r, int idx)
{
	if (idx < 0)
		return NAN;
	return per_page(r, &r->suite->phases[idx], bench_phase_median_ns(r, idx));
}

double bench_phase_per_page(const struct bench_run *r, int idx)
{
	if (idx < 0)
		return NAN;
	return per_page(r, &r->suite->phases[idx], bench_phase_mean_ns(r, idx));
}

double bench_ratio_value(const struct bench_run *r, const struct bench_ratio *rt)
{
	int a = bench_phase_index(r->suite, rt->key), b;
	const struct bench_phase_def *da, *db;
	double v[BENCH_MAX_ITERS];
	unsigned n = 0;

	if (!rt->base) /* a bound */
		return a < 0 || !r->has[a] ? NAN : bench_phase_per_page(r, a);
	b = bench_phase_index(r->suite, rt->base);
	if (a < 0 || b < 0 || !r->has[a] || !r->has[b])
		return NAN;
	da = &r->suite->phases[a];
	db = &r->suite->phases[b];
	if (!da->per_iter || !db->per_iter || r->nsamples[a] != r->nsamples[b])
		return bench_phase_per_page(r, a) / bench_phase_per_page(r, b);
	for (unsigned k = 0; k < r->nsamples[a]; k++) {
		double x = per_page(r, da, r->ns[a][k]), y = per_page(r, db, r->ns[b][k]);

		if (!isnan(x) && !isnan(y) && y > 0)
			v[n++] = x / y;
	}
	return n ? median(v, (int)n) : NAN;
}

static bool ratio_applies(const struct bench_run *r, const struct bench_ratio *rt)
{
	return rt->max_ratio && (!rt->only_shift || rt->only_shift == r->cfg.page_shift);
}

const char *bench_ratio_verdict(const struct bench_run *r, const struct bench_ratio *rt, double v)
{
	if (!ratio_applies(r, rt))
		return "";
	if (isnan(v))
		return "n/a";
	return v <= rt->max_ratio ? "PASS" : "MISS";
}

const char *bench_ratio_target(const struct bench_run *r, const struct bench_ratio *rt, char *buf,
			       size_t len)
{
	char n[32];

	if (!ratio_applies(r, rt))
		snprintf(buf, len, "%s", "");
	else if (rt->base)
		snprintf(buf, len, "<= %.2fx", rt->max_ratio);
	else
		snprintf(buf, len, "<= %s %s", bench_fmt_ns(rt->max_ratio, n, sizeof(n)),
			 bench_norm_unit(&r->suite->phases[bench_phase_index(r->suite, rt->key)]));
	return buf;
}

const char *bench_ratio_text(const struct bench_run *r, const struct bench_ratio *rt, double v,
			     char *buf, size_t len)
{
	char n[32];

	if (rt->base)
		snprintf(buf, len, "%.2fx", v);
	else
		snprintf(buf, len, "%s %s", bench_fmt_ns(v, n, sizeof(n)),
			 bench_norm_unit(&r->suite->phases[bench_phase_index(r->suite, rt->key)]));
	return buf;
}

void bench_print_ratios(const struct bench_run *r)
{
	const struct bench_suite *s = r->suite;

	if (!r->cfg.out || !s->nratios)
		return;
	fprintf(r->cfg.out, "Targets and ratios within the run (ratios: median of the "
		"per-iteration ratios; a MISS is informational):\n");
	for (unsigned i = 0; i < s->nratios; i++) {
		const struct bench_ratio *rt = &s->ratios[i];
		double v = bench_ratio_value(r, rt);
		char val[48], tgt[48];

		fprintf(r->cfg.out, "  %-44s %20s  %-22s %s\n", rt->what,
			bench_ratio_text(r, rt, v, val, sizeof(val)),
			bench_ratio_target(r, rt, tgt, sizeof(tgt)), bench_ratio_verdict(r, rt, v));
	}
}

void bench_print_averages(const struct bench_run *r)
{
	const struct bench_suite *s = r->suite;
	char pp[32];

	if (!r->cfg.out)
		return;
	for (unsigned i = 0; i < s->nphases; i++) {
		const struct bench_phase_def *d = &s->phases[i];
		double sum = 0;

		if (!d->per_iter || !r->has[i])
			continue;
		for (unsigned k = 0; k < r->nsamples[i]; k++)
			sum += r->ns[i][k];
		bench_fmt_ns(bench_phase_per_page(r, (int)i), pp, sizeof(pp));
		fprintf(r->cfg.out, "%s over %u iterations took %.9fs. (Avg %.9fs/iteration, %s %s)\n",
			d->avg_label, r->nsamples[i], sum / 1e9, sum / 1e9 / r->nsamples[i], pp,
			norm_suffix(d));
	}
}

/* ---- guest RAM ---------------------------------------------------------------- */

uint64_t bench_mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	unsigned long long kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return (uint64_t)kb << 10;
}

struct touch_arg {
	uint8_t *p;
	size_t len;
};

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

static void *touch_thread(void *arg)
{
	struct touch_arg *t = arg;

	/* One call that faults every page in writable; older kernels: touch each. */
	if (!madvise(t->p, t->len, MADV_POPULATE_WRITE))
		return NULL;
	for (size_t off = 0; off < t->len; off += 4096)
		((volatile uint8_t *)t->p)[off] = 0;
	return NULL;
}

/* Every host page allocated (written) before use; split over the CPUs. */
static void touch_parallel(uint8_t *p, size_t len)
{
	unsigned n = bench_online_cpus();
	pthread_t th[16];
	struct touch_arg a[16];
	size_t chunk;
	unsigned started = 0;

	if (n > 16)
		n = 16;
	if (len < (64u << 20))
		n = 1;
	chunk = (len / n + 4095) & ~(size_t)4095;
	for (unsigned i = 0; i < n; i++) {
		size_t off = chunk * i;

		if (off >= len)
			break;
		a[i].p = p + off;
		a[i].len = len - off < chunk ? len - off : chunk;
		if (i + 1 < n && !pthread_create(&th[i], NULL, touch_thread, &a[i])) {
			started |= 1u << i;
			continue;
		}
		touch_thread(&a[i]);
	}
	for (unsigned i = 0; i < n; i++)
		if (started & (1u << i))
			pthread_join(th[i], NULL);
}

int bench_mem_alloc(struct bench_mem *m, uint64_t len, uint64_t align, bool thp,
		    char *err, size_t errlen)
{
	uint64_t avail = bench_mem_available();
	char a[32], b[32];
	double t0;

	memset(m, 0, sizeof(*m));
	if (thp && align < (2u << 20))
		align = 2u << 20;
	/* Leave the system some room: an OOM kill would take more than this run. */
	if (avail && len + (256u << 20) > avail) {
		snprintf(err, errlen, "guest RAM of %s does not fit: MemAvailable is %s "
			 "(256 MiB are left to the system)",
			 bench_size_str(len, a, sizeof(a)), bench_size_str(avail, b, sizeof(b)));
		return -1;
	}
	m->rawlen = len + align;
	m->raw = mmap(NULL, m->rawlen, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m->raw == MAP_FAILED) {
		snprintf(err, errlen, "mmap of %s: %s", bench_size_str(m->rawlen, a, sizeof(a)),
			 strerror(errno));
		m->raw = NULL;
		return -1;
	}
	m->p = (uint8_t *)(((uintptr_t)m->raw + align - 1) & ~(uintptr_t)(align - 1));
	m->len = len;
	madvise(m->p, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	t0 = bench_now_ns();
	touch_parallel(m->p, len);
	m->touch_s = (bench_now_ns() - t0) / 1e9;
	return 0;
}

void bench_mem_free(struct bench_mem *m)
{
	if (m->raw)
		munmap(m->raw, m->rawlen);
	memset(m, 0, sizeof(*m));
}

/* ---- vCPU threads ------------------------------------------------------------------ */

struct bench_gang_member {
	struct bench_gang *g;
	unsigned idx;
};

static void *gang_thread(void *arg)
{
	struct bench_gang_member *mb = arg;
	struct bench_gang *g = mb->g;
	uint64_t seen = 0;

	pthread_mutex_lock(&g->lock);
	for (;;) {
		int r;

		while (g->gen == seen && !g->stop)
			pthread_cond_wait(&g->go, &g->lock);
		if (g->stop)
			break;
		seen = g->gen;
		pthread_mutex_unlock(&g->lock);
		r = g->fn(g->ctx, mb->idx, seen);
		pthread_mutex_lock(&g->lock);
		if (r && !g->err)
			g->err = r;
		if (++g->done == g->n)
			pthread_cond_signal(&g->done_cv);
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

int bench_gang_start(struct bench_gang *g, unsigned n, bench_gang_fn fn, void *ctx)
{
	memset(g, 0, sizeof(*g));
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->go, NULL);
	pthread_cond_init(&g->done_cv, NULL);
	g->n = n;
	g->fn = fn;
	g->ctx = ctx;
	g->th = calloc(n, sizeof(*g->th));
	g->mem = calloc(n, sizeof(*g->mem));
	if (!g->th || !g->mem)
		goto fail;
	for (unsigned i = 0; i < n; i++) {
		g->mem[i] = (struct bench_gang_member){ g, i };
		if (pthread_create(&g->th[i], NULL, gang_thread, &g->mem[i]))
			goto fail;
		g->started++;
	}
	return 0;
fail:
	bench_gang_stop(g);
	return -1;
}

double bench_gang_step(struct bench_gang *g)
{
	double t0, t1;
	int err;

	pthread_mutex_lock(&g->lock);
	g->done = 0;
	t0 = bench_now_ns();
	g->gen++;
	pthread_cond_broadcast(&g->go);
	while (g->done < g->n)
		pthread_cond_wait(&g->done_cv, &g->lock);
	t1 = bench_now_ns();
	err = g->err;
	pthread_mutex_unlock(&g->lock);
	if (err)
		return -1;
	return t1 - t0 > 0 ? t1 - t0 : 1;
}

void bench_gang_stop(struct bench_gang *g)
{
	pthread_mutex_lock(&g->lock);
	g->stop = true;
	pthread_cond_broadcast(&g->go);
	pthread_mutex_unlock(&g->lock);
	for (unsigned i = 0; i < g->started; i++)
		pthread_join(g->th[i], NULL);
	free(g->th);
	free(g->mem);
	g->th = NULL;
	g->mem = NULL;
	g->started = 0;
	pthread_cond_destroy(&g->go);
	pthread_cond_destroy(&g->done_cv);
	pthread_mutex_destroy(&g->lock);
}

/* ---- small things -------------------------------------------------------------------- */

const char *bench_size_str(uint64_t bytes, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	unsigned u = 0;
	double v = (double)bytes;

	while (u < 4 && v >= 1024) {
		v /= 1024;
		u++;
	}
	if (v == floor(v))
		snprintf(buf, len, "%.0f %s", v, unit[u]);
	else
		snprintf(buf, len, "%.2f %s", v, unit[u]);
	return buf;
}

const char *bench_fmt_ns(double ns, char *buf, size_t len)
{
	if (isnan(ns))
		snprintf(buf, len, "-");
	else if (ns >= 100)
		snprintf(buf, len, "%.0f", ns);
	else if (ns >= 10)
		snprintf(buf, len, "%.1f", ns);
	else if (ns >= 1)
		snprintf(buf, len, "%.2f", ns);
	else
		snprintf(buf, len, "%.3f", ns);
	return buf;
}

const char *bench_layout_name(unsigned page_shift, unsigned levels, char *buf, size_t len)
{
	snprintf(buf, len, "%uK/%u-level", 1u << (page_shift - 10), levels);
	return buf;
}

const char *bench_protect_mode(const struct bench_cfg *c)
{
	if (!c->manual_protect)
		return "classic GET (no manual protect)";
	return c->initially_set ? "manual protect, initially set" : "manual protect";
}

uint64_t **bench_bitmaps_alloc(unsigned slots, uint64_t pages_per_slot)
{
	const size_t words = (pages_per_slot + 63) / 64;
	uint64_t **b = calloc(slots, sizeof(*b));

	for (unsigned s = 0; b && s < slots; s++) {
		b[s] = malloc(words * sizeof(uint64_t));
		if (!b[s]) {
			bench_bitmaps_free(b, slots);
			return NULL;
		}
		memset(b[s], 0xff, words * sizeof(uint64_t)); /* every page of it faulted in */
	}
	return b;
}

void bench_bitmaps_free(uint64_t **b, unsigned slots)
{
	for (unsigned s = 0; b && s < slots; s++)
		free(b[s]);
	free(b);
}
