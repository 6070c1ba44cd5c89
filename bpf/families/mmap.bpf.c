// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * mmap: page faults on file mappings, in faults and pages (bpf/families/mmap.toml).
 *
 * A fault on a file mapping first tries fault-around (the kernel maps the
 * cached pages near the address: filemap_map_pages); only a page it could
 * not map goes to the file's fault handler (filemap_fault). A fault whose
 * handler had to add the page to the page cache is major. Route tracepoint
 * (6.12+) sees both through their tracepoints; routes fentry and kprobe
 * through the functions themselves.
 */

/* Pages added in a fault arrive after its fault event and before the fault
 * returns (before its I/O, but allocating them can stall in reclaim: a
 * read-ahead of two PMD-sized folios took over 100 ms in an emulated arm64
 * guest); a thread's marker older than this is stale. Its next fault or
 * read replaces it sooner. */
#define FAULT_WINDOW_NS (1000ULL * 1000 * 1000)

#define PMD_PAGES 512
#define EBUSY 16
#define XA_CHUNK_MASK 63

/* 6.18 on, a fault maps a cached large folio whole: fault-around maps
 * every folio it reaches entire ("mm/filemap: map entire large folio
 * faultaround") and the fault handler's folio is mapped entire too ("try
 * to map the entire file folio in finish_fault()"). Before, only a
 * PMD-sized folio was, by one huge page-table entry; the rest page by
 * page, within the window. Read-only data, so the verifier drops the
 * branch a kernel does not take. */
extern u32 LINUX_KERNEL_VERSION __kconfig;
#define MAPS_WHOLE_FOLIOS (LINUX_KERNEL_VERSION >= KERNEL_VERSION(6, 18, 0))

/* Whether a fault maps folio `n` pages long whole. */
static __always_inline bool mapped_whole(u64 n)
{
	return n >= PMD_PAGES || (MAPS_WHOLE_FOLIOS && n > 1);
}

/* Reading the page cache's xarray and folios. Where the kernel has
 * bpf_rdonly_cast (6.2+), the walk loads directly (`direct`): bpf_core_cast
 * turns an address into a pointer the verifier guards like a probe read (a
 * fault reads zero) and costs one register move, where
 * bpf_probe_read_kernel is a helper call, dear under SRSO's mitigation (a
 * walk is a dozen of them). Older kernels probe-read. `direct` is a
 * constant in every program: true on the tracepoint route (which needs
 * the kfunc), `has_rdonly_cast` on the others, read-only data the loader
 * sets, so the verifier drops the walk a kernel does not take (and the
 * call to a kfunc it lacks, which libbpf leaves unresolved there). */

/* Set by the loader: the kernel has the kfunc bpf_rdonly_cast. */
const volatile bool has_rdonly_cast = false;

/* The word at kernel address `addr`. Direct: as the first member of a
 * struct that begins with an unsigned long (rb_node). */
static __always_inline unsigned long kword(unsigned long addr, bool direct)
{
	if (direct)
		return bpf_core_cast((void *)addr, struct rb_node)->__rb_parent_color;
	unsigned long w = 0;
	bpf_probe_read_kernel(&w, sizeof(w), (void *)addr);
	return w;
}

/* The head entry of a mapping's page cache (`mapping` typed or not: the
 * kprobe route's is an address). */
static __always_inline unsigned long cache_head(struct address_space *mapping, bool direct)
{
	if (direct)
		return (unsigned long)bpf_core_cast(mapping, struct address_space)->i_pages.xa_head;
	return (unsigned long)BPF_CORE_READ(mapping, i_pages.xa_head);
}

/* The shift of the xarray node at `node`. */
static __always_inline u32 xa_shift(unsigned long node, bool direct)
{
	if (direct)
		return bpf_core_cast((void *)node, struct xa_node)->shift;
	return BPF_CORE_READ((struct xa_node *)node, shift);
}

/* Slot `index` of the xarray node at `node`, a large folio's sibling slots
 * resolved to its first (xa_is_sibling: an internal entry below 256). */
static __always_inline unsigned long xa_slot(unsigned long node, u32 shift, u64 index,
					     bool direct)
{
	unsigned long slots = node + bpf_core_field_offset(struct xa_node, slots);
	u32 off = (index >> (shift & 63)) & XA_CHUNK_MASK;
	unsigned long e = kword(slots + off * sizeof(void *), direct);
	if ((e & 3) == 2 && e < ((XA_CHUNK_MASK << 2) | 2)) {
		off = (e >> 2) & XA_CHUNK_MASK;
		e = kword(slots + off * sizeof(void *), direct);
	}
	return e;
}

/* An xarray entry as a folio's address: 0 if empty, a shadow (value)
 * entry or an internal one. */
static __always_inline unsigned long as_folio(unsigned long e)
{
	return (e & 3) ? 0 : e;
}

/* The first index and the pages of the folio at `folio` (before folios,
 * 5.16, a page: a huge one's head, at every index it spans; its index
 * and flags where a folio's are). */
static __always_inline u64 folio_at(unsigned long folio, u64 *index, bool direct)
{
	if (direct) {
		struct folio *f = bpf_core_cast((void *)folio, struct folio);
		*index = f->index;
		return folio_pages_btf(f);
	}
	if (bpf_core_type_exists(struct folio))
		*index = BPF_CORE_READ((struct folio *)folio, index);
	else
		*index = BPF_CORE_READ((struct page___pre_folio *)folio, index);
	return folio_pages((struct folio *)folio);
}

/* The page-cache folios at `a` and at `b` (b >= a, close: a fault-around
 * window) of `mapping`, 0 where there is none: a read-only walk of the
 * xarray like xa_load() without the RCU retry (a racing change gives a
 * stale answer for this one event, never a fault: reads are guarded). One
 * walk when b sits under the node where a's ended; depth bounded at 6
 * levels (2^36 pages). */
static __always_inline void cache_folios(struct address_space *mapping, u64 a, u64 b,
					 unsigned long *fa, unsigned long *fb, bool direct)
{
	unsigned long e = cache_head(mapping, direct);
	unsigned long last = 0;
	u32 last_shift = 0;
	for (int level = 0; level < 6; level++) {
		/* xa_is_node(): an internal entry (low bits 10) above 4096 */
		if ((e & 3) != 2 || e <= 4096)
			break;
		last = e - 2;
		last_shift = xa_shift(last, direct);
		e = xa_slot(last, last_shift, a, direct);
	}
	if (!last) {
		/* A single entry at index 0, or nothing. */
		*fa = a == 0 ? as_folio(e) : 0;
		*fb = b == 0 ? *fa : 0;
		return;
	}
	*fa = as_folio(e);
	if (b == a) {
		*fb = *fa;
		return;
	}
	u32 span = (last_shift & 63) + 6;
	if (span >= 64 || ((a ^ b) >> span) == 0) {
		unsigned long eb = xa_slot(last, last_shift, b, direct);
		if ((eb & 3) != 2 || eb < 4096) {
			*fb = as_folio(eb);
			return;
		}
	}
	/* b is under another node: walk again. */
	e = cache_head(mapping, direct);
	for (int level = 0; level < 6; level++) {
		if ((e & 3) != 2 || e <= 4096)
			break;
		e = xa_slot(e - 2, xa_shift(e - 2, direct), b, direct);
	}
	*fb = as_folio(e);
}

static __always_inline unsigned long cache_folio(struct address_space *mapping, u64 index,
						 bool direct)
{
	unsigned long f, g;
	cache_folios(mapping, index, index, &f, &g, direct);
	return f;
}

/* Counts `asked` pages of a fault on [s, e) and the read-ahead waiting
 * there (brought in for it: a miss, counted once). */
static __always_inline void mm_ask(struct thread_state *t, u64 ino, u32 dev, u64 s, u64 e,
				   u64 asked)
{
	struct file_key fk = { .ino = ino, .dev = dev };
	u64 gen;
	struct ra_window *w = ra_lookup(t, &fk, &gen);
	u64 missed = w ? ra_consume(w, s, e) : 0;
	ra_note(t, &fk, gen, w);
	if (!asked && !missed)
		return;
	u32 tm = targets_of(t);
	if (asked)
		count(tm, IOMON_C_MMAP_ASKED, asked);
	if (missed)
		count(tm, IOMON_C_MMAP_MISSED_READAHEAD, missed);
	struct iomon_proc *p = proc_entry(t, tm);
	if (asked)
		proc_add(p, IOMON_P_MMAP_ASKED, asked);
	if (missed)
		proc_add(p, IOMON_P_MMAP_MISSED, missed);
	file_add2(tm, ino, dev, IOMON_F_MAP_ASKED, asked, IOMON_F_MAP_MISSED, missed);
}

/* Fault-around: the kernel maps the cached pages around a faulting address
 * without calling the file's fault handler. [start, end] is what it looked
 * up; a thread that repeats the same lookup (the page was not there, the
 * fault handler read it in, the access faults again) asks once. */
static __always_inline void mm_around(struct address_space *mapping, u64 ino, u32 dev,
				      u64 start, u64 end, bool counted, bool direct)
{
	if (end < start)
		return;
	struct thread_state *t = thread_state(true);
	u32 tm = targets_of(t);
	if (!counted)
		count(tm, IOMON_C_MMAP_FAULTS + IOMON_MMAP_STAGE_AROUND, 1);
	/* Fault-around maps a large folio whole (mapped_whole()), beyond
	 * the window the event reports: widen the window to the folios at
	 * its ends. Before 6.18 only a PMD-sized first folio is (alone, by
	 * one huge entry: before folios, a transparent huge page of tmpfs
	 * or of a read-only file khugepaged collapsed). */
	{
		unsigned long fs_folio, fe_folio;
		cache_folios(mapping, start, end, &fs_folio, &fe_folio, direct);
		if (fs_folio) {
			u64 fs;
			u64 n = folio_at(fs_folio, &fs, direct);
			if (mapped_whole(n) && fs <= start) {
				start = fs;
				if (!MAPS_WHOLE_FOLIOS && fs + n - 1 >= end)
					end = fs + n - 1;
			}
		}
		if (fe_folio && MAPS_WHOLE_FOLIOS) {
			u64 fe;
			u64 n = folio_at(fe_folio, &fe, direct);
			if (fe + n - 1 >= end)
				end = fe + n - 1;
		}
	}
	/* Pages the thread's last lookup of this file covered are not asked
	 * again: the same window repeated (the page was not there, the
	 * handler read it in, the access faults again), or windows that
	 * overlap (fault-around aligns its window to the page table, not to
	 * the file: a mapping that does not start on that alignment has
	 * consecutive windows share pages; the kernel skips those already
	 * mapped). */
	u64 asked = end + 1 - start;
	if (t && t->mmap.mm_dev == dev && t->mmap.mm_ino == ino)
		asked -= overlap(start, end + 1, t->mmap.mm_first, t->mmap.mm_last + 1);
	mm_ask(t, ino, dev, start, end + 1, asked);
	if (t) {
		t->mmap.mm_dev = dev;
		t->mmap.mm_ino = ino;
		t->mmap.mm_first = start;
		t->mmap.mm_last = end;
	}
}

/* The file's fault handler: fault-around could not map the page (not
 * cached, or not up to date yet). Pages it adds follow this event. */
static __always_inline void mm_fault_at(struct address_space *mapping, u64 ino, u32 dev,
					u64 index, bool direct)
{
	struct thread_state *t = thread_state(true);
	u32 tm = targets_of(t);
	count(tm, IOMON_C_MMAP_FAULTS + IOMON_MMAP_STAGE_HANDLER, 1);
	bool covered = t && t->mmap.mm_dev == dev && t->mmap.mm_ino == ino &&
		       index >= t->mmap.mm_first && index <= t->mmap.mm_last;
	u64 s = index, e = index + 1;
	u64 asked = covered ? 0 : 1;
	/* A cached folio the fault maps whole (mapped_whole(): PMD-sized,
	 * or any large one from 6.18), the part fault-around already looked
	 * up aside. */
	if (bpf_core_type_exists(struct folio)) {
		unsigned long fo = cache_folio(mapping, index, direct);
		if (fo) {
			u64 first;
			u64 n = folio_at(fo, &first, direct);
			if (mapped_whole(n)) {
				s = first;
				e = s + n;
				asked = n;
				if (t && t->mmap.mm_dev == dev && t->mmap.mm_ino == ino)
					asked -= overlap(s, e, t->mmap.mm_first, t->mmap.mm_last + 1);
			}
		}
	}
	mm_ask(t, ino, dev, s, e, asked);
	if (t) {
		if (asked) {
			/* What the handler looked up: fault-around retried
			 * after it (or a retried fault) does not ask again. */
			t->mmap.mm_dev = dev;
			t->mmap.mm_ino = ino;
			t->mmap.mm_first = s;
			t->mmap.mm_last = e - 1;
		}
		t->mmap.flt_dev = dev;
		t->mmap.flt_ino = ino;
		t->mmap.flt_index = index;
		t->mmap.flt_ns = bpf_ktime_get_ns();
		t->mmap.flt_major = 0;
	}
}

/* Pages added by a thread in a fault on the same file: the faulting page
 * makes it a major fault (and a missed page); the rest is read-ahead, kept
 * in the file's window until a fault or a read asks for it. */
static __always_inline void mm_added(struct thread_state *t, u64 ino, u32 dev, u64 s, u64 n)
{
	if (!t || !t->mmap.flt_ns || ino != t->mmap.flt_ino || dev != t->mmap.flt_dev)
		return;
	if (bpf_ktime_get_ns() - t->mmap.flt_ns > FAULT_WINDOW_NS) {
		t->mmap.flt_ns = 0;
		return;
	}
	u32 tm = targets_of(t);
	u64 e = s + n;
	u64 f = t->mmap.flt_index;
	u64 ra_lo = 0, ra_hi = 0;
	if (f >= s && f < e && mapped_whole(n)) {
		/* Read in whole and mapped whole by this fault: every page of
		 * it asked, and missed. */
		struct iomon_proc *p = proc_entry(t, tm);
		if (!t->mmap.flt_major) {
			t->mmap.flt_major = 1;
			count(tm, IOMON_C_MMAP_FAULTS + IOMON_MMAP_STAGE_MAJOR, 1);
			proc_add(p, IOMON_P_MMAP_MAJOR, 1);
		}
		count(tm, IOMON_C_MMAP_ASKED, n - 1);
		count(tm, IOMON_C_MMAP_MISSED_SYNC, n);
		proc_add(p, IOMON_P_MMAP_ASKED, n - 1);
		proc_add(p, IOMON_P_MMAP_MISSED, n);
		file_add2(tm, ino, dev, IOMON_F_MAP_ASKED, n - 1, IOMON_F_MAP_MISSED, n);
		return;
	}
	if (f >= s && f < e) {
		if (!t->mmap.flt_major) {
			t->mmap.flt_major = 1;
			count(tm, IOMON_C_MMAP_FAULTS + IOMON_MMAP_STAGE_MAJOR, 1);
			count(tm, IOMON_C_MMAP_MISSED_SYNC, 1);
			struct iomon_proc *p = proc_entry(t, tm);
			proc_add(p, IOMON_P_MMAP_MAJOR, 1);
			proc_add(p, IOMON_P_MMAP_MISSED, 1);
			file_add(tm, ino, dev, IOMON_F_MAP_MISSED, 1);
		}
		/* the rest of the folio: below and above the faulting page */
		ra_lo = f - s;
		ra_hi = e - f - 1;
	} else {
		ra_hi = n;
	}
	if (!ra_lo && !ra_hi)
		return;
	count(tm, IOMON_C_MMAP_READAHEAD, ra_lo + ra_hi);
	struct file_key fk = { .ino = ino, .dev = dev };
	struct ra_window *w = ra_window_of(&fk);
	if (!w)
		return;
	if (ra_lo)
		ra_insert(w, s, f);
	if (ra_hi)
		ra_insert(w, e - ra_hi, e);
}

/* ------------------------------------------------- route tracepoint */

/* The tracepoint of fault-around fires after it mapped its window page
 * by page, not when it mapped a PMD-sized folio by one huge entry (it
 * returns early). That mapping is seen where the fault adds the folio's
 * pages to the process's file RSS (rss_stat), at the address the fault
 * began at (page_fault_user: x86_64 only). The fault's state between the
 * two, per CPU (fault-around does not sleep): one entry per CPU. */
struct mm_user_fault {
	u32 tid;	/* 0: none pending */
	u32 counted;	/* fault-around counted at rss_stat */
	u64 addr;
	u64 faults;	/* the thread's faults then: one more once it ended */
	s64 file_rss;	/* the mm's shared file-page count then */
	s64 shmem_rss;	/* and its shared shmem-page count (tmpfs's) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct mm_user_fault);
} mm_user_faults SEC(".maps");

/* The RSS counters a fault's page-cache pages land in (an anonymous enum
 * in the kernel, the same since 4.5): a file system's pages, and tmpfs's
 * (shmem's folios are swap-backed: mm_counter_file()). */
#define MM_FILE_PAGES 0
#define MM_SHMEM_PAGES 3

/* The shared part of an mm's count `member` (one of the two above), a
 * percpu_counter from 6.2: a change reaches it when a CPU's pending part
 * would pass the batch (max(32, 2 * online CPUs)). A kernel whose counter
 * has no such part has the check below off (CO-RE: the verifier drops the
 * load). */
#define HAVE_RSS_SHARED bpf_core_field_exists(((struct mm_struct *)0)->rss_stat[0].count)

static __always_inline s64 rss_shared(struct mm_struct *mm, int member)
{
	if (!HAVE_RSS_SHARED || !mm)
		return 0;
	if (member == MM_SHMEM_PAGES)
		return mm->rss_stat[MM_SHMEM_PAGES].count;
	return mm->rss_stat[MM_FILE_PAGES].count;
}

/* Whether a PMD mapping (512 pages) always moves the shared count: the
 * batch is at most 256, i.e. at most 128 CPUs can be online. Set by the
 * loader from the possible CPUs. */
const volatile u8 rss_batch_below_pmd = 0;

/* The faults a thread has finished (counted when each ends). */
static __always_inline u64 faults_done(struct task_struct *task)
{
	return task->min_flt + task->maj_flt;
}

static __always_inline struct mm_user_fault *user_fault(void)
{
	u32 k = 0;
	return bpf_map_lookup_elem(&mm_user_faults, &k);
}

SEC("tp_btf/mm_filemap_map_pages")
int BPF_PROG(mm_map_pages, struct address_space *mapping, unsigned long start,
	     unsigned long end)
{
	struct mm_user_fault *uf = user_fault();
	struct task_struct *task = bpf_get_current_task_btf();
	bool counted = false;
	if (uf && uf->tid == task->pid) {
		counted = uf->counted && faults_done(task) == uf->faults;
		uf->tid = 0;
	}
	u64 ino;
	u32 dev;
	if (file_of(mapping, &ino, &dev))
		mm_around(mapping, ino, dev, start, end, counted, true);
	return 0;
}

/* Set by mm_user_fault's first run: the programs that see PMD mappings
 * are attached (on demand, mmap.toml). */
u32 mm_pmd_watching SEC(".bss");

/* A user page fault begins: only a read of an absent page can map page
 * cache by fault-around (error code: bit 0 protection, bit 1 write). */
SEC("tp_btf/page_fault_user")
int BPF_PROG(mm_user_fault, unsigned long address, struct pt_regs *regs,
	     unsigned long error_code)
{
	if (!mm_pmd_watching)
		mm_pmd_watching = 1;
	/* Most faults are writes: they return here, and an earlier fault's
	 * entry left in the slot is seen to be over (faults_done). */
	if (error_code & 3)
		return 0;
	struct mm_user_fault *uf = user_fault();
	if (!uf)
		return 0;
	/* The thread from its task (a helper call fewer than asking). */
	struct task_struct *task = bpf_get_current_task_btf();
	uf->tid = task->pid;
	uf->counted = 0;
	uf->addr = address;
	uf->faults = faults_done(task);
	uf->file_rss = rss_shared(task->mm, MM_FILE_PAGES);
	uf->shmem_rss = rss_shared(task->mm, MM_SHMEM_PAGES);
	return 0;
}

struct vma_file_at {
	u64 addr;
	struct address_space *mapping;
	u64 index;
};

/* `vma` is typed: direct loads. */
static long vma_file_cb(struct task_struct *task, struct vm_area_struct *vma, void *ctx)
{
	struct vma_file_at *a = ctx;
	struct file *file = vma->vm_file;
	if (!file)
		return 0;
	a->mapping = file->f_mapping;
	a->index = ((a->addr - vma->vm_start) >> page_shift) + vma->vm_pgoff;
	return 0;
}

/* The fault's page-cache pages are mapped (a file system's or tmpfs's:
 * their RSS counters). A PMD-sized cached folio at the address was mapped
 * by fault-around whole: asked like fault-around's window. If it was
 * mapped page by page instead, the tracepoint that follows finds the same
 * folio already asked and the fault counted. */
SEC("tp_btf/rss_stat")
int BPF_PROG(mm_rss, struct mm_struct *mm, int member)
{
	/* Anonymous pages and swap entries (most RSS changes) return here. */
	if (member != MM_FILE_PAGES && member != MM_SHMEM_PAGES)
		return 0;
	struct mm_user_fault *uf = user_fault();
	struct task_struct *task = bpf_get_current_task_btf();
	if (!uf || uf->tid != task->pid || uf->counted)
		return 0;
	/* Only inside that fault: an unmap later (RSS down) is not it. */
	if (task->mm != mm || faults_done(task) != uf->faults) {
		uf->tid = 0;
		return 0;
	}
	/* Mapped page by page (the fault-around tracepoint follows: a
	 * window of 16 pages by default), or nothing new. A change reaches
	 * the shared count with the CPU's pending part (|pending| < batch
	 * <= 256) when their sum passes the batch: a PMD mapping's 512
	 * always, moving it by more than 256; fault-around's window moves
	 * it by less than batch + window, or not at all. The VMA and the
	 * page cache are looked at only for a move of more than 256. (The
	 * shared count also takes other CPUs' flushes: another thread of
	 * the process flushing about 512 pages' unmapping into it within
	 * this fault would hide one mapping.) */
	if (rss_batch_below_pmd && HAVE_RSS_SHARED) {
		s64 was = member == MM_SHMEM_PAGES ? uf->shmem_rss : uf->file_rss;
		s64 moved = rss_shared(mm, member) - was;
		if (moved <= PMD_PAGES / 2 && moved >= -PMD_PAGES / 2)
			return 0;
	}
	struct vma_file_at a = { .addr = uf->addr };
	long err = bpf_find_vma(task, a.addr, vma_file_cb, &a, 0);
	if (err == -EBUSY) {
		/* mmap_lock taken for a change (trylock): not lost silently. */
		count(targets_of(NULL), IOMON_C_MMAP_UNCHECKED, 1);
		return 0;
	}
	if (err || !a.mapping)
		return 0;
	/* Typed for direct loads, whatever the verifier kept of the
	 * pointer through the callback's store. */
	struct address_space *mapping = bpf_core_cast(a.mapping, struct address_space);
	unsigned long fo = cache_folio(mapping, a.index, true);
	u64 first;
	if (!fo || folio_at(fo, &first, true) < PMD_PAGES)
		return 0;
	u64 ino;
	u32 dev;
	if (!file_of(mapping, &ino, &dev))
		return 0;
	uf->counted = 1;
	mm_around(mapping, ino, dev, a.index, a.index, false, true);
	return 0;
}

SEC("tp_btf/mm_filemap_fault")
int BPF_PROG(mm_fault, struct address_space *mapping, unsigned long index)
{
	/* The handler maps what it looked up: not fault-around's. */
	struct mm_user_fault *uf = user_fault();
	if (uf)
		uf->tid = 0;
	u64 ino;
	u32 dev;
	if (file_of(mapping, &ino, &dev))
		mm_fault_at(mapping, ino, dev, index, true);
	return 0;
}

/* --------------------------------------------- routes fentry and kprobe */

/* fentry: `vmf` is typed, read by direct loads. */
SEC("fentry/filemap_map_pages")
int BPF_PROG(mm_map_pages_fentry, struct vm_fault *vmf, unsigned long start, unsigned long end)
{
	struct address_space *mapping = vmf->vma->vm_file->f_mapping;
	u64 ino;
	u32 dev;
	if (file_of(mapping, &ino, &dev))
		mm_around(mapping, ino, dev, start, end, false, has_rdonly_cast);
	return 0;
}

SEC("fentry/filemap_fault")
int BPF_PROG(mm_fault_fentry, struct vm_fault *vmf)
{
	struct address_space *mapping = vmf->vma->vm_file->f_mapping;
	u64 ino;
	u32 dev;
	if (file_of(mapping, &ino, &dev))
		mm_fault_at(mapping, ino, dev, vmf->pgoff, has_rdonly_cast);
	return 0;
}

/* kprobe: `vmf` is an address, read by probe reads. */
SEC("kprobe/filemap_map_pages")
int BPF_KPROBE(mm_map_pages_kprobe, struct vm_fault *vmf, unsigned long start, unsigned long end)
{
	struct address_space *mapping = BPF_CORE_READ(vmf, vma, vm_file, f_mapping);
	u64 ino;
	u32 dev;
	if (file_of_probed(mapping, &ino, &dev))
		mm_around(mapping, ino, dev, start, end, false, has_rdonly_cast);
	return 0;
}

SEC("kprobe/filemap_fault")
int BPF_KPROBE(mm_fault_kprobe, struct vm_fault *vmf)
{
	struct address_space *mapping = BPF_CORE_READ(vmf, vma, vm_file, f_mapping);
	u64 ino;
	u32 dev;
	if (file_of_probed(mapping, &ino, &dev))
		mm_fault_at(mapping, ino, dev, BPF_CORE_READ(vmf, pgoff), has_rdonly_cast);
	return 0;
}

/* Its part of a page-cache add (every route): pages added in a fault on
 * the file it faulted on. Pages a read adds are not the fault's: the read
 * syscall tells where the kernel can say (5.15+), else the pagecache
 * family's read entry (rd_active). */
static __always_inline void mm_on_add(struct page_cache_event *e)
{
	struct thread_state *t = pce_thread(e, false);
	if (!t || !t->mmap.flt_ns)
		return;
	bool reading = t->pagecache.rd_active;
	if (HAVE_TASK_PT_REGS)
		reading = is_read_syscall(pce_syscall(e));
	if (reading) {
		t->mmap.flt_ns = 0;
		return;
	}
	mm_added(t, e->ino, e->dev, e->index, e->n);
}

/* The tracepoint route's: a PMD-sized folio added before its PMD programs
 * run may be mapped by fault-around unseen (until they attach, at the
 * next tick): counted. */
static __always_inline void mm_on_add_tp(struct page_cache_event *e)
{
	if (e->n >= PMD_PAGES && !mm_pmd_watching)
		count(0, IOMON_C_MMAP_UNWATCHED, 1);
	mm_on_add(e);
}
