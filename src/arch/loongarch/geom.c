// SPDX-License-Identifier: MIT
/*
 * Geometry math for the GPA table. Level i translates address bits
 * [shift[i], shift[i] + bits_per_level); shift[i] = page_shift + i * (page_shift - 3).
 */
#include <errno.h>
#include <string.h>

#include "gpamm/geom.h"

const uint8_t gpamm_geom_layouts[6][2] = {
	{ 12, 3 }, { 12, 4 }, { 14, 2 }, { 14, 3 }, { 16, 2 }, { 16, 3 },
};

int gpamm_geom_init(struct gpamm_geom *g, unsigned page_shift, unsigned levels)
{
	struct gpamm_geom n;
	unsigned i;
	int ok = 0;

	for (i = 0; i < 6; i++)
		if (gpamm_geom_layouts[i][0] == page_shift && gpamm_geom_layouts[i][1] == levels)
			ok = 1;
	if (!ok)
		return -EINVAL;

	memset(&n, 0, sizeof(n));
	n.page_shift = (uint8_t)page_shift;
	n.levels = (uint8_t)levels;
	n.bits_per_level = (uint8_t)(page_shift - 3);
	n.gpa_bits = (uint8_t)(page_shift + levels * n.bits_per_level);
	for (i = 0; i < levels; i++)
		n.shift[i] = (uint8_t)(page_shift + i * n.bits_per_level);
	n.entries = 1u << n.bits_per_level;
	n.page_size = 1ULL << page_shift;
	*g = n;
	return 0;
}
