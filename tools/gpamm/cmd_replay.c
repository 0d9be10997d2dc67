// SPDX-License-Identifier: MIT
/*
 * "gpamm replay": replay a memory-access trace through the vCPUs of a VM.
 *
 * The trace is valgrind's lackey output or gpamm's binary form of it (both
 * in replay_trace.h, which reads and writes them); its process addresses are
 * folded into one memslot of guest-physical pages in first-touch order
 * (replay_run.h states the rule), and each access becomes a guest load or
 * store of its size, run by a guest program on one or more vCPUs. What the
 * MMU did (faults, TLB misses) comes from gpamm_vm_stats(); the working set
 * over time from sampling the slot with gpamm_vm_test_young() and
 * gpamm_vm_mark_idle() every --age-interval accesses. This file parses the
 * options, streams the trace into the fold (and into --write-binary), and
 * prints the report as text or JSON.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gpamm/geom.h"
#include "gpamm/gpamm.h"
#include "cli.h"
#include "replay_run.h"
#include "replay_trace.h"

enum {
	OPT_HELP = 1, OPT_JSON, OPT_IFETCH, OPT_VCPUS, OPT_CHUNK, OPT_AGE, OPT_PAGE_SHIFT,
	OPT_LEVELS, OPT_WRITE_BINARY, OPT_NO_REPLAY,
};

static const struct cli_opt replay_opts[] = {
	{ "help", false, OPT_HELP, 'h' },
	{ "json", false, OPT_JSON, 0 },
	{ "ifetch", false, OPT_IFETCH, 0 },
	{ "vcpus", true, OPT_VCPUS, 0 },
	{ "chunk", true, OPT_CHUNK, 0 },
	{ "age-interval", true, OPT_AGE, 0 },
	{ "page-shift", true, OPT_PAGE_SHIFT, 0 },
	{ "levels", true, OPT_LEVELS, 0 },
	{ "write-binary", true, OPT_WRITE_BINARY, 0 },
	{ "no-replay", false, OPT_NO_REPLAY, 0 },
	{ NULL, false, 0, 0 },
};

#define DEFAULT_AGE_INTERVAL 100000
#define DEFAULT_CHUNK        1024

static void replay_usage(FILE *f)
{
	fprintf(f,
		"usage: gpamm replay [OPTIONS] TRACE\n"
		"\n"
		"Replay a memory-access trace through the vCPUs of a VM (direct host) and\n"
		"report what the GPA MMU did: faults, TLB misses and hit rate, pages touched\n"
		"and written, and the working set over time. TRACE is a file or '-' for stdin,\n"
		"in either of two formats, told apart by the first bytes:\n"
		"\n"
		"  lackey  the output of valgrind --tool=lackey --trace-mem=yes PROG 2>TRACE:\n"
		"          'I  ADDR,SIZE' (instruction fetch), ' L ADDR,SIZE' (load),\n"
		"          ' S ADDR,SIZE' (store), ' M ADDR,SIZE' (modify: load, then store);\n"
		"          ADDR hex, SIZE decimal 1..%u; valgrind's '==PID==' / '--PID--'\n"
		"          lines and blank lines are skipped, anything else is an error\n"
		"  binary  what --write-binary writes (LEB128 = unsigned base-128 varint):\n"
		"          header: 8-byte magic \"\\x89GPAMMTR\", 1-byte version (1);\n"
		"          record: tag byte = kind (bits 0-2: 0 I, 1 L, 2 S, 3 M)\n"
		"                  | SIZE << 3 if SIZE < 32 (else bits 3-7 are 0 and a LEB128\n"
		"                  SIZE follows), then LEB128 zigzag(ADDR - previous ADDR),\n"
		"                  the first taken from 0, modulo 2^64;\n"
		"          end:    tag 0x07, LEB128 record count; nothing after it\n"
		"\n"
		"Folding: process addresses are cut into pages of the VM's page size; each\n"
		"distinct page gets the next guest page frame in first-touch order, so\n"
		"  GPA = rank(ADDR >> page_shift) << page_shift | (ADDR & (page_size - 1))\n"
		"and an access crossing a page boundary is split there, each part going to\n"
		"its own page's frame. The frames form one memslot at GPA 0 of the pages\n"
		"touched rounded up to a multiple of 64. Only replayed accesses count;\n"
		"instruction fetches are counted but replayed (as loads) only with --ifetch.\n"
		"\n"
		"Running: each replayed record is an access: a guest load or store of its\n"
		"size (a modify is both), by a guest program reading the folded records from\n"
		"memory. With --vcpus N, access j goes to vCPU (j / CHUNK) %% N, each vCPU on\n"
		"a thread of its own. Every --age-interval accesses (of the whole trace) the\n"
		"guests exit, and the VMM counts the young pages of the slot\n"
		"(gpamm_vm_test_young) and marks them all idle (gpamm_vm_mark_idle): the\n"
		"series is the working set, one sample per interval. Stores write non-zero\n"
		"bytes, and at the end the pages whose bytes changed must be exactly the\n"
		"pages the trace stores to.\n"
		"\n"
		"Report: records by type; guest loads and stores; translations (one per page\n"
		"each load or store touches: what the TLB is asked); faults (first touches =\n"
		"slow faults, re-touches after aging = fast faults); TLB misses, hits =\n"
		"translations - misses, and the hit rate; pages touched and written; the\n"
		"working-set series (interval, accesses so far, young pages, and the slow\n"
		"and fast faults of the interval).\n"
		"\n"
		"options:\n"
		"  --json              print the report as one JSON object\n"
		"  --ifetch            replay instruction fetches as loads\n"
		"  --vcpus N           vCPUs, 1..%u (default 1)\n"
		"  --chunk N           accesses per round-robin chunk with --vcpus (default %u)\n"
		"  --age-interval N    accesses between working-set samples (default %u;\n"
		"                      0: one sample at the end)\n"
		"  --page-shift N      12 (4K), 14 (16K, default) or 16 (64K)\n"
		"  --levels N          3 (default); 4K also 4; 16K and 64K also 2\n"
		"  --write-binary OUT  also write the trace in the binary form to OUT\n"
		"                      ('-' = stdout, only with --no-replay)\n"
		"  --no-replay         with --write-binary: convert only\n"
		"\n"
		"examples:\n"
		"  valgrind --tool=lackey --trace-mem=yes /bin/true 2>true.trace\n"
		"  gpamm replay true.trace\n"
		"  gpamm replay --write-binary true.bin --no-replay true.trace\n"
		"  gpamm replay --json --vcpus 4 --age-interval 10000 true.bin\n"
		"\n"
		"Exit status: 0 success, 1 unreadable or malformed trace, empty trace, or\n"
		"a failed replay, 2 bad usage.\n",
		REPLAY_MAX_SIZE, GPAMM_MAX_VCPUS, DEFAULT_CHUNK, DEFAULT_AGE_INTERVAL);
}

struct replay_opts {
	const char *trace, *out;
	bool json, ifetch, no_replay;
	struct replay_cfg cfg;
};

static int parse_args(int argc, char **argv, struct replay_opts *o, bool *help)
{
	struct cli_parser p;
	const char *val;
	uint64_t v;
	int opt;

	memset(o, 0, sizeof(*o));
	o->cfg.page_shift = 14;
	o->cfg.levels = 3;
	o->cfg.vcpus = 1;
	o->cfg.chunk = DEFAULT_CHUNK;
	o->cfg.age_interval = DEFAULT_AGE_INTERVAL;
	*help = false;
	cli_parser_init(&p, "replay", argc, argv);
	while ((opt = cli_next(&p, replay_opts, &val)) != CLI_OPT_END) {
		switch (opt) {
		case OPT_HELP:
			*help = true;
			return CLI_EXIT_OK;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_IFETCH:
			o->ifetch = true;
			break;
		case OPT_NO_REPLAY:
			o->no_replay = true;
			break;
		case OPT_VCPUS:
			if (!cli_parse_u64(val, &v) || v < 1 || v > GPAMM_MAX_VCPUS)
				return cli_usage_error("replay", "--vcpus must be 1..%u, not '%s'",
						       GPAMM_MAX_VCPUS, val);
			o->cfg.vcpus = (unsigned)v;
			break;
		case OPT_CHUNK:
			if (!cli_parse_u64(val, &v) || v < 1 || v > (1ULL << 40))
				return cli_usage_error("replay", "--chunk must be a number of "
						       "accesses >= 1, not '%s'", val);
			o->cfg.chunk = v;
			break;
		case OPT_AGE:
			if (!cli_parse_u64(val, &v))
				return cli_usage_error("replay", "--age-interval must be a number of "
						       "accesses (0: no aging), not '%s'", val);
			o->cfg.age_interval = v;
			break;
		case OPT_PAGE_SHIFT:
			if (!cli_parse_u64(val, &v) || (v != 12 && v != 14 && v != 16))
				return cli_usage_error("replay", "--page-shift must be 12 (4K), "
						       "14 (16K) or 16 (64K), not '%s'", val);
			o->cfg.page_shift = (unsigned)v;
			break;
		case OPT_LEVELS:
			if (!cli_parse_u64(val, &v) || v < 2 || v > 4)
				return cli_usage_error("replay", "--levels must be 2, 3 or 4, not '%s'",
						       val);
			o->cfg.levels = (unsigned)v;
			break;
		case OPT_WRITE_BINARY:
			if (!*val)
				return cli_usage_error("replay", "--write-binary needs a file name");
			o->out = val;
			break;
		case CLI_OPT_POS:
			if (o->trace)
				return cli_usage_error("replay", "one TRACE only ('%s' and '%s')",
						       o->trace, val);
			o->trace = val;
			break;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (!o->trace)
		return cli_usage_error("replay", "no TRACE given ('-' reads stdin)");
	if (!*o->trace)
		return cli_usage_error("replay", "empty TRACE name");
	{
		struct gpamm_geom g;

		if (gpamm_geom_init(&g, o->cfg.page_shift, o->cfg.levels))
			return cli_usage_error("replay", "no LoongArch layout has %u-byte pages and "
					       "%u levels (4K: 3 or 4 levels; 16K, 64K: 2 or 3)",
					       1u << o->cfg.page_shift, o->cfg.levels);
	}
	if (o->no_replay && !o->out)
		return cli_usage_error("replay", "--no-replay only makes sense with --write-binary");
	if (o->out && !strcmp(o->out, "-") && !o->no_replay)
		return cli_usage_error("replay", "--write-binary - (stdout) needs --no-replay: "
				       "the report goes to stdout");
	if (o->out && strcmp(o->out, "-") && strcmp(o->trace, "-")) {
		struct stat a, b;

		if (!stat(o->trace, &a) && !stat(o->out, &b) && a.st_dev == b.st_dev &&
		    a.st_ino == b.st_ino)
			return cli_usage_error("replay", "--write-binary %s would overwrite the trace",
					       o->out);
	}
	return CLI_EXIT_OK;
}

/* ---- the report -------------------------------------------------------------- */

static void json_string(FILE *f, const char *s)
{
	putc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			putc(c, f);
	}
	putc('"', f);
}

static double pct(uint64_t part, uint64_t whole)
{
	return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

static void report_json(const struct replay_opts *o, const char *name, enum replay_format fmt,
			const struct replay_fold *f, const struct replay_result *r)
{
	const struct gpamm_vm_stats *st = &r->st;
	uint64_t hits = r->translations > st->tlb_misses ? r->translations - st->tlb_misses : 0;

#define U(k, v) printf("  \"%s\": %llu,\n", k, (unsigned long long)(v))
	printf("{\n  \"trace\": ");
	json_string(stdout, name);
	printf(",\n  \"format\": \"%s\",\n", fmt == REPLAY_FMT_BINARY ? "binary" : "lackey");
	U("page_shift", o->cfg.page_shift);
	U("levels", o->cfg.levels);
	U("vcpus", o->cfg.vcpus);
	U("chunk", o->cfg.chunk);
	printf("  \"ifetch\": %s,\n", o->ifetch ? "true" : "false");
	U("age_interval", o->cfg.age_interval);
	U("records", f->records);
	U("ifetches", f->count[REPLAY_I]);
	U("loads", f->count[REPLAY_L]);
	U("stores", f->count[REPLAY_S]);
	U("modifies", f->count[REPLAY_M]);
	U("accesses", f->nops);
	U("guest_loads", r->guest_loads);
	U("guest_stores", r->guest_stores);
	U("translations", r->translations);
	U("pages_touched", f->npages);
	U("pages_written", r->pages_written);
	U("slot_pages", r->slot_pages);
	U("faults", st->faults);
	U("slow_faults", st->slow_faults);
	U("fast_faults", st->fast_faults);
	U("fault_retries", st->fault_retries);
	U("mmio_exits", st->mmio_exits);
	U("tlb_misses", st->tlb_misses);
	U("tlb_hits", hits);
	printf("  \"tlb_hit_rate\": %.6f,\n", r->translations ? (double)hits / (double)r->translations : 0.0);
	U("table_pages", st->table_pages);
	printf("  \"seconds\": %.6f,\n", r->seconds);
	printf("  \"working_set\": [");
	for (uint64_t i = 0; i < r->nseries; i++) {
		const struct replay_sample *s = &r->series[i];

		printf("%s\n    {\"interval\": %llu, \"accesses\": %llu, \"young\": %llu, "
		       "\"slow_faults\": %llu, \"fast_faults\": %llu}", i ? "," : "",
		       (unsigned long long)i, (unsigned long long)s->end,
		       (unsigned long long)s->young, (unsigned long long)s->slow_faults,
		       (unsigned long long)s->fast_faults);
	}
	printf("\n  ]\n}\n");
#undef U
}

static void report_text(const struct replay_opts *o, const char *name, enum replay_format fmt,
			const struct replay_fold *f, const struct replay_result *r)
{
	const struct gpamm_vm_stats *st = &r->st;
	uint64_t hits = r->translations > st->tlb_misses ? r->translations - st->tlb_misses : 0;
	char layout[32], psz[32], slot[32];
	uint64_t peak = 0;

#define LLU(x) ((unsigned long long)(x))
	printf("gpamm replay: %s (%s), %s, %u vCPU%s\n", name,
	       fmt == REPLAY_FMT_BINARY ? "binary" : "lackey",
	       cli_layout_name(o->cfg.page_shift, o->cfg.levels, layout, sizeof(layout)),
	       o->cfg.vcpus, o->cfg.vcpus == 1 ? "" : "s");
	printf("  records       %llu: %llu ifetch, %llu load, %llu store, %llu modify\n",
	       LLU(f->records), LLU(f->count[REPLAY_I]), LLU(f->count[REPLAY_L]),
	       LLU(f->count[REPLAY_S]), LLU(f->count[REPLAY_M]));
	printf("  replayed      %llu accesses (ifetches %s): %llu guest loads, %llu guest stores\n",
	       LLU(f->nops), o->ifetch ? "as loads" : "not replayed; --ifetch",
	       LLU(r->guest_loads), LLU(r->guest_stores));
	printf("  pages         %llu touched, %llu written (%s pages; slot of %llu pages = %s at GPA 0)\n",
	       LLU(f->npages), LLU(r->pages_written), cli_size(1ULL << o->cfg.page_shift, psz, sizeof(psz)),
	       LLU(r->slot_pages), cli_size(r->slot_pages << o->cfg.page_shift, slot, sizeof(slot)));
	printf("  faults        %llu: %llu slow (first touches), %llu fast (re-touches after aging), "
	       "%llu retries\n", LLU(st->faults), LLU(st->slow_faults), LLU(st->fast_faults),
	       LLU(st->fault_retries));
	printf("  TLB           %llu translations, %llu misses, %llu hits: hit rate %.2f%%\n",
	       LLU(r->translations), LLU(st->tlb_misses), LLU(hits), pct(hits, r->translations));
	printf("  GPA table     %llu table pages\n", LLU(st->table_pages));
	printf("  time          %.3f s", r->seconds);
	if (r->seconds > 0)
		printf(" (%.1f M accesses/s)", (double)f->nops / r->seconds / 1e6);
	printf("\n\nworking set: young pages per interval of ");
	if (o->cfg.age_interval)
		printf("%llu accesses\n", LLU(o->cfg.age_interval));
	else
		printf("the whole trace (--age-interval 0)\n");
	printf("  %8s %12s %8s %8s %8s\n", "interval", "accesses", "young", "slow", "fast");
	for (uint64_t i = 0; i < r->nseries; i++) {
		const struct replay_sample *s = &r->series[i];

		printf("  %8llu %12llu %8llu %8llu %8llu\n", LLU(i), LLU(s->end), LLU(s->young),
		       LLU(s->slow_faults), LLU(s->fast_faults));
		if (s->young > peak)
			peak = s->young;
	}
	printf("  peak %llu pages of %llu touched\n", LLU(peak), LLU(f->npages));
#undef LLU
}

/* ---- the command ----------------------------------------------------------------- */

static int replay_main(int argc, char **argv)
{
	struct replay_reader *rd = NULL;
	struct replay_writer *wr = NULL;
	struct replay_result res;
	struct replay_fold fold;
	struct replay_opts o;
	struct replay_rec rec;
	enum replay_format fmt;
	char err[600], name[512];
	bool help;
	int ret, n;

	ret = parse_args(argc, argv, &o, &help);
	if (help) {
		replay_usage(stdout);
		return CLI_EXIT_OK;
	}
	if (ret)
		return ret;

	if (replay_reader_open(o.trace, &rd, err, sizeof(err))) {
		fprintf(stderr, "gpamm replay: %s\n", err);
		return CLI_EXIT_FAIL;
	}
	fmt = replay_reader_format(rd);
	snprintf(name, sizeof(name), "%s", replay_reader_name(rd));
	if (o.out && replay_writer_open(o.out, &wr, err, sizeof(err))) {
		fprintf(stderr, "gpamm replay: %s\n", err);
		replay_reader_close(rd);
		return CLI_EXIT_FAIL;
	}

	replay_fold_init(&fold, o.cfg.page_shift, o.ifetch);
	ret = CLI_EXIT_FAIL;
	while ((n = replay_reader_next(rd, &rec)) > 0) {
		int e = replay_fold_add(&fold, &rec);

		if (e) {
			fprintf(stderr, "gpamm replay: %s: %s\n", name,
				e == -E2BIG ? "the trace touches more than 2^32 - 1 pages"
					    : "out of memory folding the trace");
			goto out;
		}
		if (wr && replay_writer_put(wr, &rec, err, sizeof(err))) {
			fprintf(stderr, "gpamm replay: %s\n", err);
			goto out;
		}
	}
	if (n < 0) {
		fprintf(stderr, "gpamm replay: %s\n", replay_reader_error(rd));
		goto out;
	}
	if (!fold.records) {
		fprintf(stderr, "gpamm replay: %s: empty trace: no 'I', 'L', 'S' or 'M' records%s\n",
			name, fmt == REPLAY_FMT_LACKEY ? " (only valgrind's own lines, if any)" : "");
		goto out;
	}
	if (wr) {
		struct replay_writer *w = wr;

		wr = NULL;
		if (replay_writer_close(w, true, err, sizeof(err))) {
			fprintf(stderr, "gpamm replay: %s\n", err);
			goto out;
		}
		/* on stdout only when it cannot get in the way of data there */
		fprintf(strcmp(o.out, "-") && !o.json ? stdout : stderr,
			"gpamm replay: wrote %llu records to %s (binary, version %u)\n",
			(unsigned long long)fold.records, strcmp(o.out, "-") ? o.out : "<stdout>",
			REPLAY_VERSION);
		if (o.no_replay) {
			ret = CLI_EXIT_OK;
			goto out;
		}
		if (!o.json)
			printf("\n");
	}
	if (!fold.nops) {
		fprintf(stderr, "gpamm replay: %s: nothing to replay: %llu instruction fetch%s and no "
			"loads or stores (--ifetch replays fetches as loads)\n", name,
			(unsigned long long)fold.count[REPLAY_I],
			fold.count[REPLAY_I] == 1 ? "" : "es");
		goto out;
	}

	if (replay_run(&o.cfg, &fold, &res, err, sizeof(err))) {
		fprintf(stderr, "gpamm replay: %s: %s\n", name, err);
		free(res.series);
		goto out;
	}
	if (o.json)
		report_json(&o, name, fmt, &fold, &res);
	else
		report_text(&o, name, fmt, &fold, &res);
	free(res.series);
	ret = fflush(stdout) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
	if (wr)
		replay_writer_close(wr, false, err, sizeof(err));
	replay_fold_free(&fold);
	replay_reader_close(rd);
	return ret;
}

const struct cli_cmd cli_cmd_replay = {
	.name = "replay",
	.summary = "replay a valgrind lackey (or binary) memory trace through vCPUs",
	.run = replay_main,
	.usage = replay_usage,
};
