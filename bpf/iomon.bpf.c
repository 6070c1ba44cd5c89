// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * iomon's kernel side: count, never think. This file holds what every
 * family shares (the maps the drain reads, per-thread state, read-ahead
 * windows, helpers); each family's programs are in bpf/families/<name>.bpf.c
 * and its counters in bpf/families/<name>.toml. Everything is one object:
 * the daemon loads only the programs of the route it picked for each
 * family (`set_autoload`), and creates only the maps those need.
 *
 * Host-wide numbers only ever grow in per-CPU arrays; userspace diffs them.
 * Per-process numbers go to a bounded LRU hash that userspace drains.
 */
/* Kernel types per architecture (CO-RE relocates them on each kernel):
 * vmlinux.h from x86_64, vmlinux_arm64.h by scripts/vmlinux-h. */
#if defined(__TARGET_ARCH_arm64)
#include "vmlinux_arm64.h"
#else
#include "vmlinux.h"
#endif
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "iomon.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PF_EXITING 0x00000004
#define PF_MEMALLOC 0x00000800
#define PF_KSWAPD 0x00020000
#define PF_KTHREAD 0x00200000

/* Set by the daemon before load (read-only data: the verifier prunes on
 * it). The kernel's page size, as a shift; its HZ, 0 when unknown. */
const volatile u32 page_shift = 12;
const volatile u32 kernel_hz = 0;
/* Pages of a target's file read back within this long after they were
 * evicted are refaults (0: not looked for). */
const volatile u64 refault_window_ns = 0;

/* Syscalls that read files through the page cache (filemap_read). */
#if defined(__TARGET_ARCH_x86)
#define NR_READ 0
#define NR_PREAD64 17
#define NR_READV 19
#define NR_SENDFILE 40
#define NR_SPLICE 275
#define NR_PREADV 295
#define NR_COPY_FILE_RANGE 326
#define NR_PREADV2 327
#define SYSCALL_NR(regs) ((regs)->orig_ax)
#define NR_FADVISE64 221
#define SYSCALL_FADVISE "fadvise64"
/* The syscalls' entry functions (their wrappers, given the user's saved
 * registers): fentry/fexit there see what the syscall tracepoints see,
 * and cost nothing to any other syscall. */
#define SYSCALL_FN(name) "__x64_sys_" name
/* Syscalls that remove a file's pages with its data: truncate, punch a
 * hole, unlink or overwrite (the last reference to an unlinked file goes
 * at close, munmap, exec or exit). */
#define CASE_NR_TRUNCATE                                                      \
	case 76: case 77: case 285: case 2: case 257: case 437: case 85:      \
	case 87: case 263: case 82: case 264: case 316: case 3: case 436:     \
	case 33: case 292: case 60: case 231: case 11: case 59: case 322
#elif defined(__TARGET_ARCH_arm64)
#define NR_READ 63
#define NR_PREAD64 67
#define NR_READV 65
#define NR_SENDFILE 71
#define NR_SPLICE 76
#define NR_PREADV 69
#define NR_COPY_FILE_RANGE 285
#define NR_PREADV2 286
#define SYSCALL_NR(regs) ((regs)->syscallno)
#define NR_FADVISE64 223
#define SYSCALL_FADVISE "fadvise64_64"
#define SYSCALL_FN(name) "__arm64_sys_" name
#define CASE_NR_TRUNCATE                                                      \
	case 45: case 46: case 47: case 56: case 437: case 57: case 436:      \
	case 35: case 38: case 276: case 24: case 93: case 94: case 215:      \
	case 221: case 281
#else
#error "iomon: no syscall numbers for this architecture"
#endif
#define NR_IO_URING_ENTER 426

/* Referenced so that the shared layouts reach BTF and the skeleton. */
struct iomon_abi iomon_abi_anchor SEC(".bss");

/* Bounded by IOMON_SLOTS * IOMON_C_NR per CPU: one u64 per counter, for
 * the host (slot 0) and for each target. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IOMON_SLOTS * IOMON_C_NR);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

/* Bounded by IOMON_SLOTS * IOMON_H_NR * IOMON_HIST_BUCKETS per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IOMON_SLOTS * IOMON_H_NR * IOMON_HIST_BUCKETS);
	__type(key, u32);
	__type(value, u64);
} hists SEC(".maps");

/* One entry: the targets the daemon configured (bounded by IOMON_TARGETS). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct iomon_targets);
} targets SEC(".maps");

/* Which of each pair of interval maps programs write to: the low bit of
 * entry 0 for the per-process pair, of entry 1 for the per-file pair. The
 * drain flips one with a plain array update (no wait), then waits for one
 * RCU grace period off its event loop (see rcu_barrier below) before it
 * reads the map programs left: every program runs inside an RCU read-side
 * section, so once the grace period has passed none can still be writing
 * there. Two entries. */
#define MAPS_GEN_PROCS 0
#define MAPS_GEN_FILES 1
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u32);
} maps_gen SEC(".maps");

/* Per-file numbers of targets: two bounded hashes, one written while the
 * drain empties the other (see maps_gen), so each holds the (file,
 * target) pairs active in one interval. Bounded by max_entries
 * (userspace may set it before load); when full, increments are refused
 * and counted (IOMON_C_CORE_FILE_DROPPED). */
struct file_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct iomon_file_key);
	__type(value, struct iomon_file);
};
struct file_map files_a SEC(".maps");
struct file_map files_b SEC(".maps");

/* The pair, indexed by maps_gen's low bit. Set at load, never updated:
 * reading it costs no wait and no helper call (lookups are inlined). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, u32);
	__array(values, struct file_map);
} files_maps SEC(".maps") = {
	.values = { &files_a, &files_b },
};

/* Per-process attribution: two bounded hashes, one written while the
 * drain empties the other (see maps_gen): no program can still be adding
 * to an entry the drain takes, so no increment is lost. Each is bounded by
 * max_entries: when full, a new process's increments are refused and
 * counted (IOMON_C_CORE_PROC_DROPPED), exactly (an LRU would evict an
 * entry, and its counts, silently). The drain empties them every tick, so
 * they hold the processes active in one interval. Userspace sets both
 * capacities before load. */
struct proc_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, u32);
	__type(value, struct iomon_proc);
} procs_a SEC(".maps"), procs_b SEC(".maps");

/* The pair, indexed by maps_gen's low bit; set at load, never updated. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u32);
	__array(values, struct proc_map);
} procs_maps SEC(".maps") = {
	.values = { &procs_a, &procs_b },
};

/* No program uses these two: the drain's RCU barrier. Updating a slot of
 * a map-in-map makes the kernel wait for an RCU grace period (for every
 * running BPF program) before the update returns, so the drain does that,
 * on a thread of its own, after flipping maps_gen. One slot, one entry. */
struct barrier_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} rcu_barrier_inner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
	__array(values, struct barrier_inner);
} rcu_barrier SEC(".maps") = {
	.values = { &rcu_barrier_inner },
};

/* Per-thread state: each declaration's own part (`thread` in bpf/core.toml
 * and bpf/families/<name>.toml), one member per family (generated). */
#include "iomon_threads.h"

/* Per-thread state where the kernel has task storage (5.11+): bounded by
 * the number of live threads, freed with its thread. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_state);
} task_states SEC(".maps");

/* The same before 5.11, keyed by thread id: bounded by max_entries (LRU:
 * the state of the least recently active thread goes first, which costs
 * at most the one event it was pairing). The daemon creates only one of
 * the two. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct thread_state);
} thread_hash SEC(".maps");

/* Read-ahead pages not yet asked for, per file (pagecache and mmap): up to
 * RA_RANGES ranges (read-ahead skips cached pages, so one window can be
 * several ranges). Bounded by max_entries; LRU evicts the least recently
 * read file, whose outstanding pages then stay counted as read-ahead only. */
#define RA_RANGES 8
struct file_key {
	u64 ino;
	u32 dev;
	u32 pad;
};
struct ra_window {
	struct { u64 start, end; } r[RA_RANGES]; /* [start, end) in pages */
	u32 next;                                /* slot to reuse when full */
	u32 pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct file_key);
	__type(value, struct ra_window);
} ra_windows SEC(".maps");

/* Bumped by every read-ahead insert: a thread that found a file without
 * outstanding read-ahead skips the lookup until this changes (warm reads,
 * the common case, then cost no hash lookup). */
u64 ra_generation SEC(".bss");

/* The files targets read or advised on, with the targets (a bit each) and
 * when last: their evictions, which run in anyone's task (kswapd's), are
 * the targets'. Bounded by max_entries: when full, a new file is not
 * remembered and that is counted (IOMON_C_CORE_FILE_SET_DROPPED); the
 * drain removes files no target touched for an hour. */
struct file_seen {
	u32 targets;
	u32 pad;
	u64 last_ns;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct file_key);
	__type(value, struct file_seen);
} target_file_set SEC(".maps");

static __always_inline void count_slot(u32 slot, u32 idx, u64 n)
{
	u32 k = slot * IOMON_C_NR + idx;
	u64 *v = bpf_map_lookup_elem(&counters, &k);
	if (v)
		*v += n;
}

/* Adds n to counter idx for every target in `tm` (a bit per target
 * slot). A function of its own (not inlined): the verifier checks it once,
 * not at every call site, and an event of no target never calls it. */
__noinline int count_targets_fn(u32 tm, u32 idx, u64 n)
{
	for (int i = 0; i < IOMON_TARGETS; i++)
		if (tm & (1U << i))
			count_slot(1 + i, idx, n);
	return 0;
}

/* Adds n to counter idx for the host and for every target in `tm`: the
 * host's slot inline (no call: most events are no target's). */
#define count(tm, idx, n)                                                    \
	do {                                                                  \
		u32 count_tm_ = (tm);                                         \
		count_slot(0, (idx), (n));                                    \
		if (count_tm_)                                                \
			count_targets_fn(count_tm_, (idx), (n));              \
	} while (0)

/* The histogram bucket of `ns`: floor(log2(microseconds)) (0 below 2 µs),
 * at most IOMON_HIST_BUCKETS - 1. Five steps, no loop; computed once per
 * value and passed to hist_add() and row_hist(). */
_Static_assert(IOMON_HIST_BUCKETS <= 32, "log2 of a u32");
static __always_inline u32 hist_bucket(u64 ns)
{
	u64 us = ns / 1000;
	if (us >> (IOMON_HIST_BUCKETS - 1))
		return IOMON_HIST_BUCKETS - 1;
	u32 v = us, r, s;
	r = (v > 0xffff) << 4;
	v >>= r;
	s = (v > 0xff) << 3;
	v >>= s;
	r |= s;
	s = (v > 0xf) << 2;
	v >>= s;
	r |= s;
	s = (v > 0x3) << 1;
	v >>= s;
	r |= s;
	return r | (v >> 1);
}

static __always_inline void hist_slot(u32 slot, u32 idx)
{
	u32 k = slot * IOMON_H_NR * IOMON_HIST_BUCKETS + idx;
	u64 *v = bpf_map_lookup_elem(&hists, &k);
	if (v)
		*v += 1;
}

/* Adds one to histogram slot idx for every target in `tm` (see
 * count_targets_fn). */
__noinline int hist_targets_fn(u32 tm, u32 idx)
{
	for (int i = 0; i < IOMON_TARGETS; i++)
		if (tm & (1U << i))
			hist_slot(1 + i, idx);
	return 0;
}

/* Adds one to bucket `b` (hist_bucket()) of histogram `hist` (IOMON_H_*:
 * log2 buckets of microseconds) for the host and for every target in
 * `tm`: the host's slot inline, as in count() (a call and its return are
 * dear where the kernel mitigates SRSO, and most events are no target's). */
#define hist_add(tm, hist, b)                                                \
	do {                                                                  \
		u32 hist_tm_ = (tm);                                          \
		u32 hist_idx_ = (hist) * IOMON_HIST_BUCKETS + (b);            \
		hist_slot(0, hist_idx_);                                      \
		if (hist_tm_)                                                 \
			hist_targets_fn(hist_tm_, hist_idx_);                 \
	} while (0)

/* The row of `key` in a family's rows map (declared `rows`), created at
 * the key's first event; NULL, and the event counted in
 * IOMON_C_CORE_ROWS_DROPPED, when the map is full. */
static __always_inline u64 *row_of(void *map, u32 key, const void *zero)
{
	u64 *r = bpf_map_lookup_elem(map, &key);
	if (!r) {
		/* EEXIST when another CPU inserted it first: fine, look it up. */
		bpf_map_update_elem(map, &key, zero, BPF_NOEXIST);
		r = bpf_map_lookup_elem(map, &key);
		if (!r)
			count_slot(0, IOMON_C_CORE_ROWS_DROPPED, 1);
	}
	return r;
}

/* Adds n to element i of a row of `len` elements (atomic: rows are shared
 * by every CPU). The bound is checked after a compiler barrier, on the
 * register the index is used from (see proc_add). */
static __always_inline void row_add(u64 *r, u64 i, u64 len, u64 n)
{
	asm volatile("" : "+r"(i));
	if (r && i < len)
		__sync_fetch_and_add(&r[i], n);
}

/* A family's counter `idx` (IOMON_C_<FAM>_*) and histogram `h`
 * (IOMON_H_<FAM>_*) in one of its rows. */
#define row_count(FAM, r, idx, n)                                            \
	row_add((r), (idx) - IOMON_ROW_##FAM##_C0, IOMON_ROW_##FAM##_LEN, (n))
#define row_hist(FAM, r, h, b)                                               \
	row_add((r), IOMON_ROW_##FAM##_NC + ((h) - IOMON_ROW_##FAM##_H0) * IOMON_HIST_BUCKETS + (b), \
		IOMON_ROW_##FAM##_LEN, 1)

/* The low bit of a maps_gen entry: which map of an interval pair is
 * written. */
static __always_inline u32 maps_slot(u32 which)
{
	u32 *g = bpf_map_lookup_elem(&maps_gen, &which);
	return g ? (*g & 1) : 0;
}

static __always_inline void *files_map(void)
{
	u32 slot = maps_slot(MAPS_GEN_FILES);
	return bpf_map_lookup_elem(&files_maps, &slot);
}

static const struct iomon_file zero_file = {};

/* Adds n to a per-file field of every target in `tm`, and n2 to field2
 * (IOMON_F_NR: none); a read, a fault or a DONTNEED also marks the file as
 * the targets' (for its evictions and refaults). */
__noinline int file_add_fn(u64 tm_dev, u64 ino, u32 fields, u64 n, u64 n2)
{
	/* Packed: a BPF function takes five arguments at most. */
	u32 tm = tm_dev >> 32, dev = (u32)tm_dev;
	u32 field = fields & 0xff, field2 = fields >> 8;
	if (!tm || field >= IOMON_F_NR)
		return 0;
	void *files = files_map();
	if (!files)
		return 0;
	for (int i = 0; i < IOMON_TARGETS; i++) {
		if (!(tm & (1U << i)))
			continue;
		struct iomon_file_key k = { .ino = ino, .dev = dev, .target = i };
		struct iomon_file *v = bpf_map_lookup_elem(files, &k);
		if (!v) {
			bpf_map_update_elem(files, &k, &zero_file, BPF_NOEXIST);
			v = bpf_map_lookup_elem(files, &k);
		}
		if (!v) {
			count_slot(0, IOMON_C_CORE_FILE_DROPPED, 1);
			continue;
		}
		/* Masked after a barrier (see proc_add): IOMON_F_NR is a power
		 * of two. */
		u64 f = field;
		asm volatile("" : "+r"(f));
		f &= IOMON_F_NR - 1;
		__sync_fetch_and_add(&v->v[f], n);
		if (field2 < IOMON_F_NR) {
			u64 g = field2;
			asm volatile("" : "+r"(g));
			g &= IOMON_F_NR - 1;
			__sync_fetch_and_add(&v->v[g], n2);
		}
	}
	if (field == IOMON_F_EVICTED || field >= IOMON_F_REFAULT_RECLAIM)
		return 0;
	struct file_key fk = { .ino = ino, .dev = dev };
	struct file_seen *seen = bpf_map_lookup_elem(&target_file_set, &fk);
	u64 now = bpf_ktime_get_ns();
	if (seen) {
		if ((seen->targets & tm) != tm)
			seen->targets |= tm;
		seen->last_ns = now;
	} else {
		struct file_seen fresh = { .targets = tm, .last_ns = now };
		if (bpf_map_update_elem(&target_file_set, &fk, &fresh, BPF_NOEXIST) &&
		    !bpf_map_lookup_elem(&target_file_set, &fk))
			count_slot(0, IOMON_C_CORE_FILE_SET_DROPPED, 1);
	}
	return 0;
}
_Static_assert((IOMON_F_NR & (IOMON_F_NR - 1)) == 0, "IOMON_F_NR is a power of two");

/* Per-file numbers are the targets' only: no call for anyone else. */
#define file_add2(tm, ino, dev, field, n, field2, n2)                        \
	do {                                                                  \
		u32 file_tm_ = (tm);                                          \
		if (file_tm_)                                                 \
			file_add_fn((u64)file_tm_ << 32 | (u32)(dev), ino,    \
				    (field) | (field2) << 8, n, n2);          \
	} while (0)
#define file_add(tm, ino, dev, field, n) file_add2(tm, ino, dev, field, n, IOMON_F_NR, 0)

/* Blocks of targets' files with pages out of the cache (see struct
 * iomon_evicted). Bounded by max_entries (userspace sets it from
 * files.refault_blocks before load); when full, a new block's pages are
 * not remembered and counted (IOMON_C_CORE_REFAULT_DROPPED); the drain
 * removes blocks older than the refault window. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct iomon_evicted_key);
	__type(value, struct iomon_evicted);
} evicted_blocks SEC(".maps");

static const struct iomon_evicted zero_evicted = {};

/* The bits of pages [s, e) of a block (0 <= s < e <= 512) in its word
 * `w` (a constant: the loops below are unrolled, each word's index known
 * to the verifier). */
static __always_inline u64 block_bits(u32 w, u64 s, u64 e)
{
	u64 lo = w * 64ULL, hi = lo + 64;
	if (e <= lo || s >= hi)
		return 0;
	u64 a = s > lo ? s - lo : 0;
	u64 b = e < hi ? e - lo : 64;
	u64 below_b = b >= 64 ? ~0ULL : (1ULL << (b & 63)) - 1;
	return below_b & (~0ULL << (a & 63));
}

/* Bits set in x. */
static __always_inline u64 bits_in(u64 x)
{
	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (x * 0x0101010101010101ULL) >> 56;
}

/* Pages [index, index + n) of a file (n at most a block's; the part past
 * the index's block is not remembered) left the page cache for targets
 * `tm` (low half of dev_tm; the device is the high half), with `cause`:
 * remembered in their block for refaults. A global function: the
 * verifier checks it once on its own (inlined into the delete program,
 * 5.10's gives up on the paths it multiplies). */
__noinline int evicted_record(u64 ino, u64 dev_tm, u64 index, u64 n, u32 cause)
{
	u32 dev = dev_tm >> 32, tm = (u32)dev_tm;
	if (!n || n > IOMON_EVICTED_BLOCK)
		return 0;
	struct iomon_evicted_key k = {
		.ino = ino, .dev = dev, .block = index / IOMON_EVICTED_BLOCK,
	};
	u64 s = index % IOMON_EVICTED_BLOCK;
	u64 e = s + n;
	if (e > IOMON_EVICTED_BLOCK)
		e = IOMON_EVICTED_BLOCK;
	struct iomon_evicted *v = bpf_map_lookup_elem(&evicted_blocks, &k);
	if (!v) {
		bpf_map_update_elem(&evicted_blocks, &k, &zero_evicted, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&evicted_blocks, &k);
		if (!v) {
			count_slot(0, IOMON_C_CORE_REFAULT_DROPPED, e - s);
			return 0;
		}
	}
	v->when_ns = bpf_ktime_get_ns();
	v->cause = cause & 3;
	v->targets = tm;
	/* Not atomic (5.10 has no atomic or): a bit lost to two CPUs evicting
	 * pages of one block at once is a refault not seen. */
#pragma unroll
	for (u32 w = 0; w < IOMON_EVICTED_BLOCK / 64; w++)
		v->out[w] |= block_bits(w, s, e);
	return 0;
}

/* Pages [index, index + n) of a file came (back) into the page cache:
 * those evicted within the refault window are refaults. Returns them as
 * targets << 32 | cause << 16 | pages (0: none), for the caller to count:
 * a call from here to file_add_fn would make a third frame, and 5.10's
 * verifier refuses the add programs' combined stack (over 512 bytes).
 * Global, as evicted_record. */
__noinline u64 refault_take(u64 ino, u64 dev, u64 index, u64 n)
{
	if (!n || n > IOMON_EVICTED_BLOCK)
		return 0;
	struct iomon_evicted_key k = {
		.ino = ino, .dev = dev, .block = index / IOMON_EVICTED_BLOCK,
	};
	struct iomon_evicted *v = bpf_map_lookup_elem(&evicted_blocks, &k);
	if (!v)
		return 0;
	u64 s = index % IOMON_EVICTED_BLOCK;
	u64 e = s + n;
	if (e > IOMON_EVICTED_BLOCK)
		e = IOMON_EVICTED_BLOCK;
	u64 back = 0, left = 0;
#pragma unroll
	for (u32 w = 0; w < IOMON_EVICTED_BLOCK / 64; w++) {
		u64 m = v->out[w] & block_bits(w, s, e);
		back += bits_in(m);
		v->out[w] &= ~m;
		left |= v->out[w];
	}
	bool recent = bpf_ktime_get_ns() - v->when_ns <= refault_window_ns;
	u32 cause = v->cause & 3;
	u32 targets = v->targets;
	if (!left)
		bpf_map_delete_elem(&evicted_blocks, &k);
	if (!back || !recent || !targets)
		return 0;
	return (u64)targets << 32 | cause << 16 | back;
}

/* Pages of a file left the page cache: the evictions, by cause, of the
 * targets whose file it is (that read it, faulted on it or advised on it
 * in the last hour) and of `own` (the targets whose DONTNEED call drops
 * them: a file they only wrote, a merge's output, is theirs too), and
 * which pages went, for their refaults. `cause`: the pagecache family's
 * (reclaim, fadvise, truncate, other, unknown). */
static __always_inline void file_evicted(u64 ino, u32 dev, u64 index, u64 n, u32 cause, u32 own)
{
	u32 zero = 0;
	struct iomon_targets *c = bpf_map_lookup_elem(&targets, &zero);
	if (!c || !c->nr)
		return;
	struct file_key fk = { .ino = ino, .dev = dev };
	struct file_seen *seen = bpf_map_lookup_elem(&target_file_set, &fk);
	if (!seen && !own)
		return;
	u32 fc = cause < 3 ? cause : 3;
	u32 tm = (seen ? seen->targets : 0) | own;
	file_add2(tm, ino, dev, IOMON_F_EVICTED, n, IOMON_F_EVICTED_RECLAIM + fc, n);
	if (refault_window_ns)
		evicted_record(ino, (u64)dev << 32 | tm, index, n, fc);
}

/* Pages of a file came (back) into the page cache, added by a task of
 * targets `tm` (none: not looked for). */
static __always_inline void file_refault(u32 tm, u64 ino, u32 dev, u64 index, u64 n)
{
	if (!tm || !refault_window_ns)
		return;
	u64 r = refault_take(ino, dev, index, n);
	if (r)
		file_add(r >> 32, ino, dev, IOMON_F_REFAULT_RECLAIM + ((r >> 16) & 3), r & 0xffff);
}

/* A process's name: its main thread's (a thread may name itself). */
static __always_inline void leader_comm(char *comm)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	BPF_CORE_READ_STR_INTO((char(*)[IOMON_COMM_LEN])comm, task, group_leader, comm);
}

/* Bumped when the main thread of a process with other threads is renamed:
 * those threads cached a match against the old name. */
u32 comm_epoch SEC(".bss");

static __always_inline void *procs_map(void)
{
	u32 slot = maps_slot(MAPS_GEN_PROCS);
	return bpf_map_lookup_elem(&procs_maps, &slot);
}

/* Task storage (5.11+): per-thread state lives there, else in the
 * tid-keyed thread_hash. A CO-RE check: the verifier drops the other way. */
#define HAVE_TASK_STORAGE bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_storage_get)

/* Zeroed values to insert from (too big for the BPF stack). */
static const struct iomon_proc zero_proc = {};
static const struct thread_state zero_thread = {};
static const struct ra_window zero_window = {};

/* The current process's id. From the thread's state `t` where task
 * storage holds it (5.11+: the state dies with its task, whose tgid never
 * changes), remembered there at its first use: a helper call fewer per
 * event. Else (no state, or the tid-keyed map of 5.10, whose entry a
 * reused tid inherits) asked. */
static __always_inline u32 current_tgid(struct thread_state *t)
{
	if (!t || !HAVE_TASK_STORAGE)
		return bpf_get_current_pid_tgid() >> 32;
	if (!t->core.tgid)
		t->core.tgid = bpf_get_current_pid_tgid() >> 32;
	return t->core.tgid;
}

/* This process's entry, created at its first event of the interval; NULL
 * (and the refusal counted) when the map is full. `t`: the thread's
 * state, if the event has it (or NULL); `tm`: the targets the event
 * counts for, remembered with the process. */
static __always_inline struct iomon_proc *proc_entry(struct thread_state *t, u32 tm)
{
	u32 tgid = current_tgid(t);
	void *procs = procs_map();
	if (!procs)
		return NULL;
	struct iomon_proc *p = bpf_map_lookup_elem(procs, &tgid);
	if (!p) {
		/* EEXIST when another CPU inserted it first: fine, look it up. */
		bpf_map_update_elem(procs, &tgid, &zero_proc, BPF_NOEXIST);
		p = bpf_map_lookup_elem(procs, &tgid);
		if (!p) {
			count(0, IOMON_C_CORE_PROC_DROPPED, 1);
			return NULL;
		}
		if (!p->comm[0])
			leader_comm(p->comm);
	}
	/* Not atomic (5.10 has no atomic or): a bit lost to a race is set
	 * again by the process's next event. */
	if (tm && (p->targets & tm) != tm)
		p->targets |= tm;
	return p;
}

/* Adds n to a per-process field (IOMON_P_*). */
static __always_inline void proc_add(struct iomon_proc *p, u32 field, u64 n)
{
	/* Masked after a compiler barrier, so that the mask stays in the code
	 * on the register the index is used from: older verifiers lose a
	 * bound learnt on a copy of it. Indices are declared constants plus
	 * bounded offsets; the mask only keeps the verifier sure. */
	if (!p)
		return;
	u64 i = field;
	asm volatile("" : "+r"(i));
	i &= IOMON_P_CAP - 1;
	__sync_fetch_and_add(&p->v[i], n);
}

/* This thread's state: task storage where the kernel has it (5.11+),
 * else the thread-id hash. The check is a CO-RE relocation: the verifier
 * sees a constant and drops the other branch (and the map it names). */
static __always_inline struct thread_state *thread_state(bool create)
{
	struct thread_state *t;
	if (HAVE_TASK_STORAGE) {
		struct task_struct *task = bpf_get_current_task_btf();
		t = bpf_task_storage_get(&task_states, task, 0,
					 create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	} else {
		u32 tid = (u32)bpf_get_current_pid_tgid();
		t = bpf_map_lookup_elem(&thread_hash, &tid);
		if (!t && create) {
			bpf_map_update_elem(&thread_hash, &tid, &zero_thread, BPF_NOEXIST);
			t = bpf_map_lookup_elem(&thread_hash, &tid);
		}
	}
	if (!t && create)
		count(0, IOMON_C_CORE_THREAD_STATE_MISSING, 1);
	return t;
}

/* ---------------------------------------------------------------- targets */

/* Before 6.1 a cgroup kept its ancestors' ids, not pointers to them. */
struct cgroup___ids {
	int level;
	u64 ancestor_ids[];
} __attribute__((preserve_access_index));

/* The id of the current thread's cgroup v2 ancestor at `level` (its own
 * cgroup at its own level), 0 when it is not that deep. What
 * bpf_get_current_ancestor_cgroup_id() returns, which tracing programs may
 * call only from 6.1 on. */
static __always_inline u64 ancestor_cgroup_id(u32 level)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct cgroup *cg = BPF_CORE_READ(task, cgroups, dfl_cgrp);
	if (!cg || level > 255 || BPF_CORE_READ(cg, level) < (int)level)
		return 0;
	u64 id = 0;
	if (bpf_core_field_exists(struct cgroup___ids, ancestor_ids)) {
		u64 *ids = (u64 *)((char *)cg + bpf_core_field_offset(struct cgroup___ids, ancestor_ids));
		bpf_probe_read_kernel(&id, sizeof(id), ids + level);
	} else {
		struct cgroup *a = NULL;
		struct cgroup **up = (struct cgroup **)((char *)cg + bpf_core_field_offset(struct cgroup, ancestors));
		bpf_probe_read_kernel(&a, sizeof(a), up + level);
		if (a)
			id = BPF_CORE_READ(a, kn, id);
	}
	return id;
}

/* The targets the current thread matches: each configured target is a
 * name, a process or a cgroup (the thread's cgroup v2 or an ancestor). A
 * function of its own, checked once by the verifier. */
__noinline u32 targets_match(void)
{
	u32 zero = 0;
	struct iomon_targets *c = bpf_map_lookup_elem(&targets, &zero);
	if (!c)
		return 0;
	char comm[IOMON_COMM_LEN] = {};
	bool have_comm = false;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u32 mask = 0;
	for (int i = 0; i < IOMON_TARGETS; i++) {
		struct iomon_target *t = &c->t[i];
		switch (t->kind) {
		case IOMON_TARGET_PID:
			if (t->tgid == tgid)
				mask |= 1U << i;
			break;
		case IOMON_TARGET_CGROUP:
			if (ancestor_cgroup_id(t->level) == t->cgroup)
				mask |= 1U << i;
			break;
		case IOMON_TARGET_COMM: {
			if (!have_comm) {
				leader_comm(comm);
				have_comm = true;
			}
			bool same = true;
			for (int j = 0; j < IOMON_COMM_LEN; j++) {
				if (comm[j] != t->comm[j]) {
					same = false;
					break;
				}
				if (!comm[j])
					break;
			}
			if (same)
				mask |= 1U << i;
			break;
		}
		default:
			break;
		}
	}
	return mask;
}

/* The targets the current thread counts for (0 when none are configured):
 * matched once per thread and cached in its state until the targets
 * change, it is renamed or it moves to another cgroup. */
static __always_inline u32 targets_of(struct thread_state *t)
{
	u32 zero = 0;
	struct iomon_targets *c = bpf_map_lookup_elem(&targets, &zero);
	if (!c || !c->nr)
		return 0;
	if (!t)
		t = thread_state(true);
	u32 epoch = comm_epoch;
	if (t && t->core.tgt_gen == c->gen && t->core.tgt_epoch == epoch)
		return t->core.tgt_mask;
	u32 mask = targets_match();
	if (t) {
		t->core.tgt_gen = c->gen;
		t->core.tgt_epoch = epoch;
		t->core.tgt_mask = mask;
	}
	return mask;
}

/* The last task each CPU matched and its targets: in front of the
 * thread's own cache, for events that have no other use for the thread's
 * state (page-cache adds and deletes). Two words, each stored whole:
 * `task` and `key` = tid << 32 | targets generation (16 bits) << 16 |
 * moves (8 bits) << 8 | mask. A reader uses it only if both are the
 * current task's; a program that wrote one of them and was interrupted by
 * another writer leaves a pair that matches neither task, a miss. One
 * entry per CPU. */
struct tgt_cpu {
	u64 task;
	u64 key;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct tgt_cpu);
} tgt_cpu_cache SEC(".maps");

/* Bumped by every rename of a main thread and every cgroup move: the CPU
 * caches hold no task's match across either. */
u32 tgt_moves SEC(".bss");

/* This process's entry (see proc_entry) and the targets its events count
 * for, matched once per process and interval (the entry's cache: again
 * after the targets change, its main thread is renamed or it moves
 * cgroup) instead of once per thread: an event that attributes to its
 * process anyway pays no per-thread state to know its targets. A full
 * map (NULL) falls back to the thread's cache. */
static __always_inline struct iomon_proc *proc_entry_tm(u32 *tm)
{
	u32 zero = 0;
	*tm = 0;
	struct iomon_targets *c = bpf_map_lookup_elem(&targets, &zero);
	struct iomon_proc *p = proc_entry(NULL, 0);
	if (!c || !c->nr)
		return p;
	if (!p) {
		*tm = targets_of(NULL);
		return NULL;
	}
	u32 gen = (u32)c->gen;
	if (p->tgt_gen != gen) {
		p->tgt_mask = targets_match();
		p->tgt_gen = gen;
	}
	u32 mask = p->tgt_mask;
	if (mask && (p->targets & mask) != mask)
		p->targets |= mask;
	*tm = mask;
	return p;
}

/* Forgets what a process's entry cached about its targets. */
static __always_inline void proc_targets_forget(u32 tgid)
{
	void *procs = procs_map();
	if (!procs)
		return;
	struct iomon_proc *e = bpf_map_lookup_elem(procs, &tgid);
	if (e)
		e->tgt_gen = 0;
}

/* Forgets what a thread cached about its targets. */
static __always_inline void targets_forget(struct task_struct *task)
{
	struct thread_state *t;
	if (HAVE_TASK_STORAGE) {
		t = bpf_task_storage_get(&task_states, task, 0, 0);
	} else {
		u32 tid = BPF_CORE_READ(task, pid);
		t = bpf_map_lookup_elem(&thread_hash, &tid);
	}
	if (t)
		t->core.tgt_gen = 0;
}

/* The current task's flags: a direct load where the kernel has typed
 * task pointers (5.11+), else a probe read. */
static __always_inline u32 current_flags(void)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf))
		return bpf_get_current_task_btf()->flags;
	return BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), flags);
}

/* The current task's saved user registers (5.15+: only programs of routes
 * that declare helper:task_pt_regs, or behind a CO-RE check, call this):
 * a typed pointer, read with direct loads. */
static __always_inline struct pt_regs *current_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* Whether the kernel can tell which syscall a task is in. */
#define HAVE_TASK_PT_REGS bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs)

static __always_inline u64 overlap(u64 s1, u64 e1, u64 s2, u64 e2)
{
	u64 s = s1 > s2 ? s1 : s2;
	u64 e = e1 < e2 ? e1 : e2;
	return e > s ? e - s : 0;
}

/* ------------------------------------------------- read-ahead windows */

/* Remembers [s, e) as read-ahead of a file: extends a range it continues
 * or overlaps, else takes a free slot, else the oldest slot. */
static __always_inline void ra_insert(struct ra_window *w, u64 s, u64 e)
{
	__sync_fetch_and_add(&ra_generation, 1);
	for (int i = 0; i < RA_RANGES; i++) {
		u64 rs = w->r[i].start, re = w->r[i].end;
		if (rs < re && s <= re && e >= rs) {
			w->r[i].start = s < rs ? s : rs;
			w->r[i].end = e > re ? e : re;
			return;
		}
	}
	for (int i = 0; i < RA_RANGES; i++) {
		if (w->r[i].start >= w->r[i].end) {
			w->r[i].start = s;
			w->r[i].end = e;
			return;
		}
	}
	u32 n = w->next % RA_RANGES;
	w->r[n].start = s;
	w->r[n].end = e;
	w->next = n + 1;
}

/* The file's window, created if it has none. */
static __always_inline struct ra_window *ra_window_of(struct file_key *fk)
{
	struct ra_window *w = bpf_map_lookup_elem(&ra_windows, fk);
	if (!w) {
		bpf_map_update_elem(&ra_windows, fk, &zero_window, BPF_ANY);
		w = bpf_map_lookup_elem(&ra_windows, fk);
	}
	return w;
}

/* The file's read-ahead window, or NULL; NULL without a lookup when this
 * thread already knows the file has none outstanding. `gen` is what to
 * pass to ra_note(). */
static __always_inline struct ra_window *ra_lookup(struct thread_state *t, struct file_key *fk,
						   u64 *gen)
{
	*gen = ra_generation;
	if (t && t->core.ra_none_ino == fk->ino && t->core.ra_none_dev == fk->dev && t->core.ra_none_gen == *gen)
		return NULL;
	return bpf_map_lookup_elem(&ra_windows, fk);
}

/* Remembers that the file has no outstanding read-ahead, if so. */
static __always_inline void ra_note(struct thread_state *t, struct file_key *fk, u64 gen,
				    struct ra_window *w)
{
	if (!t)
		return;
	if (w) {
		for (int i = 0; i < RA_RANGES; i++)
			if (w->r[i].start < w->r[i].end)
				return;
	}
	t->core.ra_none_ino = fk->ino;
	t->core.ra_none_dev = fk->dev;
	t->core.ra_none_gen = gen;
}

/* Takes the read-ahead pages in [s, e) out of the window; returns how many
 * there were. A range cut in the middle keeps its lower part. */
static __always_inline u64 ra_consume(struct ra_window *w, u64 s, u64 e)
{
	u64 taken = 0;
	for (int i = 0; i < RA_RANGES; i++) {
		u64 rs = w->r[i].start, re = w->r[i].end;
		u64 ov = overlap(rs, re, s, e);
		if (!ov)
			continue;
		taken += ov;
		if (s <= rs)
			w->r[i].start = e < re ? e : re;
		else
			w->r[i].end = s;
	}
	return taken;
}

/* ------------------------------------------------------- files, folios */

/* The file of a page-cache mapping: (inode number, device). `mapping` is
 * a BTF-typed pointer (tp_btf, fentry): read directly. */
static __always_inline bool file_of(struct address_space *mapping, u64 *ino, u32 *dev)
{
	if (!mapping)
		return false;
	struct inode *host = mapping->host;
	if (!host)
		return false;
	struct super_block *sb = host->i_sb;
	*ino = host->i_ino;
	*dev = sb ? sb->s_dev : host->i_rdev;
	return true;
}

/* The same from an untyped pointer (kprobes): probe reads. */
static __always_inline bool file_of_probed(struct address_space *mapping, u64 *ino, u32 *dev)
{
	if (!mapping)
		return false;
	struct inode *host = BPF_CORE_READ(mapping, host);
	if (!host)
		return false;
	struct super_block *sb = BPF_CORE_READ(host, i_sb);
	*ino = BPF_CORE_READ(host, i_ino);
	*dev = sb ? BPF_CORE_READ(sb, s_dev) : BPF_CORE_READ(host, i_rdev);
	return true;
}

/* Where a large folio keeps its order: 6.6 on, the low byte of its first
 * tail page's flags (_flags_1); 6.1 to 6.5 a byte of its own, beside
 * those flags (there _flags_1's low byte is flag bits, not the order);
 * before 6.1 its first tail page's compound_order (struct folio has no
 * tail fields). CO-RE: the verifier keeps the one the kernel has. */
struct folio___6_1 {
	unsigned char _folio_order;
} __attribute__((preserve_access_index));

struct page___compound {
	unsigned char compound_order;
} __attribute__((preserve_access_index));

/* A page's file and place before folios (later kernels renamed them). */
struct page___pre_folio {
	struct address_space *mapping;
	unsigned long index;
} __attribute__((preserve_access_index));

#define FOLIO_ORDER_OWN_BYTE bpf_core_field_exists(((struct folio___6_1 *)0)->_folio_order)
#define FOLIO_ORDER_IN_FLAGS bpf_core_field_exists(((struct folio *)0)->_flags_1)

/* A large folio's order before 6.1, from its first tail page. */
static __always_inline u32 folio_order_compound(void *folio)
{
	struct page___compound *tail = folio + bpf_core_type_size(struct page);
	return BPF_CORE_READ(tail, compound_order);
}

/* The same from a typed folio (tp_btf, fentry): direct loads. The flags
 * word is the folio's first (an unsigned long, or 6.17+ a struct around
 * one): read by offset, whatever its type. */
static __always_inline u64 folio_pages_btf(struct folio *folio)
{
	unsigned long flags = *(unsigned long *)folio;
	if (!(flags & (1ULL << bpf_core_enum_value(enum pageflags, PG_head))))
		return 1;
	if (FOLIO_ORDER_OWN_BYTE)
		return 1ULL << (((struct folio___6_1 *)folio)->_folio_order & 31);
	if (FOLIO_ORDER_IN_FLAGS)
		return 1ULL << (folio->_flags_1 & 31);
	return 1ULL << (folio_order_compound(folio) & 31);
}

/* Pages in a folio: 1, or 2^order for a large folio; probe-read (an
 * untyped address). Before 5.16, of a page: a huge page's head says it. */
static __always_inline u64 folio_pages(struct folio *folio)
{
	u64 flags = 0;
	bpf_probe_read_kernel(&flags, sizeof(flags), folio);
	if (!(flags & (1ULL << bpf_core_enum_value(enum pageflags, PG_head))))
		return 1;
	if (FOLIO_ORDER_OWN_BYTE)
		return 1ULL << (BPF_CORE_READ((struct folio___6_1 *)folio, _folio_order) & 31);
	if (FOLIO_ORDER_IN_FLAGS)
		return 1ULL << (BPF_CORE_READ(folio, _flags_1) & 31);
	return 1ULL << (folio_order_compound(folio) & 31);
}

/* Whether a task in syscall `nr` reads a file through the page cache:
 * pages added anywhere else (writes, faults, fadvise WILLNEED,
 * readahead(2), kernel threads) are no read's misses. */
static __always_inline bool is_read_syscall(long nr)
{
	switch (nr) {
	case NR_READ:
	case NR_PREAD64:
	case NR_READV:
	case NR_PREADV:
	case NR_PREADV2:
	case NR_SENDFILE:
	case NR_SPLICE:
	case NR_COPY_FILE_RANGE:
	case NR_IO_URING_ENTER:
		return true;
	default:
		return false;
	}
}

/* ------------------------------------------- page-cache adds and deletes */

/* A page-cache add or delete as every family's hook sees it (the shared
 * events page_cache_add and page_cache_delete: one program each, see
 * bpf/core.toml). What the event carries is read once; what the task is
 * doing is found on first use and kept for the other hooks. */
#define PCE_FLAGS 1
#define PCE_NR 2
#define PCE_THREAD 4
#define PCE_TM 8
struct page_cache_event {
	u64 ino;
	u64 index;
	u64 n;           /* pages: 2^order (the classic tracepoint's record
			  * has no order before 6.1: 1) */
	u32 dev;
	u32 have;        /* PCE_*: what below is known */
	u32 flags;       /* the current task's */
	u32 tm;          /* the targets it counts for */
	long nr;         /* the syscall it is in; -1 where it cannot be told */
	struct thread_state *t;
};
#define page_cache_add_event page_cache_event
#define page_cache_delete_event page_cache_event

/* What the hooks find on first use, not known yet. Every field set: the
 * verifier refuses a read of one never written, even behind a `have` bit
 * the compiler cannot see through. */
static __always_inline void pce_unknown(struct page_cache_event *e)
{
	e->have = 0;
	e->flags = 0;
	e->tm = 0;
	e->nr = -1;
	e->t = NULL;
}

static __always_inline void page_cache_event_init(struct page_cache_event *e, void *raw)
{
	struct trace_event_raw_mm_filemap_op_page_cache *ctx = raw;
	e->ino = ctx->i_ino;
	e->index = ctx->index;
	e->dev = ctx->s_dev;
	e->n = 1;
	if (bpf_core_field_exists(ctx->order))
		e->n = 1ULL << (ctx->order & 31);
	pce_unknown(e);
}
#define page_cache_add_event_init page_cache_event_init
#define page_cache_delete_event_init page_cache_event_init

/* The same from the typed tracepoint (its argument a folio: 5.18+). */
static __always_inline void page_cache_event_init_folio(struct page_cache_event *e, void *raw)
{
	struct folio *folio = (struct folio *)((u64 *)raw)[0];
	e->ino = 0;
	e->dev = 0;
	file_of(folio->mapping, &e->ino, &e->dev);
	e->index = folio->index;
	e->n = folio_pages_btf(folio);
	pce_unknown(e);
}
#define page_cache_add_event_init_folio page_cache_event_init_folio
#define page_cache_delete_event_init_folio page_cache_event_init_folio

/* The same before 5.18, where the typed tracepoint passes the page (a huge
 * one's head: its pages from its first tail page, probe-read). */
static __always_inline void page_cache_event_init_page(struct page_cache_event *e, void *raw)
{
	struct page___pre_folio *page = (void *)((u64 *)raw)[0];
	e->ino = 0;
	e->dev = 0;
	file_of(page->mapping, &e->ino, &e->dev);
	e->index = page->index;
	e->n = 1;
	if (*(unsigned long *)page & (1ULL << bpf_core_enum_value(enum pageflags, PG_head)))
		e->n = 1ULL << (folio_order_compound(page) & 31);
	pce_unknown(e);
}
#define page_cache_add_event_init_page page_cache_event_init_page
#define page_cache_delete_event_init_page page_cache_event_init_page

static __always_inline u32 pce_flags(struct page_cache_event *e)
{
	if (!(e->have & PCE_FLAGS)) {
		e->flags = current_flags();
		e->have |= PCE_FLAGS;
	}
	return e->flags;
}

/* The syscall the task is in (5.15+), -1 where it cannot be told or the
 * task is a kernel thread. */
static __always_inline long pce_syscall(struct page_cache_event *e)
{
	if (!(e->have & PCE_NR)) {
		e->nr = -1;
		if (HAVE_TASK_PT_REGS && !(pce_flags(e) & PF_KTHREAD))
			e->nr = SYSCALL_NR(current_regs());
		e->have |= PCE_NR;
	}
	return e->nr;
}

/* This thread's state; created when `create` (and counted when it cannot
 * be). */
static __always_inline struct thread_state *pce_thread(struct page_cache_event *e, bool create)
{
	if (!(e->have & PCE_THREAD) || (!e->t && create)) {
		e->t = thread_state(create);
		e->have |= PCE_THREAD;
	}
	return e->t;
}

/* The targets the task counts for (kernel threads: none): through its
 * CPU's cache (5.11+: typed task pointers), else the thread's. */
static __always_inline u32 pce_targets(struct page_cache_event *e)
{
	if (e->have & PCE_TM)
		return e->tm;
	e->have |= PCE_TM;
	e->tm = 0;
	if (pce_flags(e) & PF_KTHREAD)
		return 0;
	u32 zero = 0;
	struct iomon_targets *c = bpf_map_lookup_elem(&targets, &zero);
	if (!c || !c->nr)
		return 0;
	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf)) {
		e->tm = targets_of(pce_thread(e, true));
		return e->tm;
	}
	struct task_struct *task = bpf_get_current_task_btf();
	u64 tid = (u32)task->pid;
	u64 want = tid << 32 | (c->gen & 0xffff) << 16 | (u64)(tgt_moves & 0xff) << 8;
	struct tgt_cpu *k = bpf_map_lookup_elem(&tgt_cpu_cache, &zero);
	if (k && k->task == (u64)task && (k->key & ~0xffULL) == want) {
		e->tm = k->key & 0xff;
		return e->tm;
	}
	e->tm = targets_of(pce_thread(e, true));
	if (k) {
		k->task = (u64)task;
		k->key = want | (e->tm & 0xff);
	}
	return e->tm;
}

/* Why pages leave the page cache, told by the task removing them: reclaim
 * (kswapd, or a task reclaiming to allocate), else by the syscall it is
 * in (5.15+; before, only reclaim is told apart). */
static __always_inline u32 pce_cause(struct page_cache_event *e)
{
	u32 flags = pce_flags(e);
	if (flags & (PF_MEMALLOC | PF_KSWAPD))
		return IOMON_PAGECACHE_CAUSE_RECLAIM;
	if (!HAVE_TASK_PT_REGS)
		return IOMON_PAGECACHE_CAUSE_UNKNOWN;
	if (flags & PF_KTHREAD)
		return IOMON_PAGECACHE_CAUSE_OTHER;
	if (flags & PF_EXITING)
		return IOMON_PAGECACHE_CAUSE_TRUNCATE;
	switch (pce_syscall(e)) {
	case NR_FADVISE64:
		return IOMON_PAGECACHE_CAUSE_FADVISE;
	CASE_NR_TRUNCATE:
		return IOMON_PAGECACHE_CAUSE_TRUNCATE;
	default:
		return IOMON_PAGECACHE_CAUSE_OTHER;
	}
}

/* ------------------------------------------------------------------ core */

/* A thread renamed (exec, prctl): it matches comm targets afresh. When it
 * is a process's main thread, the process's entry takes the new name (an
 * entry is often created before its process execs: a shell forking a
 * command) and the process's other threads match afresh too. */
SEC("tp_btf/task_rename")
int BPF_PROG(proc_rename, struct task_struct *task, const char *comm)
{
	targets_forget(task);
	u32 tgid = BPF_CORE_READ(task, tgid);
	if (BPF_CORE_READ(task, pid) != tgid)
		return 0;
	if (BPF_CORE_READ(task, signal, nr_threads) > 1)
		__sync_fetch_and_add(&comm_epoch, 1);
	__sync_fetch_and_add(&tgt_moves, 1);
	void *procs = procs_map();
	if (!procs)
		return 0;
	struct iomon_proc *e = bpf_map_lookup_elem(procs, &tgid);
	if (e) {
		bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), comm);
		e->tgt_gen = 0;
	}
	return 0;
}

/* A thread moved to another cgroup: it matches cgroup targets afresh. */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(target_cgroup_move, struct cgroup *dst, const char *path, struct task_struct *task,
	     bool threadgroup)
{
	targets_forget(task);
	proc_targets_forget(BPF_CORE_READ(task, tgid));
	__sync_fetch_and_add(&tgt_moves, 1);
	return 0;
}

/* The families, one file each (generated list: bpf/families/<name>.bpf.c). */
#include "iomon_families.h"

/* The shared events' programs, calling the loaded routes' hooks
 * (generated from bpf/core.toml's `shared` and the routes' `hooks`). */
#include "iomon_hooks.h"
