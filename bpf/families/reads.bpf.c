// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* reads: read syscalls, calls, bytes and latency (bpf/families/reads.toml). */

static __always_inline int read_enter(void)
{
	struct thread_state *t = thread_state(true);
	if (t)
		t->reads.start_ns = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int read_exit(long ret, u32 syscall)
{
	struct thread_state *t = thread_state(false);
	u64 start = 0;
	if (t) {
		start = t->reads.start_ns;
		t->reads.start_ns = 0;
	}
	u32 tm = targets_of(t);
	count(tm, IOMON_C_READS_CALLS + syscall, 1);
	if (ret > 0)
		count(tm, IOMON_C_READS_BYTES + syscall, ret);
	else if (ret < 0)
		count(tm, IOMON_C_READS_ERRORS, 1);
	if (start) {
		u64 ns = bpf_ktime_get_ns() - start;
		count(tm, IOMON_C_READS_LATENCY_NS, ns);
		hist_add(tm, IOMON_H_READS_LATENCY, hist_bucket(ns));
	}
	struct iomon_proc *p = proc_entry(t, tm);
	proc_add(p, IOMON_P_READS_CALLS, 1);
	if (ret > 0)
		proc_add(p, IOMON_P_READS_BYTES, ret);
	return 0;
}

#define READ_PAIR(name, idx)                                                 \
	SEC("tracepoint/syscalls/sys_enter_" #name)                          \
	int read_enter_##name(void *ctx) { return read_enter(); }             \
	SEC("tracepoint/syscalls/sys_exit_" #name)                           \
	int read_exit_##name(struct trace_event_raw_sys_exit *ctx)            \
	{ return read_exit(ctx->ret, idx); }

/* Route fentry: the syscalls' entry functions, entry and exit (BPF
 * trampolines): no other syscall pays anything. */
#define READ_PAIR_FENTRY(name, idx)                                          \
	SEC("fentry/" SYSCALL_FN(#name))                                      \
	int BPF_PROG(read_fentry_##name, struct pt_regs *regs)                \
	{ return read_enter(); }                                              \
	SEC("fexit/" SYSCALL_FN(#name))                                       \
	int BPF_PROG(read_fexit_##name, struct pt_regs *regs, long ret)       \
	{ return read_exit(ret, idx); }

READ_PAIR_FENTRY(read, IOMON_READS_SYSCALL_READ)
READ_PAIR_FENTRY(pread64, IOMON_READS_SYSCALL_PREAD64)
READ_PAIR_FENTRY(readv, IOMON_READS_SYSCALL_READV)
READ_PAIR_FENTRY(preadv, IOMON_READS_SYSCALL_PREADV)
READ_PAIR_FENTRY(preadv2, IOMON_READS_SYSCALL_PREADV2)

/* Route syscalls: the syscall tracepoints (every syscall of the host on
 * the slow path). */
READ_PAIR(read, IOMON_READS_SYSCALL_READ)
READ_PAIR(pread64, IOMON_READS_SYSCALL_PREAD64)
READ_PAIR(readv, IOMON_READS_SYSCALL_READV)
READ_PAIR(preadv, IOMON_READS_SYSCALL_PREADV)
READ_PAIR(preadv2, IOMON_READS_SYSCALL_PREADV2)
