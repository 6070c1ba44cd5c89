/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layouts shared by the BPF programs and the Rust daemon. Rust never mirrors
 * these by hand: it uses the skeleton's generated `types::` (see
 * daemon/probes), so this header is the one source of truth.
 *
 * The counter, histogram and per-process indices come from the family
 * declarations (bpf/core.toml, bpf/families/*.toml) through the generated
 * iomon_schema.h: each is declared once, there.
 *
 * Plain integer types only.
 */
#ifndef IOMON_H
#define IOMON_H

#include "iomon_schema.h"

#define IOMON_COMM_LEN 16

/* log2 histograms: bucket b counts values in [2^b, 2^(b+1)) microseconds
 * (bucket 0 also holds values below 1 us); the last bucket is open-ended. */
#define IOMON_HIST_BUCKETS 32

/* Per-process attribution, one entry per tgid active in an interval: the
 * name, the targets its events were counted for (a bit per target slot),
 * then every family's per-process fields (IOMON_P_*). */
struct iomon_proc {
	char comm[IOMON_COMM_LEN];
	unsigned int targets;
	unsigned int pad;
	unsigned long long v[IOMON_P_NR];
};

/* Ties the layouts into BTF so that the skeleton exports them to Rust. */
struct iomon_abi {
	struct iomon_proc proc;
};

#endif /* IOMON_H */
