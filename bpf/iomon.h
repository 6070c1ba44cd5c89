/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layouts shared by bpf/iomon.bpf.c and the Rust daemon. Rust never mirrors
 * these by hand: it uses the skeleton's generated `types::` (see
 * daemon/probes.rs), so this header is the one source of truth.
 *
 * Plain integer types only.
 */
#ifndef IOMON_H
#define IOMON_H

#define IOMON_COMM_LEN 16

/* posix_fadvise advice values 0..5; anything else is counted as "invalid". */
#define IOMON_ADVICE_SLOTS 7
#define IOMON_ADVICE_INVALID 6

/* The read syscalls of the reads family, in this order. */
#define IOMON_READ_SYSCALLS 5

/* log2 histograms: bucket b counts values in [2^b, 2^(b+1)) microseconds
 * (bucket 0 also holds values below 1 us); the last bucket is open-ended. */
#define IOMON_HIST_BUCKETS 32

/* Index of every host-wide counter in the `counters` per-CPU array. */
enum iomon_counter {
	/* fadvise: FADV_BASE + advice * 2 + (0 = ok, 1 = error) */
	IOMON_C_FADV_BASE = 0,
	/* reads: calls and bytes per syscall, READ_CALLS_BASE + syscall */
	IOMON_C_READ_CALLS_BASE = IOMON_C_FADV_BASE + IOMON_ADVICE_SLOTS * 2,
	IOMON_C_READ_BYTES_BASE = IOMON_C_READ_CALLS_BASE + IOMON_READ_SYSCALLS,
	IOMON_C_READ_ERRORS = IOMON_C_READ_BYTES_BASE + IOMON_READ_SYSCALLS,
	IOMON_C_READ_LATENCY_NS,   /* sum of read latencies, ns */
	/* page cache, in pages */
	IOMON_C_PC_ASKED,          /* pages buffered reads asked for */
	IOMON_C_PC_MISSED_SYNC,    /* asked pages the read itself brought in */
	IOMON_C_PC_MISSED_RA,      /* asked pages earlier read-ahead brought in */
	IOMON_C_PC_READAHEAD,      /* pages reads added beyond what they asked */
	IOMON_C_PC_ADDED,          /* all pages added to the page cache */
	IOMON_C_PC_DELETED,        /* all pages removed from the page cache */
	IOMON_C_PC_READ_EVENTS,    /* mm_filemap_get_pages events seen */
	/* reclaim */
	IOMON_C_SCANNED_KSWAPD,
	IOMON_C_RECLAIMED_KSWAPD,
	IOMON_C_SCANNED_DIRECT,
	IOMON_C_RECLAIMED_DIRECT,
	IOMON_C_STALLS_DIRECT,     /* global direct reclaim (begin/end pairs) */
	IOMON_C_STALLS_MEMCG,      /* memcg limit reclaim (begin/end pairs) */
	IOMON_C_STALL_NS,          /* sum of stall durations, ns */
	/* mmap: file-backed page faults, in faults and pages */
	IOMON_C_MM_FAULTS,         /* faults fault-around could not map (filemap_fault) */
	IOMON_C_MM_MAJOR,          /* of those, faults whose page had to be read in */
	IOMON_C_MM_AROUND,         /* fault-around lookups (filemap_map_pages) */
	IOMON_C_MM_ASKED,          /* pages faults looked up */
	IOMON_C_MM_MISSED_SYNC,    /* asked pages the fault itself read in */
	IOMON_C_MM_MISSED_RA,      /* asked pages earlier read-ahead read in */
	IOMON_C_MM_READAHEAD,      /* pages faults read in beyond the faulting page */
	/* writeback */
	IOMON_C_WB_DIRTIED,        /* pages dirtied */
	IOMON_C_WB_WRITTEN,        /* pages the flusher wrote back */
	IOMON_C_WB_INODES,         /* inodes the flusher wrote back */
	IOMON_C_WB_AGE_NS,         /* sum of their dirty age at writeback, ns */
	IOMON_C_WB_THROTTLES,      /* writers paused by balance_dirty_pages */
	IOMON_C_WB_THROTTLE_NS,    /* sum of those pauses, ns */
	/* bookkeeping: increments the kernel side could not attribute */
	IOMON_C_PROC_DROPPED,      /* per-process update failed (map full) */
	IOMON_C_TASK_STATE_MISSING,/* task storage could not be created */
	IOMON_C_NR,
};

enum iomon_hist {
	IOMON_H_READ_LATENCY = 0,  /* read syscall latency, us */
	IOMON_H_STALL_LATENCY,     /* direct + memcg reclaim stall, us */
	IOMON_H_DIRTY_AGE,         /* age of an inode's dirty data at writeback, us */
	IOMON_H_THROTTLE,          /* balance_dirty_pages pause, us */
	IOMON_H_NR,
};

/* Per-process attribution, one entry per tgid active in an interval. */
struct iomon_proc {
	char comm[IOMON_COMM_LEN];
	unsigned long long fadvise[IOMON_ADVICE_SLOTS][2];
	unsigned long long read_calls;
	unsigned long long read_bytes;
	unsigned long long pc_asked;
	unsigned long long pc_missed;
	unsigned long long mm_asked;
	unsigned long long mm_missed;
	unsigned long long mm_major;
	unsigned long long wb_dirtied;
	unsigned long long wb_throttles;
	unsigned long long wb_throttle_ns;
};

/* Ties the enums into BTF so that the skeleton exports them to Rust. */
struct iomon_abi {
	enum iomon_counter counter;
	enum iomon_hist hist;
	struct iomon_proc proc;
};

#endif /* IOMON_H */
