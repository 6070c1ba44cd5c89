// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * iomon's kernel side: count, never think. Four probe families, each a set
 * of programs that the daemon attaches (or not) on its own:
 *
 *   fadvise   tracepoint syscalls:sys_exit_fadvise64
 *   reads     tracepoint syscalls:sys_{enter,exit}_{read,pread64,readv,preadv,preadv2}
 *   pagecache tp_btf mm_filemap_get_pages, tracepoint filemap:mm_filemap_{add_to,delete_from}_page_cache
 *   reclaim   tracepoint vmscan:mm_vmscan_{lru_shrink_inactive,direct_reclaim_*,memcg_reclaim_*}
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

static __always_inline struct iomon_proc *proc_entry(void)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	void *procs = procs_map();
	if (!procs)
		return NULL;
	struct iomon_proc *p = bpf_map_lookup_elem(procs, &tgid);
	if (p)
		return p;
	struct iomon_proc zero = {};
	bpf_get_current_comm(zero.comm, sizeof(zero.comm));
	/* EEXIST when another CPU inserted it first: fine, look it up. */
	bpf_map_update_elem(procs, &tgid, &zero, BPF_NOEXIST);
	p = bpf_map_lookup_elem(procs, &tgid);
	if (!p)
		count(IOMON_C_PROC_DROPPED, 1);
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
	struct ra_window *w = bpf_map_lookup_elem(&ra_windows, &fk);

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
					struct ra_window nw = {};
					bpf_map_update_elem(&ra_windows, &fk, &nw, BPF_ANY);
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

	if (missed_sync)
		count(IOMON_C_PC_MISSED_SYNC, missed_sync);
	if (missed_ra)
		count(IOMON_C_PC_MISSED_RA, missed_ra);
	if (readahead)
		count(IOMON_C_PC_READAHEAD, readahead);
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
