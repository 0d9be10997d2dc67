/* SPDX-License-Identifier: MIT */
/*
 * What the machine itself gives a migration, measured in the same run: a
 * plain memcpy of the guest's size between two pre-touched buffers, and a
 * plain TCP send of the same size over the loopback (a receiver thread
 * reading into a reused buffer), both from warm memory.
 */
#ifndef GPAMM_MIG_BASELINE_H
#define GPAMM_MIG_BASELINE_H

#include <stdint.h>

struct mig_baseline {
	uint64_t bytes;
	double memcpy_s, tcp_s; /* seconds; < 0 when not measured */
};

/* Return: 0, or -errno (nothing measured). */
int mig_baseline_measure(uint64_t bytes, struct mig_baseline *b);

#endif
