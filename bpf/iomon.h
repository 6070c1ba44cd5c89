/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layouts shared by the BPF programs and the Rust daemon. Rust never mirrors
 * these by hand: it uses the skeleton's generated `types::` (see
 * daemon/probes), so this header is the one source of truth.
 *
 * The counter, histogram and per-process indices come from the family
 * declarations (bpf/core.toml, bpf/families/<name>.toml) through the generated
 * iomon_schema.h: each is declared once, there.
 *
 * Plain integer types only.
 */
#ifndef IOMON_H
#define IOMON_H

#include "iomon_schema.h"

#define IOMON_COMM_LEN 16

/* Targets: processes, names or cgroups whose events are also counted in
 * their own slots (slot 0 is the host, target i is slot 1 + i). */
#define IOMON_TARGETS 8
#define IOMON_SLOTS (1 + IOMON_TARGETS)

enum iomon_target_kind {
	IOMON_TARGET_NONE = 0,
	IOMON_TARGET_COMM = 1,   /* the thread's name */
	IOMON_TARGET_CGROUP = 2, /* a cgroup v2 and its descendants */
	IOMON_TARGET_PID = 3,    /* a process (tgid) */
};

struct iomon_target {
	unsigned int kind;
	unsigned int level;          /* cgroup: its depth (the root is 0) */
	unsigned long long cgroup;   /* cgroup: its id */
	unsigned int tgid;           /* pid */
	unsigned int pad;
	char comm[IOMON_COMM_LEN];   /* comm */
};

/* What the daemon sets; `gen` changes with every change, so that threads
 * that cached their targets look again. */
struct iomon_targets {
	unsigned long long gen;
	unsigned int nr;
	unsigned int pad;
	struct iomon_target t[IOMON_TARGETS];
};

/* Per-file numbers of a target, keyed by file and target slot (0-based
 * target index, not the counters' slot). */
struct iomon_file_key {
	unsigned long long ino;
	unsigned int dev;            /* the kernel's dev_t: major << 20 | minor */
	unsigned int target;
};

enum iomon_file_field {
	IOMON_F_ASKED = 0,            /* pages the target's buffered reads asked for */
	IOMON_F_MISSED = 1,           /* ... of those, missed */
	IOMON_F_EVICTED = 2,          /* pages removed from the cache (by anyone) */
	IOMON_F_DONTNEED_COVERED = 3, /* pages the target's DONTNEED calls covered */
	IOMON_F_DONTNEED_DROPPED = 4, /* ... and dropped */
	/* Evicted, by cause (reclaim, fadvise, truncate, other: as the
	 * pagecache family tells them; unknown causes, before 5.15, are
	 * other). Sum = EVICTED. */
	IOMON_F_EVICTED_RECLAIM = 5,
	IOMON_F_EVICTED_FADVISE = 6,
	IOMON_F_EVICTED_TRUNCATE = 7,
	IOMON_F_EVICTED_OTHER = 8,
	IOMON_F_DONTNEED_CALLS = 9,   /* the target's DONTNEED calls on it */
	IOMON_F_MAP_ASKED = 10,       /* pages the target's faults on its mappings looked up */
	IOMON_F_MAP_MISSED = 11,      /* ... of those, read in */
	/* Pages read back into the cache within the refault window after
	 * they were evicted, by the eviction's cause. */
	IOMON_F_REFAULT_RECLAIM = 12,
	IOMON_F_REFAULT_FADVISE = 13,
	IOMON_F_REFAULT_TRUNCATE = 14,
	IOMON_F_REFAULT_OTHER = 15,
	IOMON_F_NR = 16,
};

/* Pages of a target's file that left the page cache, for refault
 * detection: per block of IOMON_EVICTED_BLOCK pages of a file, which of
 * its pages are out, and when, why and for which targets the last of them
 * went (a block's pages leave together in practice: a DONTNEED over a
 * range, reclaim of a file's cold tail). */
#define IOMON_EVICTED_BLOCK 512
struct iomon_evicted_key {
	unsigned long long ino;
	unsigned long long block;     /* page index / IOMON_EVICTED_BLOCK */
	unsigned int dev;
	unsigned int pad;
};

struct iomon_evicted {
	unsigned long long when_ns;   /* bpf_ktime_get_ns() at the last eviction */
	unsigned int cause;           /* 0 reclaim, 1 fadvise, 2 truncate, 3 other */
	unsigned int targets;         /* the file's targets then */
	unsigned long long out[IOMON_EVICTED_BLOCK / 64]; /* a bit per page evicted */
};

struct iomon_file {
	unsigned long long v[IOMON_F_NR];
};

/* log2 histograms: bucket b counts values in [2^b, 2^(b+1)) microseconds
 * (bucket 0 also holds values below 1 us); the last bucket is open-ended. */
#define IOMON_HIST_BUCKETS 32

/* Per-process attribution, one entry per tgid active in an interval: the
 * name, the targets its events were counted for (a bit per target slot),
 * the kernel side's cache of which targets it matches, then every
 * family's per-process fields (IOMON_P_*). */
struct iomon_proc {
	char comm[IOMON_COMM_LEN];
	unsigned int targets;        /* the targets its events counted for */
	unsigned int tgt_gen;        /* kernel side: tgt_mask is for this targets generation */
	unsigned int tgt_mask;       /* ... the targets it matches (0 gen: match again) */
	unsigned int pad;
	unsigned long long v[IOMON_P_CAP]; /* IOMON_P_NR used */
};

/* Ties the layouts into BTF so that the skeleton exports them to Rust. */
struct iomon_abi {
	struct iomon_proc proc;
	struct iomon_targets targets;
	struct iomon_file_key file_key;
	struct iomon_file file;
	struct iomon_evicted_key evicted_key;
	struct iomon_evicted evicted;
};

#endif /* IOMON_H */
