// SPDX-License-Identifier: MIT
/*
 * "gpamm decode": explain raw page-table entries. The first line per
 * entry is the library's own gpamm_pte_format() (so the tool and debug
 * dumps read the same); the second says what KVM makes of the entry,
 * using the predicates of gpamm/pte.h rather than re-deriving bit
 * meanings here; "note:" lines flag combinations the MMU never creates,
 * which is what one usually wants to know when staring at a bad entry.
 * With --json the same verdict is printed as data: the bit names are
 * taken from the gpamm_pte_format() text, so the two outputs cannot
 * disagree on what a bit is called.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/pte.h"
#include "lib/json.h"
#include "cli.h"

enum { OPT_HELP = 1, OPT_PAGE_SHIFT, OPT_HUGE, OPT_JSON };

static const struct cli_opt decode_opts[] = {
	{ "help", false, OPT_HELP, 'h' },
	{ "page-shift", true, OPT_PAGE_SHIFT, 0 },
	{ "huge", false, OPT_HUGE, 0 },
	{ "json", false, OPT_JSON, 0 },
	{ NULL, false, 0, 0 },
};

static void decode_usage(FILE *f)
{
	fprintf(f,
		"usage: gpamm decode [--page-shift N] [--huge] [--json] VALUE...\n"
		"\n"
		"Print each page-table entry VALUE (hex with 0x, octal with 0, or decimal)\n"
		"bit by bit, then what KVM makes of it: present, young, dirty\n"
		"(hardware-writable), may be made writable (the MODIFIED marker), cache type.\n"
		"\n"
		"options:\n"
		"  --page-shift N  12 (4K), 14 (16K, default) or 16 (64K): where the PFN starts\n"
		"  --huge          the entries were read from a directory (level-1) entry:\n"
		"                  bit 6 is HUGE and bit 12 is HGLOBAL\n"
		"  --json          the entries as one JSON object on stdout: bit names,\n"
		"                  fields, KVM's verdict and the notes\n"
		"\n"
		"example: gpamm decode 0x393 0x291\n");
}

static const char *mat_meaning(gpamm_pte_t pte)
{
	switch (gpamm_pte_mat(pte)) {
	case GPAMM_PTE_MAT_SUC:
		return "strongly-ordered uncached (SUC, device memory)";
	case GPAMM_PTE_MAT_CC:
		return "coherent cached (CC, normal memory)";
	case GPAMM_PTE_MAT_WUC:
		return "weakly-ordered uncached (WUC)";
	default:
		return "reserved MAT value 3";
	}
}

#define MAX_NOTES 6

/* What KVM makes of one entry: the "kvm:" line and the "note:" lines. */
struct verdict {
	const char *kind;  /* "empty", "not present", "table", "leaf", "huge leaf" */
	bool leaf;         /* present, young, ... apply */
	char kvm[320];
	char notes[MAX_NOTES][160];
	unsigned nnotes;
};

__attribute__((format(printf, 2, 3)))
static void note(struct verdict *v, const char *fmt, ...)
{
	va_list ap;

	if (v->nnotes == MAX_NOTES)
		return;
	va_start(ap, fmt);
	vsnprintf(v->notes[v->nnotes++], sizeof(v->notes[0]), fmt, ap);
	va_end(ap);
}

static void judge(gpamm_pte_t pte, bool huge, struct verdict *v)
{
	gpamm_pte_t wr = pte & GPAMM_PTE_WRITEABLE;

	memset(v, 0, sizeof(*v));
	if (huge && !gpamm_pte_huge(pte)) {
		/* Without HUGE a directory entry is a table address, not a leaf. */
		v->kind = "table";
		snprintf(v->kvm, sizeof(v->kvm), "directory entry without HUGE: the address of "
			 "a next-level table (or of the shared invalid table), not a leaf");
		return;
	}
	if (!gpamm_pte_present(pte)) {
		v->kind = pte ? "not present" : "empty";
		snprintf(v->kvm, sizeof(v->kvm), "not present: any access faults into the slow "
			 "path%s", pte ? "" : " (empty entry)");
		if (pte)
			note(v, "bits set in a non-present entry; the MMU clears an entry to 0");
		return;
	}

	v->kind = huge ? "huge leaf" : "leaf";
	v->leaf = true;
	snprintf(v->kvm, sizeof(v->kvm), "present%s, %s, %s, %s, cache %s",
		 huge ? " huge leaf" : "",
		 gpamm_pte_young(pte) ? "young" : "old (next access faults to make it young)",
		 gpamm_pte_dirty(pte) ? "dirty (hardware-writable)" : "clean (a write faults)",
		 gpamm_pte_writeable(pte) ? "may be made writable (MODIFIED marker)"
					  : "never made writable (no MODIFIED marker: read-only)",
		 mat_meaning(pte));

	if (wr && wr != GPAMM_PTE_WRITEABLE)
		note(v, "only %s of DIRTY|WRITE is set; the MMU always sets and clears them "
		     "together", wr & GPAMM_PTE_DIRTY ? "DIRTY" : "WRITE");
	if (gpamm_pte_dirty(pte) && !gpamm_pte_writeable(pte))
		note(v, "hardware-writable without the MODIFIED marker: a read-only slot must "
		     "never be dirty");
	if (!huge && gpamm_pte_huge(pte))
		note(v, "bit 6 (GLOBAL) is set; if this entry came from a directory, decode it "
		     "again with --huge");
	if (gpamm_pte_mat(pte) == GPAMM_PTE_MAT_MASK)
		note(v, "MAT 3 is reserved by the architecture");
	if (pte & GPAMM_PTE_PROTNONE)
		note(v, "PROTNONE is a host-side (NUMA hinting) state; KVM never installs it in "
		     "the GPA table");
}

static void decode_text(gpamm_pte_t pte, unsigned page_shift, bool huge)
{
	struct verdict v;
	char buf[256];

	gpamm_pte_format(pte, page_shift, huge, buf, sizeof(buf));
	judge(pte, huge, &v);
	printf("%s\n  kvm: %s\n", buf, v.kvm);
	for (unsigned i = 0; i < v.nnotes; i++)
		printf("  note: %s\n", v.notes[i]);
}

/* A leaf's predicate, or null where it does not apply. */
static void json_pred(struct jw *w, const char *key, const struct verdict *v, bool b)
{
	if (v->leaf)
		jw_bool(w, key, b);
	else
		jw_null(w, key);
}

/*
 * One entry as JSON. The text is "0xVALUE NAME NAME ... MAT=x PLV=n
 * [pfn=0xn] [unknown=0xn]": bare words are the bits that are set, the
 * KEY=VALUE words the fields.
 */
static void decode_json(struct jw *w, gpamm_pte_t pte, unsigned page_shift, bool huge)
{
	char buf[256], hex[24], *tok, *save = NULL;
	const char *mat = "", *unknown = NULL;
	uint64_t plv = 0, pfn = 0;
	bool has_pfn = false;
	struct verdict v;

	gpamm_pte_format(pte, page_shift, huge, buf, sizeof(buf));
	judge(pte, huge, &v);
	snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)pte);
	jw_obj(w, NULL);
	jw_str(w, "value", hex);
	jw_str(w, "text", buf);
	jw_arr(w, "flags");
	/* strtok_r cuts buf: the text was written above already */
	tok = strtok_r(buf, " ", &save); /* the value itself */
	while ((tok = strtok_r(NULL, " ", &save))) {
		char *eq = strchr(tok, '=');

		if (!eq) {
			jw_str(w, NULL, tok);
			continue;
		}
		*eq++ = '\0';
		if (!strcmp(tok, "MAT"))
			mat = eq;
		else if (!strcmp(tok, "PLV"))
			cli_parse_u64(eq, &plv);
		else if (!strcmp(tok, "pfn"))
			has_pfn = cli_parse_u64(eq, &pfn);
		else if (!strcmp(tok, "unknown"))
			unknown = eq;
	}
	jw_arr_end(w);
	jw_str(w, "mat", mat);
	jw_u64(w, "plv", plv);
	if (has_pfn)
		jw_u64(w, "pfn", pfn);
	else
		jw_null(w, "pfn");
	if (unknown)
		jw_str(w, "unknown", unknown);
	else
		jw_null(w, "unknown");
	jw_str(w, "kind", v.kind);
	/* a table entry is neither present nor absent as a page; the rest need a leaf */
	if (strcmp(v.kind, "table"))
		jw_bool(w, "present", v.leaf);
	else
		jw_null(w, "present");
	json_pred(w, "young", &v, gpamm_pte_young(pte));
	json_pred(w, "dirty", &v, gpamm_pte_dirty(pte));
	json_pred(w, "writeable", &v, gpamm_pte_writeable(pte));
	jw_str(w, "kvm", v.kvm);
	jw_arr(w, "notes");
	for (unsigned i = 0; i < v.nnotes; i++)
		jw_str(w, NULL, v.notes[i]);
	jw_arr_end(w);
	jw_obj_end(w);
}

static int decode_run(int argc, char **argv)
{
	struct cli_parser p;
	gpamm_pte_t *vals;
	unsigned page_shift = 14;
	bool huge = false, json = false;
	const char *val;
	uint64_t v;
	int opt, n = 0, i;

	/* Collect every value first: a typo in the fifth prints nothing at all. */
	vals = calloc((size_t)argc, sizeof(*vals));
	if (!vals) {
		perror("gpamm decode");
		return CLI_EXIT_FAIL;
	}
	cli_parser_init(&p, "decode", argc, argv);
	while ((opt = cli_next(&p, decode_opts, &val)) != CLI_OPT_END) {
		switch (opt) {
		case OPT_HELP:
			decode_usage(stdout);
			free(vals);
			return CLI_EXIT_OK;
		case OPT_PAGE_SHIFT:
			if (!cli_parse_u64(val, &v) || (v != 12 && v != 14 && v != 16)) {
				free(vals);
				return cli_usage_error("decode", "--page-shift must be 12 (4K), "
						       "14 (16K) or 16 (64K), not '%s'", val);
			}
			page_shift = (unsigned)v;
			break;
		case OPT_HUGE:
			huge = true;
			break;
		case OPT_JSON:
			json = true;
			break;
		case CLI_OPT_POS:
			if (!cli_parse_u64(val, &v)) {
				free(vals);
				return cli_usage_error("decode", "'%s' is not a 64-bit entry value", val);
			}
			vals[n++] = v;
			break;
		default:
			free(vals);
			return CLI_EXIT_USAGE;
		}
	}
	if (!n) {
		free(vals);
		return cli_usage_error("decode", "no VALUE given");
	}

	if (json) {
		struct jw w;

		jw_init(&w, stdout);
		jw_obj(&w, NULL);
		jw_u64(&w, "page_shift", page_shift);
		jw_bool(&w, "huge", huge);
		jw_arr(&w, "entries");
		for (i = 0; i < n; i++)
			decode_json(&w, vals[i], page_shift, huge);
		jw_arr_end(&w);
		jw_obj_end(&w);
		jw_finish(&w);
	} else {
		for (i = 0; i < n; i++)
			decode_text(vals[i], page_shift, huge);
	}
	free(vals);
	return ferror(stdout) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_cmd cli_cmd_decode = {
	.name = "decode",
	.summary = "explain page-table entry values bit by bit",
	.run = decode_run,
	.usage = decode_usage,
};
