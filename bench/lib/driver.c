// SPDX-License-Identifier: MIT
/*
 * The benchmark driver (driver.h): runs a request -- one suite, once or
 * once per sweep value, optionally next to the host's KVM running the same
 * phases -- and owns what every suite shares: validation, the
 * selftest-style text, the side-by-side table with the gpamm/KVM ratios
 * and targets, the flatness verdicts of a sweep, the JSON report, and the
 * small-size plan of `make bench`. Suites (one file each in bench/) name their phases
 * and have one run function per backend (suite.h).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/gpamm.h"
#include "driver.h"
#include "json.h"
#include "kvm_peer.h"

/* ---- the suite table ------------------------------------------------------------- */

const struct bench_suite *const bench_suites[] = {
	&bench_suite_dirty_log_perf,
	&bench_suite_access_tracking_perf,
	&bench_suite_demand_paging,
	&bench_suite_memslot_perf,
	&bench_suite_access_cost,
	&bench_suite_pgtable,
	&bench_suite_tlb_flush,
	&bench_suite_fault_scaling,
};
const unsigned bench_nsuites = sizeof(bench_suites) / sizeof(bench_suites[0]);

const struct bench_suite *bench_find_suite(const char *name)
{
	for (unsigned i = 0; i < bench_nsuites; i++)
		if (!strcmp(bench_suites[i]->name, name))
			return bench_suites[i];
	return NULL;
}

void bench_request_init(struct bench_request *rq)
{
	memset(rq, 0, sizeof(*rq));
	rq->cfg = (struct bench_cfg){
		.vcpus = 1, .bytes_per_vcpu = 1ULL << 30, .iterations = 2, .page_shift = 12,
		.levels = 3, .slots = 1, .manual_protect = true, .initially_set = true,
		.thp = false, .out = stdout,
	};
}

int bench_usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "gpamm bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'gpamm bench --help'.\n");
	return BENCH_EXIT_USAGE;
}

#define FLAT_LIMIT 1.5

/*
 * The summary of `make bench`: while bench_all() runs its plan, every
 * target a run judges lands here as one row.
 */
struct sum_row {
	char where[48], what[64], value[40], target[40];
	const char *verdict;
};

static struct summary {
	const char *where;          /* the plan entry now running */
	struct sum_row rows[96];
	unsigned n;
} *sink;

__attribute__((format(printf, 4, 5)))
static void sink_add(const char *value, const char *target, const char *verdict,
		     const char *what_fmt, ...)
{
	struct sum_row *row;
	va_list ap;

	if (!sink || !*verdict || sink->n == sizeof(sink->rows) / sizeof(sink->rows[0]))
		return;
	row = &sink->rows[sink->n++];
	snprintf(row->where, sizeof(row->where), "%s", sink->where);
	va_start(ap, what_fmt);
	vsnprintf(row->what, sizeof(row->what), what_fmt, ap);
	va_end(ap);
	snprintf(row->value, sizeof(row->value), "%s", value);
	snprintf(row->target, sizeof(row->target), "%s", target);
	row->verdict = verdict;
}

/* A run's own targets (ratios and bounds within the run) into the summary. */
static void sink_ratios(const struct bench_run *r, const char *label)
{
	const struct bench_suite *s = r->suite;

	for (unsigned i = 0; sink && i < s->nratios; i++) {
		const struct bench_ratio *rt = &s->ratios[i];
		double v = bench_ratio_value(r, rt);
		char val[48], tgt[48];

		sink_add(bench_ratio_text(r, rt, v, val, sizeof(val)),
			 bench_ratio_target(r, rt, tgt, sizeof(tgt)), bench_ratio_verdict(r, rt, v),
			 "%s%s%s", rt->what, *label ? " @ " : "", label);
	}
}

void bench_target_report(FILE *f, const char *what, const char *value, const char *target,
			 bool pass)
{
	if (f)
		fprintf(f, "  %-62s %10s  %-14s %s\n", what, value, target, pass ? "PASS" : "MISS");
	sink_add(value, target, pass ? "PASS" : "MISS", "%s", what);
}

static const char *sweep_name(enum bench_sweep sw)
{
	return sw == BENCH_SWEEP_MEM ? "mem" : sw == BENCH_SWEEP_VCPUS ? "vcpus" : "slots";
}

/* One run configuration of the command: the only one, or one sweep value. */
struct point {
	struct bench_cfg cfg;
	char label[32];          /* sweep value as typed, "" without a sweep */
	struct bench_run gp, kvm;
	bool gp_init, kvm_init;
};

/* Is @c runnable? A usage error (exit 2) when not. @what names the sweep value. */
static int validate_cfg(const struct bench_suite *s, const struct bench_cfg *c, const char *what)
{
	const uint64_t psz = 1ULL << c->page_shift, total = bench_total_bytes(c);
	struct gpamm_geom g;
	char a[32], b[32];

	if (gpamm_geom_init(&g, c->page_shift, c->levels))
		return bench_usage_error("no LoongArch layout has %u-byte pages and %u "
				       "levels (4K: 3 or 4 levels; 16K, 64K: 2 or 3)",
				       1u << c->page_shift, c->levels);
	if (!c->bytes_per_vcpu || c->bytes_per_vcpu % psz)
		return bench_usage_error("%s%sbytes per vCPU (%llu) must be a positive "
				       "multiple of the %s page",
				       what, *what ? ": " : "", (unsigned long long)c->bytes_per_vcpu,
				       bench_size_str(psz, a, sizeof(a)));
	if (total / c->vcpus != c->bytes_per_vcpu)
		return bench_usage_error("memory size overflows");
	if (!s->uneven_slots && (total / psz) % c->slots)
		return bench_usage_error("%s%s%llu pages do not split into %u equal slots",
				       what, *what ? ": " : "", (unsigned long long)(total / psz),
				       c->slots);
	if (total > gpamm_geom_space(&g))
		return bench_usage_error("%s%s%s does not fit in the %s GPA space of %s",
				       what, *what ? ": " : "", bench_size_str(total, a, sizeof(a)),
				       bench_layout_name(c->page_shift, c->levels, b, sizeof(b)),
				       bench_size_str(gpamm_geom_space(&g), a, sizeof(a)));
	return 0;
}

/* ---- text output ------------------------------------------------------------------- */

static void print_counters(const struct bench_run *r)
{
	FILE *f = r->cfg.out;

	if (!f)
		return;
	for (unsigned c = 0; c < r->suite->ncounters; c++) {
		uint64_t sum = 0;
		bool all = true;

		if (!r->has_count[c])
			continue;
		fprintf(f, "%c%s per iteration:", toupper((unsigned char)r->suite->counters[c].label[0]),
			r->suite->counters[c].label + 1);
		for (unsigned k = 0; k < r->cfg.iterations; k++) {
			fprintf(f, " %llu", (unsigned long long)r->count[c][k]);
			sum += r->count[c][k];
			all &= r->count[c][k] == r->pages;
		}
		fprintf(f, " (%s%.2f per page of %llu)\n", all ? "every page once: " : "",
			(double)sum / r->cfg.iterations / (double)r->pages,
			(unsigned long long)r->pages);
	}
}

static double ratio_of(const struct point *pt, int idx)
{
	double g = bench_phase_per_page(&pt->gp, idx), k = bench_phase_per_page(&pt->kvm, idx);

	return (isnan(g) || isnan(k) || k <= 0) ? NAN : g / k;
}

static const char *verdict(double ratio, double max)
{
	return isnan(ratio) ? "n/a" : ratio <= max ? "PASS" : "MISS";
}

/* A wall time with a unit that suits it: "1.030 s", "565.3 us", "4.518 us". */
static const char *fmt_time(double ns, char *buf, size_t len)
{
	if (isnan(ns))
		snprintf(buf, len, "-");
	else if (ns >= 1e9)
		snprintf(buf, len, "%.3f s", ns / 1e9);
	else if (ns >= 1e6)
		snprintf(buf, len, "%.3f ms", ns / 1e6);
	else
		snprintf(buf, len, "%.3f us", ns / 1e3);
	return buf;
}

static void print_side_by_side(const struct point *pt, FILE *f)
{
	const struct bench_suite *s = pt->gp.suite;
	const struct bench_cfg *c = &pt->cfg;
	char tot[32], fl[96], note[512], lay[32];

	fprintf(f, "Side by side, same run: %s, %u vCPU%s, %u slot%s, %u iteration%s, %s; "
		"gpamm %s, KVM %s with 4K pages\n",
		bench_size_str(bench_total_bytes(c), tot, sizeof(tot)), c->vcpus,
		c->vcpus == 1 ? "" : "s", c->slots, c->slots == 1 ? "" : "s", c->iterations,
		c->iterations == 1 ? "" : "s", bench_protect_mode(c),
		bench_layout_name(c->page_shift, c->levels, lay, sizeof(lay)),
		kvm_peer_flavour(fl, sizeof(fl)));
	fprintf(f, "  %-24s %14s %10s   %14s %10s   %9s\n", "phase", "gpamm time", "ns/page",
		"KVM time", "ns/page", "gpamm/KVM");
	for (unsigned i = 0; i < s->nphases; i++) {
		double gt = bench_phase_mean_ns(&pt->gp, (int)i), kt = bench_phase_mean_ns(&pt->kvm, (int)i);
		char gp[32], kp[32], rt[32], gts[32], kts[32];
		double r = ratio_of(pt, (int)i);

		if (isnan(gt) && isnan(kt))
			continue;
		bench_fmt_ns(bench_phase_per_page(&pt->gp, (int)i), gp, sizeof(gp));
		bench_fmt_ns(bench_phase_per_page(&pt->kvm, (int)i), kp, sizeof(kp));
		if (isnan(r))
			snprintf(rt, sizeof(rt), "-");
		else
			snprintf(rt, sizeof(rt), "%.3f", r);
		fprintf(f, "  %-24s %14s %10s   %14s %10s   %9s\n", s->phases[i].table,
			fmt_time(gt, gts, sizeof(gts)), gp, fmt_time(kt, kts, sizeof(kts)), kp, rt);
	}
	fprintf(f, "  ns/page: populate and dirty memory per page per vCPU (wall time / pages "
		"per vCPU); the log calls per page of all memory. Ratios are of ns/page.\n");
	fprintf(f, "  Note: %s\n", kvm_peer_exit_note(note, sizeof(note)));
	if (pt->cfg.page_shift != 12)
		fprintf(f, "  Note: gpamm uses %u-byte pages here and KVM 4K pages, so the "
			"ratios compare per-page costs of different page sizes.\n",
			1u << pt->cfg.page_shift);
}

static void print_targets(const struct point *pt, FILE *f)
{
	const struct bench_suite *s = pt->gp.suite;

	if (!s->ntargets)
		return;
	fprintf(f, "Targets (set for %s)%s:\n", s->targets_for,
		s->targets_apply && !s->targets_apply(&pt->cfg)
			? "; this run differs, so the verdicts are indicative" : "");
	for (unsigned t = 0; t < s->ntargets; t++) {
		const struct bench_target *tg = &s->targets[t];
		double r = ratio_of(pt, bench_phase_index(s, tg->phase_key));
		char rt[32];

		if (isnan(r))
			snprintf(rt, sizeof(rt), "-");
		else
			snprintf(rt, sizeof(rt), "%.3f", r);
		fprintf(f, "  %-36s gpamm/KVM %8s <= %.2f   %s\n", tg->what, rt, tg->max_ratio,
			verdict(r, tg->max_ratio));
		if (sink) {
			char tgt[40];

			snprintf(tgt, sizeof(tgt), "<= %.2fx KVM", tg->max_ratio);
			strcat(rt, "x");
			sink_add(rt, tgt, verdict(r, tg->max_ratio), "%s, gpamm/KVM", tg->what);
		}
	}
}

/* ---- sweep and flatness -------------------------------------------------------------- */

struct flatness {
	double v[BENCH_MAX_SWEEP];
	unsigned nvalid, imin, imax;
	double spread, first_to_last;
	bool flat;
};

static void flatness_of(const struct point *pts, unsigned n, bool kvm, int idx,
			struct flatness *fl)
{
	int first = -1, last = -1;

	memset(fl, 0, sizeof(*fl));
	for (unsigned i = 0; i < n; i++) {
		const struct bench_run *r = kvm ? &pts[i].kvm : &pts[i].gp;
		double v = (kvm ? pts[i].kvm_init : pts[i].gp_init) && r->status == BENCH_RAN
				   ? bench_phase_per_page(r, idx) : NAN;

		fl->v[i] = v;
		if (isnan(v) || v <= 0)
			continue;
		if (!fl->nvalid || v < fl->v[fl->imin])
			fl->imin = i;
		if (!fl->nvalid || v > fl->v[fl->imax])
			fl->imax = i;
		if (first < 0)
			first = (int)i;
		last = (int)i;
		fl->nvalid++;
	}
	fl->spread = fl->nvalid ? fl->v[fl->imax] / fl->v[fl->imin] : NAN;
	fl->first_to_last = fl->nvalid ? fl->v[last] / fl->v[first] : NAN;
	fl->flat = fl->nvalid >= 2 && fl->spread <= FLAT_LIMIT;
}

/* The suite's within-run ratios at each sweep value, and its word on what is not flat. */
static void print_sweep_ratios(const struct bench_request *o, const struct point *pts, bool kvm,
			       FILE *f)
{
	const struct bench_suite *s = o->suite;
	const struct bench_run *runs[BENCH_MAX_SWEEP];
	const char *labels[BENCH_MAX_SWEEP];
	unsigned n = 0;

	for (unsigned i = 0; i < o->nsweep; i++) {
		const struct bench_run *r = kvm ? &pts[i].kvm : &pts[i].gp;

		if (!(kvm ? pts[i].kvm_init : pts[i].gp_init) || r->status != BENCH_RAN)
			continue;
		runs[n] = r;
		labels[n++] = pts[i].label;
	}
	unsigned nreal = 0;

	for (unsigned t = 0; t < s->nratios; t++)
		nreal += s->ratios[t].base != NULL;
	if (n && nreal) {
		fprintf(f, "  ratios within each run:\n");
		for (unsigned t = 0; t < s->nratios; t++) {
			const struct bench_ratio *rt = &s->ratios[t];
			double lo = NAN, hi = NAN;
			unsigned nv = 0;
			char name[64], buf[32];

			if (!rt->base) /* a bound: the phase table has its figure */
				continue;
			snprintf(name, sizeof(name), "%s/%s", rt->key, rt->base);
			fprintf(f, "  %-24s", name);
			for (unsigned i = 0, k = 0; i < o->nsweep; i++) {
				double v = NAN;

				if (k < n && labels[k] == pts[i].label)
					v = bench_ratio_value(runs[k++], rt);
				if (isnan(v) || v <= 0) {
					fprintf(f, " %9s", "-");
					continue;
				}
				snprintf(buf, sizeof(buf), "%.2fx", v);
				fprintf(f, " %9s", buf);
				lo = isnan(lo) || v < lo ? v : lo;
				hi = isnan(hi) || v > hi ? v : hi;
				nv++;
			}
			fprintf(f, "   %6.2fx  %s\n", hi / lo,
				nv < 2 ? "n/a (one value)" : hi / lo <= FLAT_LIMIT ? "flat" : "NOT flat");
		}
	}
	if (!kvm && n >= 2 && s->sweep_explain)
		s->sweep_explain(runs, labels, n, f);
	if (!kvm && n >= 2 && s->sweep_targets)
		s->sweep_targets(runs, labels, n, f);
}

static void print_sweep_table(const struct bench_request *o, const struct point *pts, bool kvm,
			      FILE *f)
{
	const struct bench_suite *s = o->suite;
	const char *pname = sweep_name(o->sweep);
	unsigned nflat = 0, nvalid2 = 0;
	unsigned cpus = bench_online_cpus();

	fprintf(f, "\nSweep %s, %s: cost in ns per page (vCPU phases per page per vCPU, "
		"VMM calls per page of all memory; per access where the phase says ns/op)\n",
		pname, kvm ? "KVM" : "gpamm");
	fprintf(f, "  %-24s", "phase");
	for (unsigned i = 0; i < o->nsweep; i++)
		fprintf(f, " %9s", pts[i].label);
	fprintf(f, "   %-7s  %s\n", "max/min", "flat (max/min <= 1.5)?");
	for (unsigned p = 0; p < s->nphases; p++) {
		struct flatness fl;
		char buf[32];

		flatness_of(pts, o->nsweep, kvm, (int)p, &fl);
		if (!fl.nvalid)
			continue;
		for (unsigned k = 0; !kvm && s->flat && s->flat[k]; k++) {
			char val[32];

			if (strcmp(s->flat[k], s->phases[p].key) || fl.nvalid < 2)
				continue;
			snprintf(val, sizeof(val), "%.2fx", fl.spread);
			sink_add(val, "<= 1.50x", fl.flat ? "PASS" : "MISS",
				 "%s flat over %s=%s..%s (max/min)", s->phases[p].table, pname,
				 pts[0].label, pts[o->nsweep - 1].label);
		}
		fprintf(f, "  %-24s", s->phases[p].table);
		for (unsigned i = 0; i < o->nsweep; i++)
			fprintf(f, " %9s", bench_fmt_ns(fl.v[i], buf, sizeof(buf)));
		fprintf(f, "   %6.2fx  ", fl.spread);
		if (fl.nvalid < 2) {
			fprintf(f, "n/a (one value)\n");
			continue;
		}
		nvalid2++;
		if (fl.flat) {
			nflat++;
			fprintf(f, "flat\n");
			continue;
		}
		fprintf(f, "NOT flat: lowest at %s; above 1.5x of it at", pts[fl.imin].label);
		for (unsigned i = 0; i < o->nsweep; i++)
			if (!isnan(fl.v[i]) && fl.v[i] > FLAT_LIMIT * fl.v[fl.imin])
				fprintf(f, " %s (%.2fx)", pts[i].label, fl.v[i] / fl.v[fl.imin]);
		if (fl.first_to_last < 1 / FLAT_LIMIT)
			fprintf(f, "; cheaper per page as the sweep grows%s",
				o->sweep == BENCH_SWEEP_MEM ? " (a fixed cost spread over more pages)" : "");
		else if (fl.first_to_last > FLAT_LIMIT)
			fprintf(f, "; dearer per page as the sweep grows (%.2fx first to last)",
				fl.first_to_last);
		fprintf(f, "\n");
	}
	if (!nvalid2)
		fprintf(f, "  %s: fewer than two sweep values ran; no flatness verdict.\n",
			kvm ? "KVM" : "gpamm");
	else
		fprintf(f, "  %s: per-page cost stayed flat (max/min <= %.1fx) in %u of %u phases "
			"across %s=%s..%s.\n", kvm ? "KVM" : "gpamm", FLAT_LIMIT, nflat, nvalid2,
			pname, pts[0].label, pts[o->nsweep - 1].label);
	print_sweep_ratios(o, pts, kvm, f);
	if (o->sweep == BENCH_SWEEP_VCPUS)
		for (unsigned i = 0; i < o->nsweep; i++)
			if (pts[i].cfg.vcpus > cpus) {
				fprintf(f, "  (%s vCPUs > %u online CPUs: vCPU threads share CPUs, so "
					"per-vCPU costs grow with the oversubscription.)\n",
					pts[i].label, cpus);
				break;
			}
}

/* ---- JSON ---------------------------------------------------------------------------- */

static const char *status_name(enum bench_status s)
{
	return s == BENCH_RAN ? "ran" : s == BENCH_SKIPPED ? "skipped" : "failed";
}

static void json_cfg(struct jw *w, const char *key, const struct bench_cfg *c)
{
	jw_obj(w, key);
	jw_u64(w, "vcpus", c->vcpus);
	jw_u64(w, "bytes_per_vcpu", c->bytes_per_vcpu);
	jw_u64(w, "total_bytes", bench_total_bytes(c));
	jw_u64(w, "iterations", c->iterations);
	jw_u64(w, "page_shift", c->page_shift);
	jw_u64(w, "levels", c->levels);
	jw_u64(w, "slots", c->slots);
	jw_bool(w, "manual_protect", c->manual_protect);
	jw_bool(w, "initially_set", c->initially_set);
	jw_str(w, "backing", c->thp ? "thp" : "anon");
	jw_bool(w, "pretouched", true);
	jw_obj_end(w);
}

static void json_run(struct jw *w, const struct bench_run *r)
{
	const struct bench_suite *s = r->suite;

	jw_obj(w, NULL);
	jw_str(w, "backend", r->backend);
	jw_str(w, "status", status_name(r->status));
	if (r->status != BENCH_RAN)
		jw_str(w, "reason", r->reason);
	jw_u64(w, "page_size", r->page_size);
	jw_u64(w, "pages", r->pages);
	jw_u64(w, "pages_per_vcpu", r->pages_per_vcpu);
	jw_u64(w, "vcpus", r->cfg.vcpus);
	jw_u64(w, "slots", r->cfg.slots);
	jw_u64(w, "iterations", r->cfg.iterations);
	jw_u64(w, "gpa_base", r->gpa_base);
	jw_num(w, "pretouch_s", r->touch_s);
	jw_str(w, "host", r->host_desc);
	jw_obj(w, "phases");
	for (unsigned i = 0; i < s->nphases; i++) {
		const struct bench_phase_def *d = &s->phases[i];

		if (!r->has[i])
			continue;
		jw_obj(w, d->key);
		jw_str(w, "label", d->label);
		jw_bool(w, "per_iteration", d->per_iter);
		jw_str(w, "per_page_unit", bench_norm_unit(d));
		if (d->norm == BENCH_NORM_OP)
			jw_u64(w, "ops", r->ops[i]);
		jw_num(w, "ns", bench_phase_mean_ns(r, (int)i));
		jw_num(w, "ns_per_page", bench_phase_per_page(r, (int)i));
		jw_arr(w, "samples_ns");
		for (unsigned k = 0; k < r->nsamples[i]; k++)
			jw_num(w, NULL, r->ns[i][k]);
		jw_arr_end(w);
		jw_obj_end(w);
	}
	jw_obj_end(w);
	if (s->nratios) {
		jw_arr(w, "ratios");
		for (unsigned t = 0; t < s->nratios; t++) {
			const struct bench_ratio *rt = &s->ratios[t];
			double v = bench_ratio_value(r, rt);

			jw_obj(w, NULL);
			jw_str(w, "phase", rt->key);
			if (rt->base) {
				jw_str(w, "base", rt->base);
				jw_num(w, "ratio", v);
			} else {
				jw_null(w, "base");
				jw_num(w, "value", v);
			}
			jw_str(w, "what", rt->what);
			if (*bench_ratio_verdict(r, rt, v)) {
				jw_num(w, rt->base ? "max_ratio" : "max", rt->max_ratio);
				jw_str(w, "verdict", bench_ratio_verdict(r, rt, v));
			}
			jw_obj_end(w);
		}
		jw_arr_end(w);
	}
	jw_arr(w, "iterations_detail");
	for (unsigned k = 0; r->status == BENCH_RAN && k < r->cfg.iterations; k++) {
		char key[48];

		jw_obj(w, NULL);
		jw_u64(w, "iteration", k + 1);
		for (unsigned i = 0; i < s->nphases; i++) {
			if (!s->phases[i].per_iter || !r->has[i] || k >= r->nsamples[i])
				continue;
			snprintf(key, sizeof(key), "%s_ns", s->phases[i].key);
			jw_num(w, key, r->ns[i][k]);
		}
		for (unsigned c = 0; c < s->ncounters; c++)
			if (r->has_count[c])
				jw_u64(w, s->counters[c].key, r->count[c][k]);
		jw_obj_end(w);
	}
	jw_arr_end(w);
	jw_obj_end(w);
}

static void json_comparison(struct jw *w, const struct point *pt)
{
	const struct bench_suite *s = pt->gp.suite;
	char note[512];

	jw_obj(w, "comparison");
	jw_obj(w, "phases");
	for (unsigned i = 0; i < s->nphases; i++) {
		if (!pt->gp.has[i] && !pt->kvm.has[i])
			continue;
		jw_obj(w, s->phases[i].key);
		jw_num(w, "gpamm_ns_per_page", bench_phase_per_page(&pt->gp, (int)i));
		jw_num(w, "kvm_ns_per_page", bench_phase_per_page(&pt->kvm, (int)i));
		jw_num(w, "ratio", ratio_of(pt, (int)i));
		jw_obj_end(w);
	}
	jw_obj_end(w);
	jw_str(w, "targets_for", s->targets_for);
	jw_bool(w, "targets_apply", !s->targets_apply || s->targets_apply(&pt->cfg));
	jw_arr(w, "targets");
	for (unsigned t = 0; t < s->ntargets; t++) {
		double r = ratio_of(pt, bench_phase_index(s, s->targets[t].phase_key));

		jw_obj(w, NULL);
		jw_str(w, "phase", s->targets[t].phase_key);
		jw_str(w, "what", s->targets[t].what);
		jw_num(w, "ratio", r);
		jw_num(w, "max_ratio", s->targets[t].max_ratio);
		jw_str(w, "verdict", verdict(r, s->targets[t].max_ratio));
		jw_obj_end(w);
	}
	jw_arr_end(w);
	jw_str(w, "note", kvm_peer_exit_note(note, sizeof(note)));
	jw_obj_end(w);
}

/* The suite's within-run ratios at each sweep value, per backend that ran. */
static void json_sweep_ratios(struct jw *w, const struct bench_request *o, const struct point *pts)
{
	const struct bench_suite *s = o->suite;

	jw_obj(w, "ratios");
	for (int b = 0; b < (o->peer_kvm ? 2 : 1); b++) {
		jw_obj(w, b ? "kvm" : "gpamm");
		for (unsigned t = 0; t < s->nratios; t++) {
			const struct bench_ratio *rt = &s->ratios[t];
			double lo = NAN, hi = NAN;
			unsigned nv = 0;
			char key[64];

			if (!rt->base)
				continue;
			snprintf(key, sizeof(key), "%s/%s", rt->key, rt->base);
			jw_obj(w, key);
			jw_arr(w, "values");
			for (unsigned i = 0; i < o->nsweep; i++) {
				const struct bench_run *r = b ? &pts[i].kvm : &pts[i].gp;
				double v = (b ? pts[i].kvm_init : pts[i].gp_init) &&
					   r->status == BENCH_RAN ? bench_ratio_value(r, rt) : NAN;

				jw_num(w, NULL, v);
				if (!isnan(v) && v > 0) {
					lo = isnan(lo) || v < lo ? v : lo;
					hi = isnan(hi) || v > hi ? v : hi;
					nv++;
				}
			}
			jw_arr_end(w);
			jw_num(w, "max_over_min", hi / lo);
			jw_bool(w, "flat", nv >= 2 && hi / lo <= FLAT_LIMIT);
			jw_obj_end(w);
		}
		jw_obj_end(w);
	}
	jw_obj_end(w);
}

static void json_sweep(struct jw *w, const struct bench_request *o, const struct point *pts)
{
	const struct bench_suite *s = o->suite;

	jw_obj(w, "sweep");
	jw_str(w, "param", sweep_name(o->sweep));
	jw_arr(w, "values");
	for (unsigned i = 0; i < o->nsweep; i++)
		jw_str(w, NULL, pts[i].label);
	jw_arr_end(w);
	jw_num(w, "flat_limit", FLAT_LIMIT);
	jw_obj(w, "backends");
	for (int b = 0; b < (o->peer_kvm ? 2 : 1); b++) {
		jw_obj(w, b ? "kvm" : "gpamm");
		for (unsigned p = 0; p < s->nphases; p++) {
			struct flatness fl;

			flatness_of(pts, o->nsweep, b, (int)p, &fl);
			if (!fl.nvalid)
				continue;
			jw_obj(w, s->phases[p].key);
			jw_arr(w, "ns_per_page");
			for (unsigned i = 0; i < o->nsweep; i++)
				jw_num(w, NULL, fl.v[i]);
			jw_arr_end(w);
			jw_num(w, "max_over_min", fl.spread);
			jw_num(w, "last_over_first", fl.first_to_last);
			jw_bool(w, "flat", fl.flat);
			jw_arr(w, "not_flat_at");
			for (unsigned i = 0; i < o->nsweep; i++)
				if (!isnan(fl.v[i]) && fl.v[i] > FLAT_LIMIT * fl.v[fl.imin])
					jw_str(w, NULL, pts[i].label);
			jw_arr_end(w);
			jw_obj_end(w);
		}
		jw_obj_end(w);
	}
	jw_obj_end(w);
	if (s->nratios)
		json_sweep_ratios(w, o, pts);
	jw_obj_end(w);
}

static void json_report(const struct bench_request *o, const struct point *pts, unsigned npts,
			bool peer_usable, const char *peer_reason)
{
	struct jw w;
	char fl[96], note[512];
	bool peer_ran = false;

	jw_init(&w, stdout);
	jw_obj(&w, NULL);
	jw_str(&w, "suite", o->suite->name);
	json_cfg(&w, "config", &o->cfg);
	if (o->peer_kvm) {
		for (unsigned i = 0; i < npts; i++)
			peer_ran |= pts[i].kvm_init && pts[i].kvm.status == BENCH_RAN;
		jw_obj(&w, "peer");
		jw_str(&w, "name", "kvm");
		jw_str(&w, "status", peer_ran ? "ran" : "skipped");
		if (!peer_ran) {
			const char *why = peer_usable ? "" : peer_reason;

			for (unsigned i = 0; peer_usable && i < npts; i++)
				if (pts[i].kvm_init && pts[i].kvm.reason[0]) {
					why = pts[i].kvm.reason;
					break;
				}
			jw_str(&w, "reason", why);
		}
		jw_str(&w, "flavour", kvm_peer_flavour(fl, sizeof(fl)));
		jw_str(&w, "note", kvm_peer_exit_note(note, sizeof(note)));
		jw_obj_end(&w);
	} else {
		jw_null(&w, "peer");
	}
	jw_arr(&w, "points");
	for (unsigned i = 0; i < npts; i++) {
		jw_obj(&w, NULL);
		jw_str(&w, "label", pts[i].label);
		json_cfg(&w, "config", &pts[i].cfg);
		jw_arr(&w, "runs");
		if (pts[i].gp_init)
			json_run(&w, &pts[i].gp);
		if (pts[i].kvm_init)
			json_run(&w, &pts[i].kvm);
		jw_arr_end(&w);
		if (pts[i].gp_init && pts[i].kvm_init && pts[i].gp.status == BENCH_RAN &&
		    pts[i].kvm.status == BENCH_RAN)
			json_comparison(&w, &pts[i]);
		jw_obj_end(&w);
	}
	jw_arr_end(&w);
	if (o->sweep != BENCH_SWEEP_NONE)
		json_sweep(&w, o, pts);
	jw_obj_end(&w);
	jw_finish(&w);
}

/* ---- running ------------------------------------------------------------------------- */

static int run_point(const struct bench_request *o, struct point *pt, bool peer_usable,
		     const char *peer_reason)
{
	const struct bench_suite *s = o->suite;
	FILE *f = pt->cfg.out;
	char why[400];

	if (bench_run_init(&pt->gp, s, "gpamm", &pt->cfg, 1ULL << pt->cfg.page_shift)) {
		fprintf(stderr, "gpamm bench: out of memory\n");
		return BENCH_EXIT_FAIL;
	}
	pt->gp_init = true;
	if (s->run_gpamm(&pt->cfg, &pt->gp) || pt->gp.status != BENCH_RAN) {
		fprintf(stderr, "gpamm bench %s: gpamm run failed: %s\n", s->name, pt->gp.reason);
		return BENCH_EXIT_FAIL;
	}
	bench_print_averages(&pt->gp);
	print_counters(&pt->gp);
	bench_print_ratios(&pt->gp);
	if (sink) {
		char lab[48] = "";

		if (pt->label[0])
			snprintf(lab, sizeof(lab), "%s=%s", sweep_name(o->sweep), pt->label);
		sink_ratios(&pt->gp, lab);
	}
	if (s->check && !s->check(&pt->gp, why, sizeof(why))) {
		fprintf(stderr, "gpamm bench %s: gpamm counts do not add up: %s\n", s->name, why);
		pt->gp.status = BENCH_FAILED;
		snprintf(pt->gp.reason, sizeof(pt->gp.reason), "%s", why);
		return BENCH_EXIT_FAIL;
	}

	if (!o->peer_kvm)
		return BENCH_EXIT_OK;
	if (bench_run_init(&pt->kvm, s, "kvm", &pt->cfg, 4096)) {
		fprintf(stderr, "gpamm bench: out of memory\n");
		return BENCH_EXIT_FAIL;
	}
	pt->kvm_init = true;
	if (f)
		fputc('\n', f);
	if (!peer_usable) {
		bench_run_fail(&pt->kvm, BENCH_SKIPPED, "%s", peer_reason);
	} else if (!s->run_kvm) {
		bench_run_fail(&pt->kvm, BENCH_SKIPPED, "suite %s has no KVM peer", s->name);
	} else {
		s->run_kvm(&pt->cfg, &pt->kvm);
		if (pt->kvm.status == BENCH_RAN) {
			bench_print_averages(&pt->kvm);
			print_counters(&pt->kvm);
			if (s->check && !s->check(&pt->kvm, why, sizeof(why)) && f)
				fprintf(f, "KVM counts do not add up: %s\n", why);
		}
	}
	if (!f)
		return BENCH_EXIT_OK;
	if (pt->kvm.status != BENCH_RAN) {
		if (peer_usable) /* otherwise said once, before the first run */
			fprintf(f, "KVM peer: skipped: %s\n", pt->kvm.reason);
		return BENCH_EXIT_OK;
	}
	fputc('\n', f);
	print_side_by_side(pt, f);
	print_targets(pt, f);
	return BENCH_EXIT_OK;
}

/* ---- a request ------------------------------------------------------------------------ */

int bench_execute(const struct bench_request *o)
{
	struct point *pts = NULL;
	char peer_reason[400] = "", a[32], b[32];
	bool peer_usable = false;
	uint64_t avail;
	unsigned npts;
	int ret = BENCH_EXIT_OK;

	/* The configurations to run: one, or one per sweep value. */
	npts = o->sweep == BENCH_SWEEP_NONE ? 1 : o->nsweep;
	pts = calloc(npts, sizeof(*pts));
	if (!pts) {
		fprintf(stderr, "gpamm bench: out of memory\n");
		return BENCH_EXIT_FAIL;
	}
	avail = bench_mem_available();
	for (unsigned i = 0; i < npts; i++) {
		struct bench_cfg *c = &pts[i].cfg;
		uint64_t total = bench_total_bytes(&o->cfg);

		*c = o->cfg;
		if (o->sweep == BENCH_SWEEP_MEM) {
			if (o->sweep_val[i] % c->vcpus) {
				ret = bench_usage_error("--sweep mem=%s does not split over %u "
						      "vCPUs", o->sweep_txt[i], c->vcpus);
				goto out;
			}
			c->bytes_per_vcpu = o->sweep_val[i] / c->vcpus;
		} else if (o->sweep == BENCH_SWEEP_VCPUS) {
			c->vcpus = (unsigned)o->sweep_val[i];
			if (total % c->vcpus) {
				ret = bench_usage_error("%s do not split over %s vCPUs",
						      bench_size_str(total, a, sizeof(a)),
						      o->sweep_txt[i]);
				goto out;
			}
			c->bytes_per_vcpu = total / c->vcpus;
		} else if (o->sweep == BENCH_SWEEP_SLOTS) {
			c->slots = (unsigned)o->sweep_val[i];
		}
		if (o->sweep != BENCH_SWEEP_NONE)
			snprintf(pts[i].label, sizeof(pts[i].label), "%s", o->sweep_txt[i]);
		ret = validate_cfg(o->suite, c, pts[i].label);
		if (ret)
			goto out;
		if (avail && bench_total_bytes(c) + (256u << 20) > avail) {
			fprintf(stderr, "gpamm bench: %s of guest memory%s%s does not fit: "
				"MemAvailable is %s (256 MiB are left to the system)\n",
				bench_size_str(bench_total_bytes(c), a, sizeof(a)),
				pts[i].label[0] ? " at " : "", pts[i].label,
				bench_size_str(avail, b, sizeof(b)));
			ret = BENCH_EXIT_FAIL;
			goto out;
		}
	}

	if (o->peer_kvm) {
		peer_usable = !kvm_peer_probe(peer_reason, sizeof(peer_reason));
		if (!peer_usable && !o->json)
			printf("KVM peer: skipped: %s\n\n", peer_reason);
	}
	for (unsigned i = 0; i < npts; i++) {
		if (o->sweep != BENCH_SWEEP_NONE && !o->json)
			printf("%s=== sweep %s=%s (%u of %u) ===\n", i ? "\n" : "",
			       sweep_name(o->sweep), pts[i].label, i + 1, npts);
		ret = run_point(o, &pts[i], peer_usable, peer_reason);
		if (ret)
			break;
	}
	if (!ret && o->sweep != BENCH_SWEEP_NONE && !o->json) {
		print_sweep_table(o, pts, false, stdout);
		if (o->peer_kvm) {
			bool any = false;

			for (unsigned i = 0; i < npts; i++)
				any |= pts[i].kvm_init && pts[i].kvm.status == BENCH_RAN;
			if (any)
				print_sweep_table(o, pts, true, stdout);
		}
	}
	if (o->json)
		json_report(o, pts, npts, peer_usable, peer_reason);
out:
	for (unsigned i = 0; i < npts; i++) {
		if (pts[i].gp_init)
			bench_run_free(&pts[i].gp);
		if (pts[i].kvm_init)
			bench_run_free(&pts[i].kvm);
	}
	free(pts);
	return ret;
}


/* ---- make bench ------------------------------------------------------------------------- */

/*
 * The plan: every suite once, at sizes that keep the whole run to a few
 * minutes, with the configurations the targets are set for (access_cost
 * with 4K host pages and with THP; dirty_log_perf at 1 GiB with every page
 * write-protected by enable and by each CLEAR; memslot_perf swept over
 * KVM's slot counts; tlb_flush over 1..8 vCPUs).
 */
struct plan_entry {
	const char *suite, *where;
	unsigned page_shift, vcpus, iterations;
	uint64_t bytes_per_vcpu;
	bool thp, no_initially_set;
	enum bench_sweep sweep;
	const char *sweep_txt; /* comma-separated values */
};

static const struct plan_entry plan[] = {
	{ .suite = "pgtable", .where = "pgtable 4K", .page_shift = 12, .vcpus = 1,
	  .iterations = 7, .bytes_per_vcpu = 256ULL << 20 },
	{ .suite = "pgtable", .where = "pgtable 16K", .page_shift = 14, .vcpus = 1,
	  .iterations = 7, .bytes_per_vcpu = 256ULL << 20 },
	{ .suite = "access_cost", .where = "access_cost 4K", .page_shift = 12, .vcpus = 1,
	  .iterations = 5, .bytes_per_vcpu = 256ULL << 20 },
	{ .suite = "access_cost", .where = "access_cost 4K THP", .page_shift = 12, .vcpus = 1,
	  .iterations = 5, .bytes_per_vcpu = 256ULL << 20, .thp = true },
	{ .suite = "dirty_log_perf", .where = "dirty_log_perf 4K", .page_shift = 12, .vcpus = 1,
	  .iterations = 3, .bytes_per_vcpu = 1ULL << 30, .no_initially_set = true },
	{ .suite = "access_tracking_perf", .where = "access_tracking 4K", .page_shift = 12,
	  .vcpus = 1, .iterations = 2, .bytes_per_vcpu = 256ULL << 20 },
	{ .suite = "demand_paging", .where = "demand_paging 4K", .page_shift = 12, .vcpus = 1,
	  .iterations = 2, .bytes_per_vcpu = 256ULL << 20 },
	{ .suite = "memslot_perf", .where = "memslot_perf 4K", .page_shift = 12, .vcpus = 1,
	  .iterations = 2, .bytes_per_vcpu = 256ULL << 20, .sweep = BENCH_SWEEP_SLOTS,
	  .sweep_txt = "32,1024,32767" },
	{ .suite = "fault_scaling", .where = "fault_scaling 4K", .page_shift = 12, .vcpus = 2,
	  .iterations = 3, .bytes_per_vcpu = 128ULL << 20, .sweep = BENCH_SWEEP_VCPUS,
	  .sweep_txt = "1,2" },
	{ .suite = "tlb_flush", .where = "tlb_flush", .page_shift = 12, .vcpus = 8,
	  .iterations = 3, .bytes_per_vcpu = 64ULL << 10, .sweep = BENCH_SWEEP_VCPUS,
	  .sweep_txt = "1,2,4,8" },
};

int bench_all(bool peer_kvm)
{
	static struct summary sum;
	unsigned failed = 0, pass = 0, miss = 0;
	double t0 = bench_now_ns();

	memset(&sum, 0, sizeof(sum));
	sink = &sum;
	printf("gpamm bench all: %zu runs of %u suites at small sizes; a MISS is reported, not a "
	       "failure (the machine is shared: compare the same-run ratios)\n",
	       sizeof(plan) / sizeof(plan[0]), bench_nsuites);
	for (size_t i = 0; i < sizeof(plan) / sizeof(plan[0]); i++) {
		const struct plan_entry *e = &plan[i];
		struct bench_request rq;
		int ret;

		bench_request_init(&rq);
		rq.suite = bench_find_suite(e->suite);
		rq.peer_kvm = peer_kvm && rq.suite->run_kvm;
		rq.cfg.page_shift = e->page_shift;
		rq.cfg.vcpus = e->vcpus;
		rq.cfg.iterations = e->iterations;
		rq.cfg.bytes_per_vcpu = e->bytes_per_vcpu;
		rq.cfg.thp = e->thp;
		rq.cfg.initially_set = !e->no_initially_set;
		rq.sweep = e->sweep;
		if (e->sweep_txt) {
			const char *p = e->sweep_txt;

			while (*p && rq.nsweep < BENCH_MAX_SWEEP) {
				size_t n = strcspn(p, ",");

				snprintf(rq.sweep_txt[rq.nsweep], sizeof(rq.sweep_txt[0]), "%.*s",
					 (int)n, p);
				rq.sweep_val[rq.nsweep++] = strtoull(p, NULL, 10);
				p += n + (p[n] == ',');
			}
		}
		sum.where = e->where;
		printf("\n######## %zu/%zu: %s ########\n", i + 1, sizeof(plan) / sizeof(plan[0]),
		       e->where);
		fflush(stdout);
		ret = bench_execute(&rq);
		fflush(stdout);
		if (ret) {
			failed++;
			printf("######## %s: FAILED (exit %d)\n", e->where, ret);
		}
	}
	sink = NULL;

	printf("\n== gpamm bench all: every target (same-run ratios; bounds in their unit) ==\n");
	printf("%-22s %-60s %18s  %-22s %s\n", "run", "target", "figure", "wanted", "");
	for (unsigned i = 0; i < sum.n; i++) {
		const struct sum_row *row = &sum.rows[i];

		printf("%-22s %-60s %18s  %-22s %s\n", row->where, row->what, row->value,
		       row->target, row->verdict);
		pass += !strcmp(row->verdict, "PASS");
		miss += !strcmp(row->verdict, "MISS");
	}
	printf("targets: %u PASS, %u MISS, %u n/a; runs: %zu, %u failed; %.0f s in all%s\n", pass,
	       miss, sum.n - pass - miss, sizeof(plan) / sizeof(plan[0]), failed,
	       (bench_now_ns() - t0) / 1e9,
	       peer_kvm ? "" : " (no KVM peer: run 'gpamm bench all --peer kvm' for those targets)");
	return failed ? BENCH_EXIT_FAIL : BENCH_EXIT_OK;
}
