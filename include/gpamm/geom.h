/* SPDX-License-Identifier: MIT */
/*
 * gpamm/geom.h - the six LoongArch GPA-table layouts, picked at run time.
 *
 * Every table is one page of 8-byte entries. Level 0 holds leaf entries;
 * level 1 (the "PMD") may hold huge block leaves; the root is level
 * levels-1. Shifts and the GPA width are derived from the page shift and
 * the level count, never tabulated per layout.
 *
 * Context: pure data; any thread.
 */
#ifndef GPAMM_GEOM_H
#define GPAMM_GEOM_H

#include <stdint.h>

#define GPAMM_MAX_LEVELS 4

struct gpamm_geom {
	uint8_t page_shift;      /* 12, 14 or 16 */
	uint8_t levels;          /* 2, 3 or 4 */
	uint8_t bits_per_level;  /* page_shift - 3 */
	uint8_t gpa_bits;        /* page_shift + levels * bits_per_level */
	uint8_t shift[GPAMM_MAX_LEVELS]; /* address shift of an entry at each level */
	uint32_t entries;        /* entries per table */
	uint64_t page_size;
};

/**
 * gpamm_geom_init() - derive a layout.
 * @g:          filled on success, untouched on error
 * @page_shift: 12 (4K), 14 (16K) or 16 (64K)
 * @levels:     4K: 3 or 4; 16K and 64K: 2 or 3
 *
 * Return: 0, or -EINVAL for a layout Linux does not build.
 */
int gpamm_geom_init(struct gpamm_geom *g, unsigned page_shift, unsigned levels);

/** The six layouts, in REFERENCE.md order, for iteration: {page_shift, levels}. */
extern const uint8_t gpamm_geom_layouts[6][2];

static inline uint64_t gpamm_geom_space(const struct gpamm_geom *g)
{
	return 1ULL << g->gpa_bits; /* at most 2^55: never overflows */
}
static inline uint64_t gpamm_geom_level_size(const struct gpamm_geom *g, unsigned level)
{
	return 1ULL << g->shift[level];
}
/** Bytes a huge (level 1) leaf maps. */
static inline uint64_t gpamm_geom_huge_size(const struct gpamm_geom *g)
{
	return 1ULL << g->shift[1];
}
static inline unsigned gpamm_geom_index(const struct gpamm_geom *g, uint64_t gpa,
					unsigned level)
{
	return (unsigned)(gpa >> g->shift[level]) & (g->entries - 1);
}

#endif
