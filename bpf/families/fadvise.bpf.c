// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* fadvise: posix_fadvise calls by advice and result, and what DONTNEED
 * calls dropped (bpf/families/fadvise.toml). */

#define POSIX_FADV_DONTNEED 4

/* One call: host-wide and for its process. Advice 0..5 are POSIX_FADV_*;
 * anything else is counted as invalid. */
static __always_inline void fadvise_count(u32 tm, struct iomon_proc *p, u64 advice, long ret)
{
	u32 slot = advice < IOMON_FADVISE_ADVICE_INVALID ? advice : IOMON_FADVISE_ADVICE_INVALID;
	u32 err = ret < 0 ? IOMON_FADVISE_RESULT_ERROR : IOMON_FADVISE_RESULT_OK;
	u32 i = slot * IOMON_FADVISE_RESULT_N + err;
	count(tm, IOMON_C_FADVISE_CALLS + i, 1);
	proc_add(p, IOMON_P_FADVISE_CALLS + i, 1);
}

/* The open file behind a descriptor of the current process (NULL when
 * there is none). */
static __always_inline struct file *fd_file(s32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd < 0 || (u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), fds + fd);
	return f;
}

/* Whether a file has pages that are dirty or under writeback: the page
 * cache's xarray marks them (PAGECACHE_TAG_DIRTY is mark 0, WRITEBACK mark
 * 1) and its root node carries the marks of every page below it. A file
 * of a single page has no node: not told (false). */
struct xa_node___2d {
	unsigned long marks[3][1];
} __attribute__((preserve_access_index));

static __always_inline bool mapping_dirty(struct address_space *mapping)
{
	unsigned long head = (unsigned long)BPF_CORE_READ(mapping, i_pages.xa_head);
	if ((head & 3) != 2 || head <= 4096)
		return false;
	struct xa_node *node = (struct xa_node *)(head - 2);
	/* marks[XA_MAX_MARKS][XA_MARK_LONGS]: one long per mark with 64-slot
	 * nodes (BTF shows it as [3][1] or [3]); read by offset either way. */
	unsigned long m[2] = {};
	u32 off = bpf_core_field_exists(struct xa_node___2d, marks)
			  ? bpf_core_field_offset(struct xa_node___2d, marks)
			  : bpf_core_field_offset(struct xa_node, marks);
	bpf_probe_read_kernel(m, sizeof(m), (char *)node + off);
	return (m[0] | m[1]) != 0;
}

/* The open file behind a DONTNEED call's descriptor had dirty pages or
 * pages under writeback: noted at the call's first delete (writeback the
 * call started is in flight then) and at its end. */
static __always_inline bool fd_dirty(s32 fd)
{
	struct file *f = fd_file(fd);
	return f && mapping_dirty(BPF_CORE_READ(f, f_mapping));
}

/* A successful DONTNEED call is over: `dropped` pages left the page cache
 * during it. The pages it covered are those generic_fadvise() tries to
 * drop: the whole pages of [offset, offset + len) (len 0: to the end) that
 * lie inside the file. For a call over the whole file, what is still
 * cached is what the kernel kept, and the rest of what it covered was not
 * cached; a partial call's rest is not told apart. */
static __always_inline void dontneed_done(u32 tm, struct iomon_proc *p, s32 fd, s64 offset,
					  u64 len, u64 dropped, bool dirty)
{
	u64 covered = 0, kept = 0, cached_after = 0, ino = 0;
	u32 dev = 0;
	u32 reason = IOMON_FADVISE_REASON_PARTIAL;
	struct file *f = fd_file(fd);
	if (f && offset >= 0) {
		struct inode *inode = BPF_CORE_READ(f, f_inode);
		ino = BPF_CORE_READ(inode, i_ino);
		dev = BPF_CORE_READ(inode, i_sb, s_dev);
		struct address_space *mapping = BPF_CORE_READ(f, f_mapping);
		s64 size = BPF_CORE_READ(inode, i_size);
		u64 psize = 1ULL << page_shift;
		u64 endbyte = (u64)offset + len;
		if (!len || endbyte < len)
			endbyte = 0x7fffffffffffffffULL;
		else
			endbyte--;
		u64 start = ((u64)offset + psize - 1) >> page_shift;
		u64 end = endbyte >> page_shift;
		bool none = false;
		if ((endbyte & (psize - 1)) != psize - 1) {
			if (end == 0)
				none = true;
			else
				end--;
		}
		if (size > 0 && !none) {
			u64 last = ((u64)size - 1) >> page_shift;
			u64 to = end < last ? end : last;
			if (to >= start)
				covered = to - start + 1;
			if (start == 0 && end >= last) {
				cached_after = BPF_CORE_READ(mapping, nrpages);
				if (dirty || mapping_dirty(mapping))
					reason = IOMON_FADVISE_REASON_DIRTY;
				else if (BPF_CORE_READ(mapping, i_mmap.rb_root.rb_node))
					reason = IOMON_FADVISE_REASON_MAPPED;
				else
					reason = IOMON_FADVISE_REASON_OTHER;
			}
		}
	}
	count(tm, IOMON_C_FADVISE_DONTNEED_COVERED, covered);
	count(tm, IOMON_C_FADVISE_DONTNEED_DROPPED, dropped);
	proc_add(p, IOMON_P_FADVISE_DONTNEED_COVERED, covered);
	proc_add(p, IOMON_P_FADVISE_DONTNEED_DROPPED, dropped);
	if (ino) {
		file_add2(tm, ino, dev, IOMON_F_DONTNEED_COVERED, covered, IOMON_F_DONTNEED_DROPPED,
			  dropped);
		file_add(tm, ino, dev, IOMON_F_DONTNEED_CALLS, 1);
	}
	u64 rest = covered > dropped ? covered - dropped : 0;
	if (!rest)
		return;
	if (reason == IOMON_FADVISE_REASON_PARTIAL) {
		count(tm, IOMON_C_FADVISE_DONTNEED_KEPT + IOMON_FADVISE_REASON_PARTIAL, rest);
		return;
	}
	kept = cached_after < rest ? cached_after : rest;
	if (kept)
		count(tm, IOMON_C_FADVISE_DONTNEED_KEPT + reason, kept);
	if (rest > kept)
		count(tm, IOMON_C_FADVISE_DONTNEED_KEPT + IOMON_FADVISE_REASON_NOT_CACHED, rest - kept);
}

static __always_inline void fadvise_done(struct thread_state *t, s32 fd, s64 offset, u64 len,
					 u64 advice, long ret)
{
	u64 dropped = 0;
	bool dirty = false;
	if (t) {
		dropped = t->fadvise.dropped;
		dirty = t->fadvise.dirty;
		t->fadvise.dropped = 0;
		t->fadvise.dirty = 0;
	}
	u32 tm;
	struct iomon_proc *p = proc_entry_tm(&tm);
	fadvise_count(tm, p, advice, ret);
	if (advice == POSIX_FADV_DONTNEED && ret == 0)
		dontneed_done(tm, p, fd, offset, len, dropped, dirty);
}

/* n pages deleted inside a DONTNEED call are the call's (the hooks below
 * leave out a thread reclaiming memory: an allocation inside the call). */
static __always_inline void dontneed_delete(u64 n, struct thread_state *t, s32 fd)
{
	if (!t)
		return;
	if (!t->fadvise.dropped)
		t->fadvise.dirty = fd_dirty(fd);
	t->fadvise.dropped += n;
}

#define NOT_THE_CALLS (PF_MEMALLOC | PF_KSWAPD | PF_KTHREAD)

/* A call is over, its arguments in the syscall's saved registers: only
 * the advice is read unless the call is a DONTNEED that succeeded. */
static __always_inline void fadvise_over(struct pt_regs *regs, long ret)
{
	u64 advice = (s32)PT_REGS_PARM4_SYSCALL(regs);
	if (advice != POSIX_FADV_DONTNEED || ret != 0) {
		fadvise_done(NULL, -1, 0, 0, advice, ret);
		return;
	}
	fadvise_done(thread_state(false), PT_REGS_PARM1_SYSCALL(regs), PT_REGS_PARM2_SYSCALL(regs),
		     PT_REGS_PARM3_SYSCALL(regs), advice, ret);
}

/* Route fexit (5.15+, with BPF trampolines): the exit of the syscall's
 * entry function, given its saved registers. No other syscall pays
 * anything for it (a syscall tracepoint puts every syscall of the host on
 * the slow path). */
SEC("fexit/" SYSCALL_FN(SYSCALL_FADVISE))
int BPF_PROG(fadvise_fexit, struct pt_regs *regs, long ret)
{
	fadvise_over(regs, ret);
	return 0;
}

/* Route syscall-exit (5.15+): the arguments are still in the syscall's
 * saved registers, so one program per call instead of an enter/exit pair. */
SEC("tracepoint/syscalls/sys_exit_" SYSCALL_FADVISE)
int fadvise_exit(struct trace_event_raw_sys_exit *ctx)
{
	fadvise_over(current_regs(), ctx->ret);
	return 0;
}

/* Its part of a page-cache delete: pages deleted by a thread in
 * fadvise64(DONTNEED) are that call's. */
static __always_inline void fadvise_on_delete(struct page_cache_event *e)
{
	if (pce_flags(e) & NOT_THE_CALLS)
		return;
	if (pce_syscall(e) != NR_FADVISE64)
		return;
	struct pt_regs *regs = current_regs();
	if ((s32)PT_REGS_PARM4_SYSCALL(regs) != POSIX_FADV_DONTNEED)
		return;
	dontneed_delete(e->n, pce_thread(e, true), PT_REGS_PARM1_SYSCALL(regs));
}

/* Routes fentry-pair and syscall-pair (before 5.15): the arguments from
 * the entry, kept per thread until the exit. */
static __always_inline void fadvise_begin(s32 fd, s64 offset, u64 len, u64 advice)
{
	struct thread_state *t = thread_state(true);
	if (t) {
		t->fadvise.fd = fd;
		t->fadvise.offset = offset;
		t->fadvise.len = len;
		t->fadvise.advice = advice;
		t->fadvise.dropped = 0;
		t->fadvise.dirty = 0;
		t->fadvise.pending = 1;
	}
}

static __always_inline void fadvise_end(long ret)
{
	struct thread_state *t = thread_state(false);
	if (!t || !t->fadvise.pending)
		return;
	t->fadvise.pending = 0;
	fadvise_done(t, t->fadvise.fd, t->fadvise.offset, t->fadvise.len, t->fadvise.advice, ret);
}

/* Route fentry-pair (with trampolines, before 5.15): the syscall's body,
 * ksys_fadvise64_64(), entry and exit, its arguments typed (5.10's BTF
 * declares the entry functions' pt_regs only forward, so their argument
 * cannot be read there). */
SEC("fentry/ksys_fadvise64_64")
int BPF_PROG(fadvise_fentry_pair, int fd, s64 offset, s64 len, int advice)
{
	fadvise_begin(fd, offset, len, advice);
	return 0;
}

SEC("fexit/ksys_fadvise64_64")
int BPF_PROG(fadvise_fexit_pair, int fd, s64 offset, s64 len, int advice, int ret)
{
	fadvise_end(ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_" SYSCALL_FADVISE)
int fadvise_enter_pair(struct trace_event_raw_sys_enter *ctx)
{
	fadvise_begin(ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[3]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_" SYSCALL_FADVISE)
int fadvise_exit_pair(struct trace_event_raw_sys_exit *ctx)
{
	fadvise_end(ctx->ret);
	return 0;
}

static __always_inline void fadvise_pair_on_delete(struct page_cache_event *e)
{
	if (pce_flags(e) & NOT_THE_CALLS)
		return;
	struct thread_state *t = pce_thread(e, false);
	if (t && t->fadvise.pending && t->fadvise.advice == POSIX_FADV_DONTNEED)
		dontneed_delete(e->n, t, t->fadvise.fd);
}
