/* SPDX-License-Identifier: MIT */
/*
 * The host's KVM as a peer for "gpamm bench": the same suite phases run on
 * a real KVM VM (through /dev/kvm and the ioctls of <linux/kvm.h>), so
 * gpamm's figures can be put next to KVM's from the same machine and run.
 *
 * The device is /dev/kvm, or $GPAMM_KVM_DEVICE when set (tests point it at
 * a missing file to exercise the skip path).
 */
#ifndef GPAMM_BENCH_KVM_PEER_H
#define GPAMM_BENCH_KVM_PEER_H

#include <stddef.h>

#include "suite.h"

/* Highest guest-physical byte the peer's 32-bit guest can reach (exclusive). */
#define KVM_PEER_MAX_BYTES 0xFFFFF000ULL

/**
 * kvm_peer_probe() - can the host's KVM be used? Opens the device and
 * checks KVM_GET_API_VERSION (12) and the capabilities the peer needs.
 * Return: 0, or -1 with the reason in @why.
 */
int kvm_peer_probe(char *why, size_t len);

/**
 * kvm_peer_flavour() - which KVM serves the device, from the loaded
 * modules, and what a guest page fault costs there: "kvm_intel (VMX, EPT,
 * PML)", "kvm_amd (SVM, NPT)", "kvm_pvm (software switcher, shadow paging)".
 */
const char *kvm_peer_flavour(char *buf, size_t len);

/**
 * kvm_peer_exit_note() - one or two sentences for the side-by-side table:
 * what a KVM dirty-write fault includes that gpamm's does not.
 */
const char *kvm_peer_exit_note(char *buf, size_t len);

/**
 * kvm_peer_dirty_log_perf() - the dirty_log_perf phases on KVM. Always
 * 4K pages; guest memory must fit below KVM_PEER_MAX_BYTES. Return: 0, or
 * -1 with r->status SKIPPED and the reason (the peer never fails the run).
 */
int kvm_peer_dirty_log_perf(const struct bench_cfg *cfg, struct bench_run *r);

#endif
