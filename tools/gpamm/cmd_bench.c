// SPDX-License-Identifier: MIT
/*
 * "gpamm bench SUITE" and "gpamm bench all": the command-line face of the
 * benchmark system in bench/ (bench/lib/driver.h). This file turns the
 * arguments into a request and hands it over; the suites, the runs, the
 * tables and the JSON are the driver's.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/gpamm.h"
#include "cli.h"
#include "lib/driver.h"

/* ---- options ---------------------------------------------------------------------- */

enum {
	OPT_HELP = 1, OPT_VCPUS, OPT_BYTES, OPT_ITERS, OPT_PAGE_SHIFT, OPT_LEVELS, OPT_SLOTS,
	OPT_BACKING, OPT_SERIAL, OPT_NO_MANUAL, OPT_NO_INIT_SET, OPT_JSON, OPT_SWEEP, OPT_PEER, OPT_LIST,
};

static const struct cli_opt bench_opts[] = {
	{ "help", false, OPT_HELP, 'h' },
	{ "vcpus", true, OPT_VCPUS, 'v' },
	{ "bytes-per-vcpu", true, OPT_BYTES, 'b' },
	{ "iterations", true, OPT_ITERS, 'i' },
	{ "page-shift", true, OPT_PAGE_SHIFT, 0 },
	{ "levels", true, OPT_LEVELS, 0 },
	{ "slots", true, OPT_SLOTS, 'm' },
	{ "backing", true, OPT_BACKING, 0 },
	{ "serial-faults", false, OPT_SERIAL, 0 },
	{ "no-manual-protect", false, OPT_NO_MANUAL, 0 },
	{ "no-initially-set", false, OPT_NO_INIT_SET, 0 },
	{ "json", false, OPT_JSON, 0 },
	{ "sweep", true, OPT_SWEEP, 0 },
	{ "peer", true, OPT_PEER, 0 },
	{ "list", false, OPT_LIST, 0 },
	{ NULL, false, 0, 0 },
};


static void bench_usage(FILE *f)
{
	fprintf(f,
		"usage: gpamm bench SUITE [options]\n"
		"       gpamm bench all [--peer kvm]\n"
		"\n"
		"Run a Linux KVM selftest-style performance suite on gpamm; optionally the\n"
		"same phases on the host's KVM (--peer kvm), side by side, and sweeps.\n"
		"'all' (make bench) runs every suite at small sizes and ends with a table of\n"
		"every target: its figure, the same-run ratio, PASS or MISS.\n"
		"\n"
		"suites:\n");
	for (unsigned i = 0; i < bench_nsuites; i++)
		fprintf(f, "  %-21s %s\n", bench_suites[i]->name, bench_suites[i]->summary);
	fprintf(f,
		"\n"
		"options:\n"
		"  -v, --vcpus N            vCPUs, one thread each on its own slice (default 1)\n"
		"  -b, --bytes-per-vcpu SZ  memory per vCPU, K/M/G suffixes (default 1G)\n"
		"  -i, --iterations N       repetitions (default 2): dirty/GET/CLEAR rounds\n"
		"                           (dirty_log_perf), idle cycles (access_tracking_perf),\n"
		"                           fault-ins on a fresh VM (demand_paging), timed runs\n"
		"                           per test (memslot_perf), measured repetitions\n"
		"                           (access_cost, pgtable)\n"
		"      --page-shift N       gpamm page size: 12 (4K, default), 14 (16K), 16 (64K)\n"
		"      --levels N           gpamm table levels (default 3)\n"
		"  -m, --slots N            split memory into N equal memslots (default 1;\n"
		"                           memslot_perf takes 1 to mean its default of 32)\n"
		"      --backing TYPE       guest RAM: anon (4K host pages, default) or thp\n"
		"      --serial-faults      one fault at a time (mmu_lock for write), as the\n"
		"                           2023 code: to compare with the parallel default\n"
		"      --no-manual-protect  classic GET that clears and re-protects (no CLEAR)\n"
		"      --no-initially-set   manual protect without INITIALLY_SET: enabling\n"
		"                           logging write-protects every page (by default,\n"
		"                           as in the selftest, every bit starts set and the\n"
		"                           first CLEAR write-protects)\n"
		"      --peer kvm           also run the phases on the host's KVM (/dev/kvm):\n"
		"                           4K pages, a 32-bit guest, memory below 4 GiB;\n"
		"                           skipped with the reason when KVM is unusable\n"
		"                           (dirty_log_perf only: the other suites report\n"
		"                           the peer skipped)\n"
		"      --sweep P=V1,V2,...  run once per value and tabulate the per-page cost:\n"
		"                           mem=256M,1G,4G,16G (total memory; split over vCPUs)\n"
		"                           vcpus=1,2,4 (total memory stays -v x -b)\n"
		"                           slots=32,1024,32767 (memslot_perf)\n"
		"      --json               one JSON report on stdout instead of text\n"
		"      --list               list the suites\n"
		"\n"
		"Guest RAM is anonymous memory (MAP_NORESERVE) that the host touches before\n"
		"the VM starts, so no phase includes a host page fault (memslot_perf's\n"
		"discards are real, so its map and unmap take host faults; pgtable allocates\n"
		"no guest RAM and ignores -v, -m and --backing). Per-page figures: phases\n"
		"the vCPUs run are wall time / pages per vCPU (what each vCPU pays per\n"
		"page); calls the VMM makes (log calls, mark idle, slot changes) are wall\n"
		"time / all pages; access_cost's loops are per access (ns/op).\n"
		"\n"
		"Exit status: 0 when the runs completed (a skipped peer included), 1 when a\n"
		"gpamm run failed or its counts do not add up, 2 on bad usage.\n");
}

static int parse_u(const char *opt, const char *val, uint64_t lo, uint64_t hi, uint64_t *out)
{
	if (!cli_parse_u64(val, out) || *out < lo || *out > hi)
		return cli_usage_error("bench", "%s must be a number from %llu to %llu, not '%s'",
				       opt, (unsigned long long)lo, (unsigned long long)hi, val);
	return 0;
}

static int parse_sweep(struct bench_request *o, const char *val)
{
	const char *eq = strchr(val, '='), *p;
	char name[16];

	if (!eq || eq == val || (size_t)(eq - val) >= sizeof(name))
		return cli_usage_error("bench", "--sweep wants PARAM=V1,V2,... (mem=, vcpus= or slots=), "
				       "not '%s'", val);
	memcpy(name, val, (size_t)(eq - val));
	name[eq - val] = '\0';
	if (!strcmp(name, "mem"))
		o->sweep = BENCH_SWEEP_MEM;
	else if (!strcmp(name, "vcpus"))
		o->sweep = BENCH_SWEEP_VCPUS;
	else if (!strcmp(name, "slots"))
		o->sweep = BENCH_SWEEP_SLOTS;
	else
		return cli_usage_error("bench", "--sweep: unknown parameter '%s' (mem, vcpus or "
				       "slots)", name);
	o->nsweep = 0;
	for (p = eq + 1;;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		char item[24];
		uint64_t v;

		if (!n || n >= sizeof(item))
			return cli_usage_error("bench", "--sweep: empty or overlong value in '%s'", val);
		if (o->nsweep == BENCH_MAX_SWEEP)
			return cli_usage_error("bench", "--sweep: at most %d values", BENCH_MAX_SWEEP);
		memcpy(item, p, n);
		item[n] = '\0';
		if (o->sweep == BENCH_SWEEP_MEM ? !cli_parse_size(item, &v) || !v
		    : !cli_parse_u64(item, &v) || !v ||
		      v > (o->sweep == BENCH_SWEEP_VCPUS ? GPAMM_MAX_VCPUS : GPAMM_USER_MEM_SLOTS))
			return cli_usage_error("bench", "--sweep %s: bad value '%s'", name, item);
		o->sweep_val[o->nsweep] = v;
		snprintf(o->sweep_txt[o->nsweep], sizeof(o->sweep_txt[0]), "%s", item);
		o->nsweep++;
		if (!comma)
			break;
		p = comma + 1;
	}
	return 0;
}

static int bench_run_cmd(int argc, char **argv)
{
	struct bench_request o;
	struct cli_parser p;
	const char *val, *suite_name = NULL;
	uint64_t v;
	int opt;
	bool other = false;

	bench_request_init(&o);
	cli_parser_init(&p, "bench", argc, argv);
	while ((opt = cli_next(&p, bench_opts, &val)) != CLI_OPT_END) {
		other |= opt != CLI_OPT_POS && opt != OPT_PEER; /* "all" takes only --peer */
		switch (opt) {
		case OPT_HELP:
			bench_usage(stdout);
			return CLI_EXIT_OK;
		case OPT_LIST:
			for (unsigned i = 0; i < bench_nsuites; i++)
				printf("%-21s %s\n", bench_suites[i]->name, bench_suites[i]->summary);
			return CLI_EXIT_OK;
		case OPT_VCPUS:
			if (parse_u("--vcpus", val, 1, GPAMM_MAX_VCPUS, &v))
				return CLI_EXIT_USAGE;
			o.cfg.vcpus = (unsigned)v;
			break;
		case OPT_BYTES:
			if (!cli_parse_size(val, &v) || !v)
				return cli_usage_error("bench", "--bytes-per-vcpu wants a size such as "
						       "16M, 1G or 4096, not '%s'", val);
			o.cfg.bytes_per_vcpu = v;
			break;
		case OPT_ITERS:
			if (parse_u("--iterations", val, 1, BENCH_MAX_ITERS, &v))
				return CLI_EXIT_USAGE;
			o.cfg.iterations = (unsigned)v;
			break;
		case OPT_PAGE_SHIFT:
			if (!cli_parse_u64(val, &v) || (v != 12 && v != 14 && v != 16))
				return cli_usage_error("bench", "--page-shift must be 12 (4K), 14 (16K) "
						       "or 16 (64K), not '%s'", val);
			o.cfg.page_shift = (unsigned)v;
			break;
		case OPT_LEVELS:
			if (parse_u("--levels", val, 2, 4, &v))
				return CLI_EXIT_USAGE;
			o.cfg.levels = (unsigned)v;
			break;
		case OPT_SLOTS:
			if (parse_u("--slots", val, 1, GPAMM_USER_MEM_SLOTS, &v))
				return CLI_EXIT_USAGE;
			o.cfg.slots = (unsigned)v;
			break;
		case OPT_BACKING:
			if (!strcmp(val, "anon") || !strcmp(val, "anonymous"))
				o.cfg.thp = false;
			else if (!strcmp(val, "thp") || !strcmp(val, "anonymous_thp"))
				o.cfg.thp = true;
			else
				return cli_usage_error("bench", "--backing must be anon or thp, not '%s'",
						       val);
			break;
		case OPT_SERIAL:
			o.cfg.serial_faults = true;
			break;
		case OPT_NO_MANUAL:
			o.cfg.manual_protect = false;
			o.cfg.initially_set = false;
			break;
		case OPT_NO_INIT_SET:
			o.cfg.initially_set = false;
			break;
		case OPT_JSON:
			o.json = true;
			break;
		case OPT_SWEEP:
			if (parse_sweep(&o, val))
				return CLI_EXIT_USAGE;
			break;
		case OPT_PEER:
			if (strcmp(val, "kvm"))
				return cli_usage_error("bench", "--peer: the only peer is 'kvm', not '%s'",
						       val);
			o.peer_kvm = true;
			break;
		case CLI_OPT_POS:
			if (suite_name)
				return cli_usage_error("bench", "one suite at a time ('%s' and '%s')",
						       suite_name, val);
			suite_name = val;
			break;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (!suite_name)
		return cli_usage_error("bench", "name a suite (gpamm bench --list): e.g. "
				       "'gpamm bench dirty_log_perf'");
	if (!strcmp(suite_name, "all")) {
		if (other)
			return cli_usage_error("bench", "'all' runs its own plan; of the options only "
					       "--peer kvm applies");
		return bench_all(o.peer_kvm);
	}
	o.suite = bench_find_suite(suite_name);
	if (!o.suite)
		return cli_usage_error("bench", "no suite '%s' (gpamm bench --list)", suite_name);
	if (o.json)
		o.cfg.out = NULL;

	return bench_execute(&o);
}

const struct cli_cmd cli_cmd_bench = {
	.name = "bench",
	.summary = "selftest-style performance suites (dirty_log_perf), vs the host's KVM",
	.run = bench_run_cmd,
	.usage = bench_usage,
};
