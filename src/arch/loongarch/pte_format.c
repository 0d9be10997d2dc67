// SPDX-License-Identifier: MIT
/*
 * Human-readable text for one LoongArch page-table entry, for the CLI's
 * decode command, the demo, test diagnostics and debug dumps. It names
 * every bit the architecture (and Linux) defines, prints the multi-bit
 * fields by value, and reports any bit it cannot account for as
 * "unknown=", so that a corrupted or mis-built entry is visible at a
 * glance instead of being silently folded into the PFN. Pure function:
 * no locks, any thread, snprintf return convention.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>

#include "gpamm/pte.h"

/* An snprintf-style appender: keeps counting once the buffer is full. */
struct fmt_out {
	char *buf;
	size_t len;
	size_t pos;
};

__attribute__((format(printf, 2, 3)))
static void fmt_put(struct fmt_out *o, const char *fmt, ...)
{
	size_t room = o->pos < o->len ? o->len - o->pos : 0;
	va_list ap;
	int n;

	va_start(ap, fmt);
	/* With no room left, vsnprintf only counts; the NUL is already there. */
	n = vsnprintf(room ? o->buf + o->pos : NULL, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->pos += (size_t)n;
}

/*
 * Single-bit flags in the order people read an entry: is it there, may
 * hardware read it, may hardware write it, what software thinks of it.
 * Bit 6 and bit 12 depend on whether the entry sits in a directory.
 */
static const struct {
	gpamm_pte_t bit;
	const char *name;
} pte_flags[] = {
	{ GPAMM_PTE_PRESENT, "PRESENT" },
	{ GPAMM_PTE_VALID, "VALID" },
	{ GPAMM_PTE_DIRTY, "DIRTY" },
	{ GPAMM_PTE_WRITE, "WRITE" },
	{ GPAMM_PTE_MODIFIED, "MODIFIED" },
	{ GPAMM_PTE_PROTNONE, "PROTNONE" },
	{ GPAMM_PTE_SPECIAL, "SPECIAL" },
	{ GPAMM_PTE_NO_READ, "NO_READ" },
	{ GPAMM_PTE_NO_EXEC, "NO_EXEC" },
	{ GPAMM_PTE_RPLV, "RPLV" },
};

static const char *const mat_names[4] = { "SUC", "CC", "WUC", "RESERVED" };

int gpamm_pte_format(gpamm_pte_t pte, unsigned page_shift, bool huge,
		     char *buf, size_t len)
{
	struct fmt_out o = { .buf = buf, .len = len, .pos = 0 };
	gpamm_pte_t known = GPAMM_PTE_PLV_MASK | GPAMM_PTE_MAT_MASK |
			    GPAMM_PTE_GLOBAL;
	uint64_t pfn_mask = 0;
	size_t i;

	if (len)
		buf[0] = '\0';
	for (i = 0; i < sizeof(pte_flags) / sizeof(pte_flags[0]); i++)
		known |= pte_flags[i].bit;

	/*
	 * A page shift outside what the PFN field can start at has no PFN:
	 * everything above the flags then shows up as unknown rather than as
	 * a PFN that overlaps flag bits.
	 */
	if (page_shift >= 12 && page_shift < GPAMM_PTE_PFN_END)
		pfn_mask = gpamm_pte_pfn_mask(page_shift);
	/* In a huge entry bit 12 is HGLOBAL, never part of the PFN. */
	if (huge) {
		pfn_mask &= ~GPAMM_PTE_HGLOBAL;
		known |= GPAMM_PTE_HGLOBAL;
	}
	known |= pfn_mask;

	fmt_put(&o, "0x%llx", (unsigned long long)pte);
	for (i = 0; i < sizeof(pte_flags) / sizeof(pte_flags[0]); i++) {
		if (pte & pte_flags[i].bit)
			fmt_put(&o, " %s", pte_flags[i].name);
		/* Keep the place/size attributes next to the access bits. */
		if (pte_flags[i].bit == GPAMM_PTE_MODIFIED) {
			if (pte & GPAMM_PTE_GLOBAL)
				fmt_put(&o, " %s", huge ? "HUGE" : "GLOBAL");
			if (huge && (pte & GPAMM_PTE_HGLOBAL))
				fmt_put(&o, " HGLOBAL");
		}
	}
	fmt_put(&o, " MAT=%s PLV=%u",
		mat_names[(pte & GPAMM_PTE_MAT_MASK) >> 4],
		(unsigned)((pte & GPAMM_PTE_PLV_MASK) >> GPAMM_PTE_PLV_SHIFT));
	if (pfn_mask)
		fmt_put(&o, " pfn=0x%llx",
			(unsigned long long)((pte & pfn_mask) >> page_shift));
	if (pte & ~known)
		fmt_put(&o, " unknown=0x%llx", (unsigned long long)(pte & ~known));

	return o.pos > (size_t)INT_MAX ? INT_MAX : (int)o.pos;
}
