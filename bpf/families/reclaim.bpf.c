// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* reclaim: pages scanned and reclaimed, reclaim stalls (bpf/families/reclaim.toml). */

SEC("tracepoint/vmscan/mm_vmscan_lru_shrink_inactive")
int vmscan_shrink_inactive(struct trace_event_raw_mm_vmscan_lru_shrink_inactive *ctx)
{
	bool kswapd = current_flags() & PF_KSWAPD;
	u32 who = kswapd ? IOMON_RECLAIM_RECLAIMER_KSWAPD : IOMON_RECLAIM_RECLAIMER_DIRECT;
	/* Reclaim in the allocating task is that task's; kswapd's no one's. */
	u32 tm = kswapd ? 0 : targets_of(NULL);
	count(tm, IOMON_C_RECLAIM_SCANNED + who, ctx->nr_scanned);
	count(tm, IOMON_C_RECLAIM_RECLAIMED + who, ctx->nr_reclaimed);
	return 0;
}

static __always_inline int stall_begin(void)
{
	struct thread_state *t = thread_state(true);
	if (t)
		t->reclaim.stall_start_ns = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int stall_end(u32 kind)
{
	struct thread_state *t = thread_state(false);
	u32 tm = targets_of(t);
	count(tm, IOMON_C_RECLAIM_STALLS + kind, 1);
	if (!t || !t->reclaim.stall_start_ns)
		return 0;
	u64 ns = bpf_ktime_get_ns() - t->reclaim.stall_start_ns;
	t->reclaim.stall_start_ns = 0;
	count(tm, IOMON_C_RECLAIM_STALL_NS, ns);
	hist_add(tm, IOMON_H_RECLAIM_STALL, hist_bucket(ns));
	return 0;
}

SEC("tracepoint/vmscan/mm_vmscan_direct_reclaim_begin")
int stall_direct_begin(void *ctx) { return stall_begin(); }

SEC("tracepoint/vmscan/mm_vmscan_direct_reclaim_end")
int stall_direct_end(void *ctx) { return stall_end(IOMON_RECLAIM_KIND_GLOBAL); }

SEC("tracepoint/vmscan/mm_vmscan_memcg_reclaim_begin")
int stall_memcg_begin(void *ctx) { return stall_begin(); }

SEC("tracepoint/vmscan/mm_vmscan_memcg_reclaim_end")
int stall_memcg_end(void *ctx) { return stall_end(IOMON_RECLAIM_KIND_MEMCG); }
