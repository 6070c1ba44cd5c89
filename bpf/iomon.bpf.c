// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * iomon's kernel side: count, never think. Four probe families, each a set
 * of programs that the daemon attaches (or not) on its own:
 *
 *   fadvise   tracepoint syscalls:sys_exit_fadvise64
 *   reads     tracepoint syscalls:sys_{enter,exit}_{read,pread64,readv,preadv,preadv2}
 *   pagecache tp_btf mm_filemap_get_pages, tracepoint filemap:mm_filemap_{add_to,delete_from}_page_cache
 *   reclaim   tracepoint vmscan:mm_vmscan_{lru_shrink_inactive,direct_reclaim_*,memcg_reclaim_*}
 *   mmap      tp_btf mm_filemap_{fault,map_pages,add_to_page_cache}
 *   writeback tp_btf writeback_{dirty_folio,pages_written}, tracepoint writeback:{writeback_single_inode,balance_dirty_pages}
 *
 * Host-wide numbers only ever grow in per-CPU arrays; userspace diffs them.
 * Per-process numbers go to a bounded LRU hash that userspace drains.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "iomon.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PF_KSWAPD 0x00020000
#define PF_KTHREAD 0x00200000
#define PAGE_SHIFT 12

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
#define SYSCALL_NR(regs) BPF_CORE_READ(regs, orig_ax)
#elif defined(__TARGET_ARCH_arm64)
#define NR_READ 63
#define NR_PREAD64 67
#define NR_READV 65
#define NR_SENDFILE 71
#define NR_SPLICE 76
#define NR_PREADV 69
#define NR_COPY_FILE_RANGE 285
#define NR_PREADV2 286
#define SYSCALL_NR(regs) BPF_CORE_READ(regs, syscallno)
#else
#error "iomon: no syscall numbers for this architecture"
#endif
#define NR_IO_URING_ENTER 426

/* Referenced so that the enums and structs reach BTF and the skeleton. */
struct iomon_abi iomon_abi_anchor SEC(".bss");

/* Bounded by IOMON_C_NR slots per CPU: one u64 per host-wide counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IOMON_C_NR);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

/* Bounded by IOMON_H_NR * IOMON_HIST_BUCKETS slots per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IOMON_H_NR * IOMON_HIST_BUCKETS);
	__type(key, u32);
	__type(value, u64);
} hists SEC(".maps");

/* Per-process attribution: two bounded LRU hashes, of which the programs
 * write to the one `procs_active` points at. The drain points it at the
 * other one (the kernel waits for running programs before that update
 * returns), then empties the old one: no program can still be adding to an
 * entry it takes, so no increment is lost. Each is bounded by max_entries
 * (LRU: when full, the least recently updated process is evicted); the
 * drain empties them every tick, so they hold the processes active in one
 * interval. Userspace sets both capacities before load. */
struct proc_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, u32);
	__type(value, struct iomon_proc);
} procs_a SEC(".maps"), procs_b SEC(".maps");

/* One slot: the per-process map in use. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, u32);
	__array(values, struct proc_map);
} procs_active SEC(".maps") = {
	.values = { &procs_a },
};

/* Per-thread state of the reads, pagecache and reclaim families. Bounded by
 * the number of live threads: task storage is freed with its task. */
struct task_state {
	u64 read_start_ns;   /* reads: sys_enter time, 0 when not in a read */
	u64 stall_start_ns;  /* reclaim: stall begin time, 0 when not stalled */
	/* pagecache: the buffered read this thread is in */
	u64 rd_ino;
	u64 rd_last;         /* last page the read asked for (capped at EOF) */
	u64 rd_prev;         /* first page of the previous chunk of that read */
	u32 rd_dev;
	/* pagecache: pages this thread added since its last get_pages event */
	u32 pend_dev;
	u64 pend_ino;
	u64 pend_overflow;   /* added pages that did not fit in pend[] */
	u32 pend_nr;
	u32 pad;
	struct { u64 start, end; } pend[4];
	/* mmap: the last fault-around lookup of this thread [mm_first, mm_last] */
	u64 mm_ino;
	u64 mm_first;
	u64 mm_last;
	u32 mm_dev;
	/* mmap: the fault this thread is in (flt_ns = 0: none) */
	u32 flt_dev;
	u64 flt_ino;
	u64 flt_index;
	u64 flt_ns;
	u32 flt_major;       /* this fault already counted as major */
	u32 pad3;
	/* the file this thread last found without outstanding read-ahead, at
	 * which ra_generation: no need to look again until it changes */
	u64 ra_none_ino;
	u64 ra_none_gen;
	u32 ra_none_dev;
	u32 pad2;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_state);
} task_states SEC(".maps");

/* Read-ahead pages not yet asked for, per file: up to RA_RANGES ranges
 * (read-ahead skips cached pages, so one window can be several ranges).
 * Bounded by max_entries; LRU evicts the least recently read file, whose
 * outstanding pages then stay counted as read-ahead only. */
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

static __always_inline void count(u32 idx, u64 n)
{
	u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += n;
}

static __always_inline u32 log2_bucket(u64 us)
{
	u32 b = 0;
	/* bounded: at most IOMON_HIST_BUCKETS - 1 steps */
	for (int i = 0; i < IOMON_HIST_BUCKETS - 1; i++) {
		if (us < 2)
			break;
		us >>= 1;
		b++;
	}
	return b;
}

static __always_inline void hist_add(u32 hist, u64 ns)
{
	u32 idx = hist * IOMON_HIST_BUCKETS + log2_bucket(ns / 1000);
	u64 *v = bpf_map_lookup_elem(&hists, &idx);
	if (v)
		*v += 1;
}

static __always_inline void *procs_map(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&procs_active, &zero);
}

/* Zeroed values to insert from (too big for the BPF stack). */
static const struct iomon_proc zero_proc = {};
static const struct ra_window zero_window = {};

static __always_inline struct iomon_proc *proc_entry(void)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	void *procs = procs_map();
	if (!procs)
		return NULL;
	struct iomon_proc *p = bpf_map_lookup_elem(procs, &tgid);
	if (p)
		return p;
	/* EEXIST when another CPU inserted it first: fine, look it up. */
	bpf_map_update_elem(procs, &tgid, &zero_proc, BPF_NOEXIST);
	p = bpf_map_lookup_elem(procs, &tgid);
	if (!p)
		count(IOMON_C_PROC_DROPPED, 1);
	else if (!p->comm[0])
		bpf_get_current_comm(p->comm, sizeof(p->comm));
	return p;
}

static __always_inline struct task_state *task_state(bool create)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct task_state *t = bpf_task_storage_get(&task_states, task, 0,
			create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (!t && create)
		count(IOMON_C_TASK_STATE_MISSING, 1);
	return t;
}

/* ---------------------------------------------------------------- fadvise */

/* Only the exit is traced: the advice is still in the syscall's saved
 * registers, so one program per call instead of an enter/exit pair. */
SEC("tracepoint/syscalls/sys_exit_fadvise64")
int fadvise_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	u64 advice = PT_REGS_PARM4_CORE_SYSCALL(regs);
	u32 slot = advice < IOMON_ADVICE_INVALID ? advice : IOMON_ADVICE_INVALID;
	u32 err = ctx->ret < 0 ? 1 : 0;

	count(IOMON_C_FADV_BASE + slot * 2 + err, 1);
	struct iomon_proc *p = proc_entry();
	if (p && slot < IOMON_ADVICE_SLOTS)
		__sync_fetch_and_add(&p->fadvise[slot][err], 1);
	return 0;
}

/* ------------------------------------------------------------------ reads */

static __always_inline int read_enter(void)
{
	struct task_state *t = task_state(true);
	if (t)
		t->read_start_ns = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int read_exit(long ret, u32 syscall)
{
	struct task_state *t = task_state(false);
	u64 start = 0;
	if (t) {
		start = t->read_start_ns;
		t->read_start_ns = 0;
	}
	count(IOMON_C_READ_CALLS_BASE + syscall, 1);
	if (ret > 0)
		count(IOMON_C_READ_BYTES_BASE + syscall, ret);
	else if (ret < 0)
		count(IOMON_C_READ_ERRORS, 1);
	if (start) {
		u64 ns = bpf_ktime_get_ns() - start;
		count(IOMON_C_READ_LATENCY_NS, ns);
		hist_add(IOMON_H_READ_LATENCY, ns);
	}
	struct iomon_proc *p = proc_entry();
	if (p) {
		__sync_fetch_and_add(&p->read_calls, 1);
		if (ret > 0)
			__sync_fetch_and_add(&p->read_bytes, ret);
	}
	return 0;
}

#define READ_PAIR(name, idx)                                                 \
	SEC("tracepoint/syscalls/sys_enter_" #name)                          \
	int read_enter_##name(void *ctx) { return read_enter(); }             \
	SEC("tracepoint/syscalls/sys_exit_" #name)                           \
	int read_exit_##name(struct trace_event_raw_sys_exit *ctx)            \
	{ return read_exit(ctx->ret, idx); }

READ_PAIR(read, 0)
READ_PAIR(pread64, 1)
READ_PAIR(readv, 2)
READ_PAIR(preadv, 3)
READ_PAIR(preadv2, 4)

/* -------------------------------------------------------------- pagecache */

static __always_inline u64 overlap(u64 s1, u64 e1, u64 s2, u64 e2)
{
	u64 s = s1 > s2 ? s1 : s2;
	u64 e = e1 < e2 ? e1 : e2;
	return e > s ? e - s : 0;
}

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

/* The file's read-ahead window, or NULL; NULL without a lookup when this
 * thread already knows the file has none outstanding. `gen` is what to
 * pass to ra_note(). */
static __always_inline struct ra_window *ra_lookup(struct task_state *t, struct file_key *fk,
						   u64 *gen)
{
	*gen = ra_generation;
	if (t && t->ra_none_ino == fk->ino && t->ra_none_dev == fk->dev && t->ra_none_gen == *gen)
		return NULL;
	return bpf_map_lookup_elem(&ra_windows, fk);
}

/* Remembers that the file has no outstanding read-ahead, if so. */
static __always_inline void ra_note(struct task_state *t, struct file_key *fk, u64 gen,
				    struct ra_window *w)
{
	if (!t)
		return;
	if (w) {
		for (int i = 0; i < RA_RANGES; i++)
			if (w->r[i].start < w->r[i].end)
				return;
	}
	t->ra_none_ino = fk->ino;
	t->ra_none_dev = fk->dev;
	t->ra_none_gen = gen;
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

/* Whether the current task is in a syscall that reads a file through the
 * page cache: pages added anywhere else (writes, faults, fadvise WILLNEED,
 * readahead(2), kernel threads) are no read's misses. */
static __always_inline bool in_read_syscall(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->flags & PF_KTHREAD)
		return false;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	long nr = SYSCALL_NR(regs);
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

/* Pages added while a thread is inside a buffered read are that read's
 * doing: those it asked for are misses, the rest is read-ahead. The add
 * events come before the read's get_pages event, so remember them here
 * until it comes. */
SEC("tracepoint/filemap/mm_filemap_add_to_page_cache")
int pc_add(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	/* Copy the fields first: the verifier refuses ctx reads at offsets it
	 * cannot prove constant. */
	u64 n = 1ULL << (ctx->order & 31);
	u64 index = ctx->index;
	u64 ino = ctx->i_ino;
	u32 dev = ctx->s_dev;
	count(IOMON_C_PC_ADDED, n);
	if (!in_read_syscall())
		return 0;

	struct task_state *t = task_state(true);
	if (!t)
		return 0;
	if (t->pend_nr == 0 || t->pend_dev != dev || t->pend_ino != ino) {
		t->pend_dev = dev;
		t->pend_ino = ino;
		t->pend_nr = 0;
		t->pend_overflow = 0;
	}
	u32 last = t->pend_nr;
	if (last > 0 && last <= 4 && t->pend[last - 1].end == index) {
		t->pend[last - 1].end = index + n;
	} else if (last < 4) {
		t->pend[last].start = index;
		t->pend[last].end = index + n;
		t->pend_nr = last + 1;
	} else {
		t->pend_overflow += n;
	}
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_delete_from_page_cache")
int pc_delete(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	count(IOMON_C_PC_DELETED, 1ULL << (ctx->order & 31));
	return 0;
}

/* Fires at the end of each successful filemap_get_pages(): one buffered read
 * is one or more of these, the first with the read's first page, later ones
 * (continuations) with the same file and last page and a higher index. */
SEC("tp_btf/mm_filemap_get_pages")
int BPF_PROG(pc_get_pages, struct address_space *mapping, unsigned long index,
	     unsigned long last_index)
{
	struct inode *host = mapping->host;
	if (!host)
		return 0;
	u64 ino = host->i_ino;
	struct super_block *sb = host->i_sb;
	u32 dev = sb ? sb->s_dev : host->i_rdev;
	s64 isize = host->i_size;
	if (isize <= 0)
		return 0;
	u64 eof = (u64)(isize - 1) >> PAGE_SHIFT;
	u64 last = last_index < eof ? last_index : eof;
	if (index > last)
		return 0;

	count(IOMON_C_PC_READ_EVENTS, 1);
	struct task_state *t = task_state(true);
	if (!t)
		return 0;

	u64 missed_sync = 0, missed_ra = 0, readahead = 0;
	struct file_key fk = { .ino = ino, .dev = dev };
	u64 gen;
	struct ra_window *w = ra_lookup(t, &fk, &gen);

	/* 1. Settle the pages this thread added during this chunk. */
	if (t->pend_nr && t->pend_dev == dev && t->pend_ino == ino) {
		for (int i = 0; i < 4; i++) {
			if (i >= t->pend_nr)
				break;
			u64 s = t->pend[i].start, e = t->pend[i].end;
			u64 in = overlap(s, e, index, last + 1);
			missed_sync += in;
			u64 beyond = overlap(s, e, last + 1, ~0ULL);
			readahead += (e - s) - in;
			if (beyond) {
				u64 bs = s > last + 1 ? s : last + 1;
				if (!w) {
					bpf_map_update_elem(&ra_windows, &fk, &zero_window, BPF_ANY);
					w = bpf_map_lookup_elem(&ra_windows, &fk);
				}
				if (w)
					ra_insert(w, bs, e);
			}
		}
		readahead += t->pend_overflow;
	}
	t->pend_nr = 0;
	t->pend_overflow = 0;

	/* 2. A new read asks for [index, last]; read-ahead waiting there was
	 * brought in for it: a miss too, counted once, then forgotten. */
	bool cont = t->rd_dev == dev && t->rd_ino == ino && t->rd_last == last &&
		    index > t->rd_prev;
	if (!cont) {
		u64 asked = last - index + 1;
		count(IOMON_C_PC_ASKED, asked);
		if (w)
			missed_ra = ra_consume(w, index, last + 1);
		struct iomon_proc *p = proc_entry();
		if (p) {
			__sync_fetch_and_add(&p->pc_asked, asked);
			if (missed_sync + missed_ra)
				__sync_fetch_and_add(&p->pc_missed, missed_sync + missed_ra);
		}
		t->rd_dev = dev;
		t->rd_ino = ino;
		t->rd_last = last;
	} else if (missed_sync) {
		struct iomon_proc *p = proc_entry();
		if (p)
			__sync_fetch_and_add(&p->pc_missed, missed_sync);
	}
	t->rd_prev = index;

	ra_note(t, &fk, gen, w);
	if (missed_sync)
		count(IOMON_C_PC_MISSED_SYNC, missed_sync);
	if (missed_ra)
		count(IOMON_C_PC_MISSED_RA, missed_ra);
	if (readahead)
		count(IOMON_C_PC_READAHEAD, readahead);
	return 0;
}

/* ------------------------------------------------------------------- mmap */

/* Pages added in a fault arrive after its mm_filemap_fault event and before
 * the fault returns; a thread's marker older than this is stale. */
#define FAULT_WINDOW_NS (100ULL * 1000 * 1000)

/* Pages in a folio: 1, or 2^order for a large folio. */
static __always_inline u64 folio_pages(struct folio *folio)
{
	u64 flags = 0;
	bpf_probe_read_kernel(&flags, sizeof(flags), folio);
	if (!(flags & (1ULL << bpf_core_enum_value(enum pageflags, PG_head))))
		return 1;
	return 1ULL << (BPF_CORE_READ(folio, _flags_1) & 0xff);
}

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

#define PMD_PAGES 512
#define XA_CHUNK_MASK 63

/* Slot `index` of an xarray node, a large folio's sibling slots resolved
 * to its first (xa_is_sibling: an internal entry below 256). */
static __always_inline unsigned long xa_slot(struct xa_node *node, u32 shift, u64 index)
{
	unsigned long e = 0;
	u32 off = (index >> (shift & 63)) & XA_CHUNK_MASK;
	void **slots = (void **)((char *)node + bpf_core_field_offset(struct xa_node, slots));
	bpf_probe_read_kernel(&e, sizeof(e), &slots[off]);
	if ((e & 3) == 2 && e < ((XA_CHUNK_MASK << 2) | 2)) {
		off = (e >> 2) & XA_CHUNK_MASK;
		bpf_probe_read_kernel(&e, sizeof(e), &slots[off]);
	}
	return e;
}

/* An xarray entry as a folio: NULL if empty, a shadow (value) entry or an
 * internal one. */
static __always_inline struct folio *as_folio(unsigned long e)
{
	return (!e || (e & 3)) ? NULL : (struct folio *)e;
}

/* The page-cache folios at `a` and at `b` (b >= a, close: a fault-around
 * window) of `mapping`, NULL where there is none: a read-only walk of the
 * xarray like xa_load() without the RCU retry (a racing change gives a
 * stale answer for this one event, never a fault: reads are probed). One
 * walk when b sits under the node where a's ended; depth bounded at 6
 * levels (2^36 pages). */
static __always_inline void cache_folios(struct address_space *mapping, u64 a, u64 b,
					 struct folio **fa, struct folio **fb)
{
	unsigned long e = (unsigned long)BPF_CORE_READ(mapping, i_pages.xa_head);
	struct xa_node *last = NULL;
	u32 last_shift = 0;
	for (int level = 0; level < 6; level++) {
		/* xa_is_node(): an internal entry (low bits 10) above 4096 */
		if ((e & 3) != 2 || e <= 4096)
			break;
		struct xa_node *node = (struct xa_node *)(e - 2);
		last_shift = BPF_CORE_READ(node, shift);
		last = node;
		e = xa_slot(node, last_shift, a);
	}
	if (!last) {
		/* A single entry at index 0, or nothing. */
		*fa = a == 0 ? as_folio(e) : NULL;
		*fb = b == 0 ? *fa : NULL;
		return;
	}
	*fa = (e & 3) == 2 ? NULL : as_folio(e);
	if (b == a) {
		*fb = *fa;
		return;
	}
	u32 span = (last_shift & 63) + 6;
	if (span >= 64 || ((a ^ b) >> span) == 0) {
		unsigned long eb = xa_slot(last, last_shift, b);
		if ((eb & 3) != 2 || eb < 4096) {
			*fb = as_folio(eb);
			return;
		}
	}
	/* b is under another node: walk again. */
	e = (unsigned long)BPF_CORE_READ(mapping, i_pages.xa_head);
	for (int level = 0; level < 6; level++) {
		if ((e & 3) != 2 || e <= 4096)
			break;
		struct xa_node *node = (struct xa_node *)(e - 2);
		e = xa_slot(node, BPF_CORE_READ(node, shift), b);
	}
	*fb = (e & 3) == 2 ? NULL : as_folio(e);
}

static __always_inline struct folio *cache_folio(struct address_space *mapping, u64 index)
{
	struct folio *f, *g;
	cache_folios(mapping, index, index, &f, &g);
	return f;
}

/* Counts `asked` pages of a fault on [s, e) and the read-ahead waiting
 * there (brought in for it: a miss, counted once). */
static __always_inline void mm_ask(struct task_state *t, u64 ino, u32 dev, u64 s, u64 e,
				   u64 asked)
{
	struct file_key fk = { .ino = ino, .dev = dev };
	u64 gen;
	struct ra_window *w = ra_lookup(t, &fk, &gen);
	u64 missed = w ? ra_consume(w, s, e) : 0;
	ra_note(t, &fk, gen, w);
	if (!asked && !missed)
		return;
	if (asked)
		count(IOMON_C_MM_ASKED, asked);
	if (missed)
		count(IOMON_C_MM_MISSED_RA, missed);
	struct iomon_proc *p = proc_entry();
	if (p) {
		if (asked)
			__sync_fetch_and_add(&p->mm_asked, asked);
		if (missed)
			__sync_fetch_and_add(&p->mm_missed, missed);
	}
}

/* Fault-around: the kernel maps the cached pages around a faulting address
 * without calling the file's fault handler. [start, end] is what it looked
 * up; a thread that repeats the same lookup (the page was not there, the
 * fault handler read it in, the access faults again) asks once. */
SEC("tp_btf/mm_filemap_map_pages")
int BPF_PROG(mm_map_pages, struct address_space *mapping, unsigned long start,
	     unsigned long end)
{
	u64 ino;
	u32 dev;
	if (!file_of(mapping, &ino, &dev) || end < start)
		return 0;
	count(IOMON_C_MM_AROUND, 1);
	/* Fault-around maps a large folio whole (6.18+: "map entire large
	 * folio faultaround"; a PMD-sized one by one huge page table entry),
	 * beyond the window the event reports: widen the window to the
	 * folios at its ends. */
	struct folio *fs_folio, *fe_folio;
	cache_folios(mapping, start, end, &fs_folio, &fe_folio);
	if (fs_folio) {
		u64 fs = BPF_CORE_READ(fs_folio, index);
		if (fs <= start)
			start = fs;
	}
	if (fe_folio) {
		u64 fe = BPF_CORE_READ(fe_folio, index) + folio_pages(fe_folio) - 1;
		if (fe >= end)
			end = fe;
	}
	struct task_state *t = task_state(true);
	bool again = t && t->mm_dev == dev && t->mm_ino == ino &&
		     t->mm_first == start && t->mm_last == end;
	mm_ask(t, ino, dev, start, end + 1, again ? 0 : end + 1 - start);
	if (t) {
		t->mm_dev = dev;
		t->mm_ino = ino;
		t->mm_first = start;
		t->mm_last = end;
	}
	return 0;
}

/* The file's fault handler: fault-around could not map the page (not
 * cached, or not up to date yet). Pages it adds follow this event. */
SEC("tp_btf/mm_filemap_fault")
int BPF_PROG(mm_fault, struct address_space *mapping, unsigned long index)
{
	u64 ino;
	u32 dev;
	if (!file_of(mapping, &ino, &dev))
		return 0;
	count(IOMON_C_MM_FAULTS, 1);
	struct task_state *t = task_state(true);
	bool covered = t && t->mm_dev == dev && t->mm_ino == ino &&
		       index >= t->mm_first && index <= t->mm_last;
	u64 s = index, e = index + 1;
	u64 asked = covered ? 0 : 1;
	/* A cached PMD-sized folio: the fault maps it whole with one huge
	 * entry (the part fault-around already looked up aside). */
	struct folio *fo = cache_folio(mapping, index);
	if (fo) {
		u64 n = folio_pages(fo);
		if (n >= PMD_PAGES) {
			s = BPF_CORE_READ(fo, index);
			e = s + n;
			asked = n;
			if (t && t->mm_dev == dev && t->mm_ino == ino)
				asked -= overlap(s, e, t->mm_first, t->mm_last + 1);
		}
	}
	mm_ask(t, ino, dev, s, e, asked);
	if (t) {
		t->flt_dev = dev;
		t->flt_ino = ino;
		t->flt_index = index;
		t->flt_ns = bpf_ktime_get_ns();
		t->flt_major = 0;
	}
	return 0;
}

/* Pages added by a thread in a fault on the same file: the faulting page
 * makes it a major fault (and a missed page); the rest is read-ahead, kept
 * in the file's window until a fault or a read asks for it. */
SEC("tp_btf/mm_filemap_add_to_page_cache")
int BPF_PROG(mm_add, struct folio *folio)
{
	struct task_state *t = task_state(false);
	if (!t || !t->flt_ns)
		return 0;
	u64 ino;
	u32 dev;
	if (!file_of(folio->mapping, &ino, &dev) || ino != t->flt_ino || dev != t->flt_dev)
		return 0;
	if (bpf_ktime_get_ns() - t->flt_ns > FAULT_WINDOW_NS || in_read_syscall()) {
		t->flt_ns = 0;
		return 0;
	}
	u64 s = folio->index, n = folio_pages(folio), e = s + n;
	u64 f = t->flt_index;
	u64 ra_lo = 0, ra_hi = 0;
	if (f >= s && f < e && n >= PMD_PAGES) {
		/* Read in whole and mapped whole by this fault (one huge page
		 * table entry): every page of it asked, and missed. */
		if (!t->flt_major) {
			t->flt_major = 1;
			count(IOMON_C_MM_MAJOR, 1);
		}
		count(IOMON_C_MM_ASKED, n - 1);
		count(IOMON_C_MM_MISSED_SYNC, n);
		struct iomon_proc *p = proc_entry();
		if (p) {
			__sync_fetch_and_add(&p->mm_major, 1);
			__sync_fetch_and_add(&p->mm_asked, n - 1);
			__sync_fetch_and_add(&p->mm_missed, n);
		}
		return 0;
	}
	if (f >= s && f < e) {
		if (!t->flt_major) {
			t->flt_major = 1;
			count(IOMON_C_MM_MAJOR, 1);
			count(IOMON_C_MM_MISSED_SYNC, 1);
			struct iomon_proc *p = proc_entry();
			if (p) {
				__sync_fetch_and_add(&p->mm_major, 1);
				__sync_fetch_and_add(&p->mm_missed, 1);
			}
		}
		/* the rest of the folio: below and above the faulting page */
		ra_lo = f - s;
		ra_hi = e - f - 1;
	} else {
		ra_hi = n;
	}
	if (!ra_lo && !ra_hi)
		return 0;
	count(IOMON_C_MM_READAHEAD, ra_lo + ra_hi);
	struct file_key fk = { .ino = ino, .dev = dev };
	struct ra_window *w = bpf_map_lookup_elem(&ra_windows, &fk);
	if (!w) {
		bpf_map_update_elem(&ra_windows, &fk, &zero_window, BPF_ANY);
		w = bpf_map_lookup_elem(&ra_windows, &fk);
	}
	if (!w)
		return 0;
	if (ra_lo)
		ra_insert(w, s, f);
	if (ra_hi)
		ra_insert(w, e - ra_hi, e);
	return 0;
}

/* -------------------------------------------------------------- writeback */

/* Kernel HZ for jiffies -> ns; 0 (age not measured) if the kernel config
 * cannot be read. */
extern int CONFIG_HZ __kconfig __weak;

SEC("tp_btf/writeback_dirty_folio")
int BPF_PROG(wb_dirty, struct folio *folio, struct address_space *mapping)
{
	u64 n = folio_pages(folio);
	count(IOMON_C_WB_DIRTIED, n);
	struct iomon_proc *p = proc_entry();
	if (p)
		__sync_fetch_and_add(&p->wb_dirtied, n);
	return 0;
}

/* End of a flusher (or sync(2)) pass: pages it wrote. Pages an fsync
 * writes are not in any writeback event. */
SEC("tp_btf/writeback_pages_written")
int BPF_PROG(wb_written, long pages)
{
	if (pages > 0)
		count(IOMON_C_WB_WRITTEN, pages);
	return 0;
}

/* The flusher wrote an inode: how long its oldest dirty data had waited. */
SEC("tracepoint/writeback/writeback_single_inode")
int wb_inode(struct trace_event_raw_writeback_single_inode_template *ctx)
{
	u64 wrote = ctx->wrote;
	u64 dirtied = ctx->dirtied_when;
	if (!wrote)
		return 0;
	count(IOMON_C_WB_INODES, 1);
	int hz = CONFIG_HZ;
	u64 now = bpf_jiffies64();
	if (hz > 0 && now > dirtied) {
		u64 ns = (now - dirtied) * (1000000000ULL / hz);
		count(IOMON_C_WB_AGE_NS, ns);
		hist_add(IOMON_H_DIRTY_AGE, ns);
	}
	return 0;
}

/* A writer over its dirty limit, paused by the kernel (pause in ms). */
SEC("tracepoint/writeback/balance_dirty_pages")
int wb_throttle(struct trace_event_raw_balance_dirty_pages *ctx)
{
	long pause = ctx->pause;
	if (pause <= 0)
		return 0;
	u64 ns = (u64)pause * 1000000ULL;
	count(IOMON_C_WB_THROTTLES, 1);
	count(IOMON_C_WB_THROTTLE_NS, ns);
	hist_add(IOMON_H_THROTTLE, ns);
	struct iomon_proc *p = proc_entry();
	if (p) {
		__sync_fetch_and_add(&p->wb_throttles, 1);
		__sync_fetch_and_add(&p->wb_throttle_ns, ns);
	}
	return 0;
}

/* ---------------------------------------------------------------- reclaim */

SEC("tracepoint/vmscan/mm_vmscan_lru_shrink_inactive")
int vmscan_shrink_inactive(struct trace_event_raw_mm_vmscan_lru_shrink_inactive *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	bool kswapd = task->flags & PF_KSWAPD;
	count(kswapd ? IOMON_C_SCANNED_KSWAPD : IOMON_C_SCANNED_DIRECT, ctx->nr_scanned);
	count(kswapd ? IOMON_C_RECLAIMED_KSWAPD : IOMON_C_RECLAIMED_DIRECT, ctx->nr_reclaimed);
	return 0;
}

static __always_inline int stall_begin(void)
{
	struct task_state *t = task_state(true);
	if (t)
		t->stall_start_ns = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int stall_end(u32 counter)
{
	struct task_state *t = task_state(false);
	count(counter, 1);
	if (!t || !t->stall_start_ns)
		return 0;
	u64 ns = bpf_ktime_get_ns() - t->stall_start_ns;
	t->stall_start_ns = 0;
	count(IOMON_C_STALL_NS, ns);
	hist_add(IOMON_H_STALL_LATENCY, ns);
	return 0;
}

SEC("tracepoint/vmscan/mm_vmscan_direct_reclaim_begin")
int stall_direct_begin(void *ctx) { return stall_begin(); }

SEC("tracepoint/vmscan/mm_vmscan_direct_reclaim_end")
int stall_direct_end(void *ctx) { return stall_end(IOMON_C_STALLS_DIRECT); }

SEC("tracepoint/vmscan/mm_vmscan_memcg_reclaim_begin")
int stall_memcg_begin(void *ctx) { return stall_begin(); }

SEC("tracepoint/vmscan/mm_vmscan_memcg_reclaim_end")
int stall_memcg_end(void *ctx) { return stall_end(IOMON_C_STALLS_MEMCG); }

/* ------------------------------------------------------------------- core */

/* A process's entry is created by its first counted event, often before it
 * execs (a shell forking a command): take the new name at exec. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(proc_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	void *procs = procs_map();
	if (!procs)
		return 0;
	struct iomon_proc *e = bpf_map_lookup_elem(procs, &tgid);
	if (e)
		bpf_get_current_comm(e->comm, sizeof(e->comm));
	return 0;
}
