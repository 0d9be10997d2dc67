/* SPDX-License-Identifier: MIT */
/*
 * A host or VMM call made from guest code. A real guest reaches the host
 * only through an exit, so a call that may wait for vCPUs (a host event's
 * remote TLB flush waits for every vCPU in guest mode, this one included)
 * leaves guest mode for its duration, as an exit would, and enters it again
 * afterwards, taking the flushes the call asked for. On any other thread
 * the pair does nothing.
 */
#ifndef GPAMM_GUESTCALL_H
#define GPAMM_GUESTCALL_H

struct gpamm_vcpu;

/* Return: the vCPU to hand to gpamm_guest_call_end(), or NULL. */
struct gpamm_vcpu *gpamm_guest_call_begin(void);
void gpamm_guest_call_end(struct gpamm_vcpu *v);

#endif
