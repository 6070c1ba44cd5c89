// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* writeback: pages dirtied and written back, dirty age, throttled writers
 * (bpf/families/writeback.toml). */

static __always_inline void wb_dirtied(u64 n)
{
	u32 tm;
	struct iomon_proc *p = proc_entry_tm(&tm);
	count(tm, IOMON_C_WRITEBACK_DIRTIED, n);
	proc_add(p, IOMON_P_WRITEBACK_DIRTIED, n);
}

/* Route folio (5.17+). */
SEC("tp_btf/writeback_dirty_folio")
int BPF_PROG(wb_dirty, struct folio *folio, struct address_space *mapping)
{
	wb_dirtied(folio_pages_btf(folio));
	return 0;
}

/* Route page (before 5.17): one page per event. */
SEC("tp_btf/writeback_dirty_page")
int BPF_PROG(wb_dirty_page, struct page *page, struct address_space *mapping)
{
	wb_dirtied(1);
	return 0;
}

/* End of a flusher (or sync(2)) pass: pages it wrote. Pages an fsync
 * writes are not in any writeback event. */
SEC("tp_btf/writeback_pages_written")
int BPF_PROG(wb_written, long pages)
{
	if (pages > 0)
		count(0, IOMON_C_WRITEBACK_WRITTEN, pages);
	return 0;
}

/* The flusher wrote an inode: how long its oldest dirty data had waited
 * (jiffies; the daemon sets kernel_hz, 0 when it could not tell: then the
 * age is not measured and the daemon reports it absent). */
SEC("tracepoint/writeback/writeback_single_inode")
int wb_inode(struct trace_event_raw_writeback_single_inode_template *ctx)
{
	u64 wrote = ctx->wrote;
	u64 dirtied = ctx->dirtied_when;
	if (!wrote)
		return 0;
	count(0, IOMON_C_WRITEBACK_INODES, 1);
	u32 hz = kernel_hz;
	u64 now = bpf_jiffies64();
	if (hz > 0 && now > dirtied) {
		u64 ns = (now - dirtied) * (1000000000ULL / hz);
		count(0, IOMON_C_WRITEBACK_AGE_NS, ns);
		hist_add(0, IOMON_H_WRITEBACK_DIRTY_AGE, hist_bucket(ns));
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
	u32 tm;
	struct iomon_proc *p = proc_entry_tm(&tm);
	count(tm, IOMON_C_WRITEBACK_THROTTLES, 1);
	count(tm, IOMON_C_WRITEBACK_THROTTLE_NS, ns);
	hist_add(tm, IOMON_H_WRITEBACK_THROTTLE, hist_bucket(ns));
	proc_add(p, IOMON_P_WRITEBACK_THROTTLES, 1);
	proc_add(p, IOMON_P_WRITEBACK_THROTTLE_NS, ns);
	return 0;
}
