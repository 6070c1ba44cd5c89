// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* fadvise: posix_fadvise calls by advice and result (bpf/families/fadvise.toml). */

/* One call: host-wide and for its process. Advice 0..5 are POSIX_FADV_*;
 * anything else is counted as invalid. */
static __always_inline void fadvise_count(struct thread_state *t, u64 advice, long ret)
{
	u32 tm = targets_of(t);
	u32 slot = advice < IOMON_FADVISE_ADVICE_INVALID ? advice : IOMON_FADVISE_ADVICE_INVALID;
	u32 err = ret < 0 ? IOMON_FADVISE_RESULT_ERROR : IOMON_FADVISE_RESULT_OK;
	u32 i = slot * IOMON_FADVISE_RESULT_N + err;
	count(tm, IOMON_C_FADVISE_CALLS + i, 1);
	proc_add(proc_entry(tm), IOMON_P_FADVISE_CALLS + i, 1);
}

/* Route syscall-exit (5.15+): the advice is still in the syscall's saved
 * registers, so one program per call instead of an enter/exit pair. */
SEC("tracepoint/syscalls/sys_exit_fadvise64")
int fadvise_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	fadvise_count(NULL, PT_REGS_PARM4_CORE_SYSCALL(regs), ctx->ret);
	return 0;
}

/* Route syscall-pair (before 5.15): the advice from the entry, kept per
 * thread until the exit. */
SEC("tracepoint/syscalls/sys_enter_fadvise64")
int fadvise_enter_pair(struct trace_event_raw_sys_enter *ctx)
{
	struct thread_state *t = thread_state(true);
	if (t) {
		t->fadvise_advice = ctx->args[3];
		t->fadvise_pending = 1;
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_fadvise64")
int fadvise_exit_pair(struct trace_event_raw_sys_exit *ctx)
{
	struct thread_state *t = thread_state(false);
	if (!t || !t->fadvise_pending)
		return 0;
	t->fadvise_pending = 0;
	fadvise_count(t, t->fadvise_advice, ctx->ret);
	return 0;
}
