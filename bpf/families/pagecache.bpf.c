// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * pagecache: pages buffered reads asked for and missed (bpf/families/pagecache.toml).
 *
 * Two ways to see a read, one per kind of kernel:
 *  - route tracepoint (6.12+): mm_filemap_get_pages fires at the end of each
 *    chunk of a read; pages the thread added before it are settled then,
 *    told from other adds by the syscall the thread is in;
 *  - routes fentry/kprobe (older kernels): entry and exit of the buffered
 *    read itself; pages added between them are the read's.
 * Either way a page the read asked for and had to bring in is a miss, once;
 * pages brought in beyond it are read-ahead, kept per file until a read
 * asks for them (then a miss too) or forgotten.
 */

/* Whether the current task is one of DAMON's kdamond threads (a kernel
 * thread named "kdamond.N", reclaiming with PF_MEMALLOC for a pageout
 * scheme). Asked only of reclaim by kernel threads other than kswapd. */
static __always_inline bool is_kdamond(u32 flags)
{
	if (!(flags & PF_KTHREAD) || (flags & PF_KSWAPD))
		return false;
	char comm[8] = {};
	bpf_get_current_comm(comm, sizeof(comm));
	return comm[0] == 'k' && comm[1] == 'd' && comm[2] == 'a' && comm[3] == 'm' &&
	       comm[4] == 'o' && comm[5] == 'n' && comm[6] == 'd';
}

/* Its part of a page-cache delete (every route): evictions, by cause, for
 * the targets of the task removing them (kswapd's are nobody's), and for
 * the targets whose file it is. */
static __always_inline void pc_on_delete(struct page_cache_event *e)
{
	u32 cause = pce_cause(e);
	count(0, IOMON_C_PAGECACHE_DELETED, e->n);
	if (cause == IOMON_PAGECACHE_CAUSE_RECLAIM && is_kdamond(pce_flags(e)))
		count(0, IOMON_C_PAGECACHE_EVICTED_DAMON, e->n);
	u32 tm = pce_targets(e);
	file_evicted(e->ino, e->dev, e->index, e->n, cause,
		     cause == IOMON_PAGECACHE_CAUSE_FADVISE ? tm : 0);
	count(tm, IOMON_C_PAGECACHE_EVICTED + cause, e->n);
}

/* ------------------------------------------------- route tracepoint */

/* Its part of a page-cache add (route tracepoint): pages added while a
 * thread is inside a buffered read are that read's doing: those it asked
 * for are misses, the rest is read-ahead. The add events come before the
 * read's get_pages event, so remember them here until it comes. */
static __always_inline void pc_on_add(struct page_cache_event *e)
{
	u64 n = e->n, index = e->index, ino = e->ino;
	u32 dev = e->dev;
	u32 tm = pce_targets(e);
	count(tm, IOMON_C_PAGECACHE_ADDED, n);
	file_refault(tm, ino, dev, index, n);
	if (!is_read_syscall(pce_syscall(e)))
		return;
	struct thread_state *t = pce_thread(e, true);
	if (!t)
		return;
	if (t->pagecache.pend_nr == 0 || t->pagecache.pend_dev != dev || t->pagecache.pend_ino != ino) {
		t->pagecache.pend_dev = dev;
		t->pagecache.pend_ino = ino;
		t->pagecache.pend_nr = 0;
		t->pagecache.pend_overflow = 0;
	}
	u32 last = t->pagecache.pend_nr;
	if (last > 0 && last <= 4 && t->pagecache.pend[last - 1].end == index) {
		t->pagecache.pend[last - 1].end = index + n;
	} else if (last < 4) {
		t->pagecache.pend[last].start = index;
		t->pagecache.pend[last].end = index + n;
		t->pagecache.pend_nr = last + 1;
	} else {
		t->pagecache.pend_overflow += n;
	}
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
	u64 eof = (u64)(isize - 1) >> page_shift;
	u64 last = last_index < eof ? last_index : eof;
	if (index > last)
		return 0;

	struct thread_state *t = thread_state(true);
	u32 tm = targets_of(t);
	count(tm, IOMON_C_PAGECACHE_READ_EVENTS, 1);
	if (!t)
		return 0;

	u64 missed_sync = 0, missed_ra = 0, readahead = 0;
	struct file_key fk = { .ino = ino, .dev = dev };
	u64 gen;
	struct ra_window *w = ra_lookup(t, &fk, &gen);

	/* 1. Settle the pages this thread added during this chunk. Pages
	 * added below `index` were asked by a chunk whose event never came:
	 * filemap_get_pages() returns without it when it hands back part of a
	 * batch (its last folio still being read in) or a folio it created
	 * itself. Below the end of this thread's previous read of the file
	 * they were asked already (`below_asked`); above it, by a first chunk
	 * of this read that went unseen (`below_new`): misses either way.
	 * (Where a mapping's smallest folio spans pages, from 6.12 on XFS with
	 * blocks larger than a page, a read's first folio may start below it:
	 * those pages count as asked too.) */
	u64 below_asked = 0, below_new = 0;
	u64 prev_end = t->pagecache.rd_dev == dev && t->pagecache.rd_ino == ino ? t->pagecache.rd_last + 1 : 0;
	if (prev_end > index)
		prev_end = index;
	if (t->pagecache.pend_nr && t->pagecache.pend_dev == dev && t->pagecache.pend_ino == ino) {
		for (int i = 0; i < 4; i++) {
			if (i >= t->pagecache.pend_nr)
				break;
			u64 s = t->pagecache.pend[i].start, e = t->pagecache.pend[i].end;
			u64 in = overlap(s, e, index, last + 1);
			missed_sync += in;
			below_asked += overlap(s, e, 0, prev_end);
			below_new += overlap(s, e, prev_end, index);
			u64 beyond = overlap(s, e, last + 1, ~0ULL);
			readahead += beyond;
			if (beyond) {
				u64 bs = s > last + 1 ? s : last + 1;
				if (!w)
					w = ra_window_of(&fk);
				if (w)
					ra_insert(w, bs, e);
			}
		}
		readahead += t->pagecache.pend_overflow;
	}
	t->pagecache.pend_nr = 0;
	t->pagecache.pend_overflow = 0;

	/* 2. A new read asks for [index, last]; read-ahead waiting there was
	 * brought in for it: a miss too, counted once, then forgotten. */
	bool cont = t->pagecache.rd_dev == dev && t->pagecache.rd_ino == ino && t->pagecache.rd_last == last &&
		    index > t->pagecache.rd_prev;
	/* In a continuation every page below `index` was asked already. */
	missed_sync += below_asked + below_new;
	if (!cont) {
		u64 asked = last - index + 1 + below_new;
		count(tm, IOMON_C_PAGECACHE_ASKED, asked);
		if (w)
			missed_ra = ra_consume(w, index, last + 1);
		struct iomon_proc *p = proc_entry(t, tm);
		proc_add(p, IOMON_P_PAGECACHE_ASKED, asked);
		if (missed_sync + missed_ra)
			proc_add(p, IOMON_P_PAGECACHE_MISSED, missed_sync + missed_ra);
		file_add(tm, ino, dev, IOMON_F_ASKED, asked);
		t->pagecache.rd_dev = dev;
		t->pagecache.rd_ino = ino;
		t->pagecache.rd_last = last;
	} else if (missed_sync) {
		proc_add(proc_entry(t, tm), IOMON_P_PAGECACHE_MISSED, missed_sync);
	}
	t->pagecache.rd_prev = index;

	ra_note(t, &fk, gen, w);
	file_add(tm, ino, dev, IOMON_F_MISSED, missed_sync + missed_ra);
	if (missed_sync)
		count(tm, IOMON_C_PAGECACHE_MISSED_SYNC, missed_sync);
	if (missed_ra)
		count(tm, IOMON_C_PAGECACHE_MISSED_READAHEAD, missed_ra);
	if (readahead)
		count(tm, IOMON_C_PAGECACHE_READAHEAD, readahead);
	return 0;
}

/* ------------------------------------------- routes fentry and kprobe */

/* A buffered read starts: it asks for the pages of [pos, pos + len) up
 * to end of file; read-ahead waiting there is a miss now. */
static __always_inline void pc_read_begin_at(struct file *file, u64 pos, u64 len)
{
	struct address_space *mapping = BPF_CORE_READ(file, f_mapping);
	u64 ino;
	u32 dev;
	if (!file_of_probed(mapping, &ino, &dev))
		return;
	s64 isize = BPF_CORE_READ(mapping, host, i_size);
	struct thread_state *t = thread_state(true);
	if (t)
		t->pagecache.rd_active = 0;
	if (isize <= 0 || !len || pos >= (u64)isize)
		return;
	u32 tm = targets_of(t);
	u64 index = pos >> page_shift;
	u64 last = (pos + len - 1) >> page_shift;
	u64 eof = (u64)(isize - 1) >> page_shift;
	if (last > eof)
		last = eof;

	count(tm, IOMON_C_PAGECACHE_READ_EVENTS, 1);
	u64 asked = last - index + 1;
	count(tm, IOMON_C_PAGECACHE_ASKED, asked);
	struct iomon_proc *p = proc_entry(t, tm);
	proc_add(p, IOMON_P_PAGECACHE_ASKED, asked);
	file_add(tm, ino, dev, IOMON_F_ASKED, asked);
	if (!t)
		return;
	struct file_key fk = { .ino = ino, .dev = dev };
	u64 gen;
	struct ra_window *w = ra_lookup(t, &fk, &gen);
	if (w) {
		u64 missed_ra = ra_consume(w, index, last + 1);
		if (missed_ra) {
			count(tm, IOMON_C_PAGECACHE_MISSED_READAHEAD, missed_ra);
			proc_add(p, IOMON_P_PAGECACHE_MISSED, missed_ra);
			file_add(tm, ino, dev, IOMON_F_MISSED, missed_ra);
		}
	}
	ra_note(t, &fk, gen, w);
	t->pagecache.rd_dev = dev;
	t->pagecache.rd_ino = ino;
	t->pagecache.rd_first = index;
	t->pagecache.rd_last = last;
	t->pagecache.rd_active = 1;
}

/* read(2) and the like: filemap_read() (generic_file_buffered_read()
 * before 5.12) asks for [ki_pos, ki_pos + count). */
static __always_inline void pc_read_begin(struct kiocb *iocb, struct iov_iter *iter)
{
	pc_read_begin_at(BPF_CORE_READ(iocb, ki_filp), BPF_CORE_READ(iocb, ki_pos),
			 BPF_CORE_READ(iter, count));
}

/* splice(2), sendfile(2) and copy_file_range(2) between file systems, 6.5
 * on: filemap_splice_read() reads from *ppos at most len bytes, and no
 * more than the pipe has room for (as it works it out itself). Before
 * 6.5 these went through filemap_read(), seen above. */
static __always_inline void pc_splice_begin(struct file *in, loff_t *ppos,
					    struct pipe_inode_info *pipe, u64 len)
{
	loff_t pos = 0;
	if (bpf_probe_read_kernel(&pos, sizeof(pos), ppos) || pos < 0)
		return;
	u32 head = BPF_CORE_READ(pipe, head);
	u32 tail = BPF_CORE_READ(pipe, tail);
	u32 max = BPF_CORE_READ(pipe, max_usage);
	u32 used = head - tail;
	u64 room = max > used ? (u64)(max - used) << page_shift : 0;
	if (len > room)
		len = room;
	pc_read_begin_at(in, pos, len);
}

static __always_inline void pc_read_end(void)
{
	struct thread_state *t = thread_state(false);
	if (t)
		t->pagecache.rd_active = 0;
}

/* Its part of a page-cache add (routes fentry and kprobe): pages added
 * while the thread is inside a buffered read of the same file: in what it
 * asked for, missed; beyond, read-ahead for later reads. */
static __always_inline void pc_on_add_in_read(struct page_cache_event *e)
{
	u64 n = e->n, index = e->index, ino = e->ino;
	u32 dev = e->dev;
	struct thread_state *t = pce_thread(e, false);
	u32 tm = pce_targets(e);
	count(tm, IOMON_C_PAGECACHE_ADDED, n);
	file_refault(tm, ino, dev, index, n);
	if (!t || !t->pagecache.rd_active || t->pagecache.rd_dev != dev || t->pagecache.rd_ino != ino)
		return;
	u64 s = index, end = index + n;
	u64 in = overlap(s, end, t->pagecache.rd_first, t->pagecache.rd_last + 1);
	if (in) {
		count(tm, IOMON_C_PAGECACHE_MISSED_SYNC, in);
		proc_add(proc_entry(t, tm), IOMON_P_PAGECACHE_MISSED, in);
		file_add(tm, ino, dev, IOMON_F_MISSED, in);
	}
	if (n > in)
		count(tm, IOMON_C_PAGECACHE_READAHEAD, n - in);
	u64 beyond = overlap(s, end, t->pagecache.rd_last + 1, ~0ULL);
	if (beyond) {
		struct file_key fk = { .ino = ino, .dev = dev };
		struct ra_window *w = ra_window_of(&fk);
		if (w)
			ra_insert(w, end - beyond, end);
	}
}

SEC("fentry/filemap_read")
int BPF_PROG(pc_read_entry, struct kiocb *iocb, struct iov_iter *iter)
{
	pc_read_begin(iocb, iter);
	return 0;
}

SEC("fexit/filemap_read")
int BPF_PROG(pc_read_exit)
{
	pc_read_end();
	return 0;
}

SEC("fentry/filemap_splice_read")
int BPF_PROG(pc_splice_entry, struct file *in, loff_t *ppos, struct pipe_inode_info *pipe,
	     size_t len)
{
	pc_splice_begin(in, ppos, pipe, len);
	return 0;
}

SEC("fexit/filemap_splice_read")
int BPF_PROG(pc_splice_exit)
{
	pc_read_end();
	return 0;
}

SEC("fentry/generic_file_buffered_read")
int BPF_PROG(pc_read_entry_gfbr, struct kiocb *iocb, struct iov_iter *iter)
{
	pc_read_begin(iocb, iter);
	return 0;
}

SEC("fexit/generic_file_buffered_read")
int BPF_PROG(pc_read_exit_gfbr)
{
	pc_read_end();
	return 0;
}

SEC("kprobe/filemap_read")
int BPF_KPROBE(pc_read_kprobe, struct kiocb *iocb, struct iov_iter *iter)
{
	pc_read_begin(iocb, iter);
	return 0;
}

SEC("kretprobe/filemap_read")
int BPF_KRETPROBE(pc_read_kretprobe)
{
	pc_read_end();
	return 0;
}

SEC("kprobe/filemap_splice_read")
int BPF_KPROBE(pc_splice_kprobe, struct file *in, loff_t *ppos, struct pipe_inode_info *pipe,
	       size_t len)
{
	pc_splice_begin(in, ppos, pipe, len);
	return 0;
}

SEC("kretprobe/filemap_splice_read")
int BPF_KRETPROBE(pc_splice_kretprobe)
{
	pc_read_end();
	return 0;
}

SEC("kprobe/generic_file_buffered_read")
int BPF_KPROBE(pc_read_kprobe_gfbr, struct kiocb *iocb, struct iov_iter *iter)
{
	pc_read_begin(iocb, iter);
	return 0;
}

SEC("kretprobe/generic_file_buffered_read")
int BPF_KRETPROBE(pc_read_kretprobe_gfbr)
{
	pc_read_end();
	return 0;
}
