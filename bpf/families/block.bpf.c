// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* block: disk requests and the I/O each process submitted
 * (bpf/families/block.toml). */

/* 5.10's names for two records that later kernels renamed (same fields:
 * CO-RE finds each field where the running kernel has it). */
struct trace_event_raw_block_rq_complete___5_10 {
	dev_t dev;
	sector_t sector;
	unsigned int nr_sector;
	int error;
	char rwbs[8];
} __attribute__((preserve_access_index));

struct trace_event_raw_block_get_rq___5_10 {
	dev_t dev;
	sector_t sector;
	unsigned int nr_sector;
	char rwbs[8];
} __attribute__((preserve_access_index));

struct trace_event_raw_block_bio_merge___5_10 {
	dev_t dev;
	sector_t sector;
	unsigned int nr_sector;
	char rwbs[8];
} __attribute__((preserve_access_index));

/* A request in flight, known by device and first sector: the classic
 * tracepoints carry no request pointer. */
struct blk_key {
	u32 dev;
	u32 pad;
	u64 sector;
};

struct blk_times {
	u64 alloc_ns; /* the request was allocated for a bio, 0 if not seen */
	u64 issue_ns; /* sent to the device, 0 until then */
};

/* Requests between allocation or issue and completion. Bounded by
 * max_entries, and an LRU: a request that never completes (a device
 * pulled) cannot hold its slot for good, and past 8,192 in flight the
 * oldest is forgotten; its completion is then counted in `unmatched`,
 * outside the latency histograms. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct blk_key);
	__type(value, struct blk_times);
} block_inflight SEC(".maps");

/* The operation from the record's rwbs: a leading 'F' is a preflush, then
 * the operation ('F' again for a flush request); an empty preflush write
 * (what fsync sends) is a flush. */
static __always_inline u32 blk_op(char c0, char c1, u32 nr_sector)
{
	if (c0 == 'F') {
		if (c1 == 'W' && nr_sector)
			return IOMON_BLOCK_OP_WRITE;
		if (c1 == 'R')
			return IOMON_BLOCK_OP_READ;
		return IOMON_BLOCK_OP_FLUSH;
	}
	if (c0 == 'R')
		return IOMON_BLOCK_OP_READ;
	if (c0 == 'W')
		return IOMON_BLOCK_OP_WRITE;
	if (c0 == 'D')
		return IOMON_BLOCK_OP_DISCARD;
	return IOMON_BLOCK_OP_OTHER;
}

/* What both routes count, once they know the device, the operation and
 * the times. */

/* A write of no bytes: what a flush leaves of an fsync's empty preflush
 * write (the kernel takes the preflush off it, sends the device its own
 * flush request, then completes the write without issuing it; at once
 * where the device has no write cache). Without an issue time it is
 * `unissued`, not `unmatched`: nothing was lost. */
static __always_inline bool blk_empty_write(u32 op, u64 bytes)
{
	return op == IOMON_BLOCK_OP_WRITE && !bytes;
}

/* A request goes to the device `ns` after it was allocated (plugged, in
 * the I/O scheduler, waiting for dispatch), counted for the host and in
 * its device's row `r`: at the issue on the classic route, at the
 * completion on tp_btf (blk_done's `alloc`). */
static __always_inline void blk_queued(u64 *r, u64 ns)
{
	u32 b = hist_bucket(ns);
	count(0, IOMON_C_BLOCK_QUEUED_NS, ns);
	hist_add(0, IOMON_H_BLOCK_QUEUED, b);
	row_count(BLOCK, r, IOMON_C_BLOCK_QUEUED_NS, ns);
	row_hist(BLOCK, r, IOMON_H_BLOCK_QUEUED, b);
}

/* Bytes a request, or a part of one (blk_part), completed: for the host
 * and in its device's row `r`. */
static __always_inline void blk_bytes(u64 *r, u32 op, u64 bytes)
{
	count(0, IOMON_C_BLOCK_BYTES + op, bytes);
	row_count(BLOCK, r, IOMON_C_BLOCK_BYTES + op, bytes);
}

/* A request completes (`bytes`: of its last part, see blk_part; `issued`:
 * when it went to the device, 0 if not seen; `alloc`: when it was
 * allocated, where its time queued is counted now, else 0; `passthrough`:
 * a command sent as it is, which the issue program is not attached for
 * alone, see blk_complete_btf). */
static __always_inline int blk_done(u32 dev, u32 op, u64 bytes, bool error, u64 issued, u64 alloc,
				    bool passthrough)
{
	u64 *r = row_of(&block_rows, dev, &zero_block_row);
	count(0, IOMON_C_BLOCK_REQUESTS + op, 1);
	row_count(BLOCK, r, IOMON_C_BLOCK_REQUESTS + op, 1);
	blk_bytes(r, op, bytes);
	if (error) {
		count(0, IOMON_C_BLOCK_ERRORS + op, 1);
		row_count(BLOCK, r, IOMON_C_BLOCK_ERRORS + op, 1);
	}
	if (!issued) {
		u32 c = IOMON_C_BLOCK_UNMATCHED;
		if (passthrough)
			c = IOMON_C_BLOCK_UNTIMED_PASSTHROUGH;
		else if (blk_empty_write(op, bytes))
			c = IOMON_C_BLOCK_UNISSUED;
		count(0, c, 1);
		row_count(BLOCK, r, c, 1);
		return 0;
	}
	if (alloc && alloc <= issued)
		blk_queued(r, issued - alloc);
	u64 ns = bpf_ktime_get_ns() - issued;
	u32 b = hist_bucket(ns);
	count(0, IOMON_C_BLOCK_LATENCY_NS, ns);
	hist_add(0, IOMON_H_BLOCK_LATENCY, b);
	row_count(BLOCK, r, IOMON_C_BLOCK_LATENCY_NS, ns);
	row_hist(BLOCK, r, IOMON_H_BLOCK_LATENCY, b);
	if (op == IOMON_BLOCK_OP_READ) {
		count(0, IOMON_C_BLOCK_READ_LATENCY_NS, ns);
		hist_add(0, IOMON_H_BLOCK_READ_LATENCY, b);
		row_count(BLOCK, r, IOMON_C_BLOCK_READ_LATENCY_NS, ns);
		row_hist(BLOCK, r, IOMON_H_BLOCK_READ_LATENCY, b);
	}
	return 0;
}

/* A bio reaching a request-based device, in the task that submitted it: a
 * new request, or merged into one. Its targets are its process's (matched
 * in the process's entry, which the bio is attributed to anyway: no
 * per-thread state for a thread that only submits I/O). */
static __always_inline int blk_bio(u32 dev, u32 op, u64 bytes)
{
	u32 tm;
	struct iomon_proc *p = proc_entry_tm(&tm);
	u64 *r = row_of(&block_rows, dev, &zero_block_row);
	count(tm, IOMON_C_BLOCK_SUBMITTED + op, 1);
	row_count(BLOCK, r, IOMON_C_BLOCK_SUBMITTED + op, 1);
	if (!bytes)
		return 0;
	count(tm, IOMON_C_BLOCK_SUBMITTED_BYTES + op, bytes);
	row_count(BLOCK, r, IOMON_C_BLOCK_SUBMITTED_BYTES + op, bytes);
	if (op == IOMON_BLOCK_OP_READ)
		proc_add(p, IOMON_P_BLOCK_READ_BYTES, bytes);
	else if (op == IOMON_BLOCK_OP_WRITE)
		proc_add(p, IOMON_P_BLOCK_WRITE_BYTES, bytes);
	return 0;
}

/* A request in flight in `map` (either route's), by its `key`: allocated,
 * sent to the device (the time since it was allocated, 0 if that was not
 * seen), completed (when it was sent, 0 if not seen; the entry goes). */
static __always_inline void blk_alloc_at(void *map, void *key)
{
	struct blk_times v = { .alloc_ns = bpf_ktime_get_ns() };
	bpf_map_update_elem(map, key, &v, BPF_ANY);
}

static __always_inline u64 blk_issue_at(void *map, void *key, u64 now)
{
	u64 queued = 0;
	struct blk_times *v = bpf_map_lookup_elem(map, key);
	if (!v) {
		struct blk_times n = { .issue_ns = now };
		bpf_map_update_elem(map, key, &n, BPF_ANY);
		return 0;
	}
	if (v->alloc_ns && !v->issue_ns)
		queued = now - v->alloc_ns;
	v->issue_ns = now;
	return queued;
}

static __always_inline u64 blk_complete_at(void *map, void *key)
{
	struct blk_times *v = bpf_map_lookup_elem(map, key);
	u64 issued = v ? v->issue_ns : 0;
	if (v)
		bpf_map_delete_elem(map, key);
	return issued;
}

/* Route tracepoint: the classic tracepoints. */

SEC("tracepoint/block/block_rq_issue")
int blk_issue(struct trace_event_raw_block_rq *ctx)
{
	struct blk_key k = { .dev = ctx->dev, .sector = ctx->sector };
	u64 queued = blk_issue_at(&block_inflight, &k, bpf_ktime_get_ns());
	if (queued)
		blk_queued(row_of(&block_rows, k.dev, &zero_block_row), queued);
	return 0;
}

static __always_inline int blk_completed(u32 dev, u64 sector, u32 nr_sector, int error, char c0,
					 char c1)
{
	/* The issue event says 0 where a request has no position (passthrough
	 * commands: (sector_t)-1), the completion event the position itself. */
	if (sector == (u64)-1)
		sector = 0;
	struct blk_key k = { .dev = dev, .sector = sector };
	u64 issued = blk_complete_at(&block_inflight, &k);
	return blk_done(dev, blk_op(c0, c1, nr_sector), (u64)nr_sector << 9, error, issued, 0, false);
}

SEC("tracepoint/block/block_rq_complete")
int blk_complete(void *ctx)
{
	if (bpf_core_type_exists(struct trace_event_raw_block_rq_completion)) {
		struct trace_event_raw_block_rq_completion *c = ctx;
		return blk_completed(c->dev, c->sector, c->nr_sector, c->error, c->rwbs[0],
				     c->rwbs[1]);
	}
	struct trace_event_raw_block_rq_complete___5_10 *c = ctx;
	return blk_completed(c->dev, c->sector, c->nr_sector, c->error, c->rwbs[0], c->rwbs[1]);
}

static __always_inline int blk_submitted(u32 dev, u32 nr_sector, char c0, char c1)
{
	return blk_bio(dev, blk_op(c0, c1, nr_sector), (u64)nr_sector << 9);
}

/* A bio gets a new request, which starts at the bio's sector: the
 * request's allocation, and the bio. */
static __always_inline int blk_allocated(u32 dev, u64 sector, u32 nr_sector, char c0, char c1)
{
	struct blk_key k = { .dev = dev, .sector = sector };
	blk_alloc_at(&block_inflight, &k);
	return blk_submitted(dev, nr_sector, c0, c1);
}

SEC("tracepoint/block/block_getrq")
int blk_getrq(void *ctx)
{
	if (bpf_core_type_exists(struct trace_event_raw_block_bio)) {
		struct trace_event_raw_block_bio *b = ctx;
		return blk_allocated(b->dev, b->sector, b->nr_sector, b->rwbs[0], b->rwbs[1]);
	}
	struct trace_event_raw_block_get_rq___5_10 *b = ctx;
	return blk_allocated(b->dev, b->sector, b->nr_sector, b->rwbs[0], b->rwbs[1]);
}

/* A bio merged into a request (`front`: in front of it, so the request
 * now starts at the bio's sector: its entry, known by its first sector
 * until now, moves there). */
static __always_inline int blk_merged(u32 dev, u64 sector, u32 nr_sector, char c0, char c1,
				      bool front)
{
	if (front) {
		struct blk_key was = { .dev = dev, .sector = sector + nr_sector };
		struct blk_times *v = bpf_map_lookup_elem(&block_inflight, &was);
		if (v) {
			struct blk_key k = { .dev = dev, .sector = sector };
			struct blk_times t = *v;
			bpf_map_update_elem(&block_inflight, &k, &t, BPF_ANY);
			bpf_map_delete_elem(&block_inflight, &was);
		}
	}
	return blk_submitted(dev, nr_sector, c0, c1);
}

static __always_inline int blk_merged_ctx(void *ctx, bool front)
{
	if (bpf_core_type_exists(struct trace_event_raw_block_bio)) {
		struct trace_event_raw_block_bio *b = ctx;
		return blk_merged(b->dev, b->sector, b->nr_sector, b->rwbs[0], b->rwbs[1], front);
	}
	struct trace_event_raw_block_bio_merge___5_10 *b = ctx;
	return blk_merged(b->dev, b->sector, b->nr_sector, b->rwbs[0], b->rwbs[1], front);
}

SEC("tracepoint/block/block_bio_backmerge")
int blk_backmerge(void *ctx) { return blk_merged_ctx(ctx, false); }

SEC("tracepoint/block/block_bio_frontmerge")
int blk_frontmerge(void *ctx) { return blk_merged_ctx(ctx, true); }

/* Route tp_btf (5.11+, where these events pass the request or the bio
 * first): the same counts, read from the request itself. Its fields are
 * read by direct, BTF-typed loads (no helper call; a NULL pointer on the
 * way reads 0). The kernel stamps a request when it is allocated
 * (start_time_ns, where it keeps I/O stats or a scheduler runs) and, on a
 * queue that keeps completion stats (QUEUE_FLAG_STATS: writeback
 * throttling, on by default, sets it), when it is issued
 * (io_start_time_ns, after this event): then no map is needed, and the
 * issue has nothing to count: the completion counts the time queued
 * (allocation to issue) with the rest. On a queue without them the issue
 * time goes into block_rq_times, by address: the issue program is
 * attached for that once a completion on such a queue found neither
 * (`unstamped`, the route's `when` in block.toml), and runs on no event
 * before. */

/* Requests between issue and completion on a queue without completion
 * stats, by address. Bounded by max_entries, an LRU for the same reasons
 * as block_inflight. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, u64);
	__type(value, struct blk_times);
} block_rq_times SEC(".maps");

/* Set by tests only: every request's issue time in block_rq_times, as on
 * a queue without completion stats (that path, tested on any device). */
const volatile bool blk_no_rq_stamps = false;

/* Before 5.19 a request names its disk itself. */
struct request___rq_disk {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

#define BLK_REQ_OP_MASK 0xff

/* The operation from a request's or bio's flags, as the tracepoints'
 * rwbs would say it (blk_fill_rwbs): an empty preflush write is a flush. */
static __always_inline u32 blk_op_flags(u32 opf, u64 bytes)
{
	u32 op = opf & BLK_REQ_OP_MASK;
	u32 preflush = 1U << bpf_core_enum_value(enum req_flag_bits, __REQ_PREFLUSH);
	if (op == 1 && (opf & preflush) && !bytes)
		return IOMON_BLOCK_OP_FLUSH;
	switch (op) {
	case 0:
		return IOMON_BLOCK_OP_READ;
	case 1:
	case 7: /* REQ_OP_WRITE_SAME, before 5.18 */
		return IOMON_BLOCK_OP_WRITE;
	case 2:
		return IOMON_BLOCK_OP_FLUSH;
	case 3:
	case 5: /* REQ_OP_SECURE_ERASE */
		return IOMON_BLOCK_OP_DISCARD;
	default:
		return IOMON_BLOCK_OP_OTHER;
	}
}

/* The disk of a request, as the kernel encodes dev_t (MAJOR << 20 |
 * MINOR), or 0. */
static __always_inline u32 blk_rq_dev(struct request *rq)
{
	struct gendisk *disk;
	struct request___rq_disk *old = (void *)rq;
	if (bpf_core_field_exists(old->rq_disk))
		disk = old->rq_disk;
	else
		disk = rq->q->disk;
	if (!disk)
		return 0;
	return (u32)disk->major << 20 | (u32)disk->first_minor;
}

/* A passthrough request (a command a driver or an ioctl sends as it is:
 * SMART queries, NVMe and SCSI passthrough): REQ_OP_DRV_IN/OUT (34, 35),
 * before 5.18 also REQ_OP_SCSI_IN/OUT (32, 33). */
static __always_inline bool blk_passthrough(struct request *rq)
{
	u32 op = rq->cmd_flags & BLK_REQ_OP_MASK;
	return op >= 32 && op <= 35;
}

/* Whether the request's queue stamps issue times (QUEUE_FLAG_STATS, which
 * the kernel sets exactly while a stats callback is registered or
 * accounting is on: read from those, the flag's bit number moves between
 * kernels). Not for a passthrough request: newer kernels leave those out
 * of their stats and do not stamp them (where one did, its stamp is still
 * what the completion reads). */
static __always_inline bool blk_stamps_issue(struct request *rq)
{
	struct blk_queue_stats *st = rq->q->stats;
	if (blk_no_rq_stamps || !st || blk_passthrough(rq))
		return false;
	if (st->accounting)
		return true;
	return (u64)st->callbacks.next != (u64)&st->callbacks;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(blk_issue_btf, struct request *rq)
{
	if (!blk_stamps_issue(rq)) {
		u64 k = (u64)rq;
		struct blk_times v = { .issue_ns = bpf_ktime_get_ns() };
		bpf_map_update_elem(&block_rq_times, &k, &v, BPF_ANY);
	}
	return 0;
}

/* A request's device did part of it (a SCSI disk's medium error after good
 * sectors): the kernel completes that part, and the event runs for each
 * part with its bytes, the request still in flight until its last (the
 * bytes left, __data_len, only go down after the event). Each part's bytes
 * count as they complete; the request, its error, latency and time
 * queued once, at its last part. (The classic tracepoints carry no bytes
 * left: there each part counts as a request.) */
static __always_inline int blk_part(struct request *rq, u64 bytes)
{
	u64 *r = row_of(&block_rows, blk_rq_dev(rq), &zero_block_row);
	blk_bytes(r, blk_op_flags(rq->cmd_flags, bytes), bytes);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(blk_complete_btf, struct request *rq, int error, unsigned int nr_bytes)
{
	if (nr_bytes < rq->__data_len)
		return blk_part(rq, nr_bytes);
	u32 op = blk_op_flags(rq->cmd_flags, nr_bytes);
	u64 issued = blk_no_rq_stamps ? 0 : rq->io_start_time_ns;
	bool passthrough = blk_passthrough(rq);
	if (!issued || passthrough) {
		/* The entry goes either way; the kernel's stamp where it set one. */
		u64 k = (u64)rq;
		u64 mine = blk_complete_at(&block_rq_times, &k);
		if (!issued)
			issued = mine;
		/* No time from either, where only the issue program can give
		 * one (not a write that was never issued): the sign that
		 * attaches it (it runs on no event before). Not a passthrough
		 * command's: a host's SMART or temperature queries (NVMe admin
		 * commands, every scrape of hwmon) would attach it for good,
		 * and it would run on every request for them; they are counted
		 * untimed instead (timed where it runs for another queue). */
		if (!issued && !passthrough && !blk_empty_write(op, nr_bytes) &&
		    !blk_stamps_issue(rq))
			count(0, IOMON_C_BLOCK_UNSTAMPED, 1);
	}
	/* An int before 5.17, a one-byte blk_status_t since: its low byte. */
	return blk_done(blk_rq_dev(rq), op, nr_bytes, error & 0xff, issued, rq->start_time_ns,
			passthrough);
}

/* A bio reaching a request-based device: its device (a partition's is
 * named as its disk in userspace), size and flags (5.12+: bi_bdev). */
static __always_inline int blk_bio_submitted(struct bio *bio)
{
	u32 size = bio->bi_iter.bi_size;
	return blk_bio(bio->bi_bdev->bd_dev, blk_op_flags(bio->bi_opf, size), size);
}

SEC("tp_btf/block_getrq")
int BPF_PROG(blk_getrq_btf, struct bio *bio) { return blk_bio_submitted(bio); }

SEC("tp_btf/block_bio_backmerge")
int BPF_PROG(blk_backmerge_btf, struct bio *bio) { return blk_bio_submitted(bio); }

SEC("tp_btf/block_bio_frontmerge")
int BPF_PROG(blk_frontmerge_btf, struct bio *bio) { return blk_bio_submitted(bio); }
