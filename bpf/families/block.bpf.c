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
	u64 insert_ns; /* given to the I/O scheduler, 0 if it was not */
	u64 issue_ns;  /* sent to the device, 0 until then */
};

/* Requests between insert or issue and completion. Bounded by
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

SEC("tracepoint/block/block_rq_insert")
int blk_insert(struct trace_event_raw_block_rq *ctx)
{
	struct blk_key k = { .dev = ctx->dev, .sector = ctx->sector };
	struct blk_times v = { .insert_ns = bpf_ktime_get_ns() };
	bpf_map_update_elem(&block_inflight, &k, &v, BPF_ANY);
	return 0;
}

SEC("tracepoint/block/block_rq_issue")
int blk_issue(struct trace_event_raw_block_rq *ctx)
{
	struct blk_key k = { .dev = ctx->dev, .sector = ctx->sector };
	u64 now = bpf_ktime_get_ns();
	struct blk_times *v = bpf_map_lookup_elem(&block_inflight, &k);
	if (!v) {
		struct blk_times n = { .issue_ns = now };
		bpf_map_update_elem(&block_inflight, &k, &n, BPF_ANY);
		return 0;
	}
	if (v->insert_ns && !v->issue_ns) {
		u64 ns = now - v->insert_ns;
		u64 *r = row_of(&block_rows, k.dev, &zero_block_row);
		count(0, IOMON_C_BLOCK_QUEUED_NS, ns);
		hist_add(0, IOMON_H_BLOCK_QUEUED, ns);
		row_count(BLOCK, r, IOMON_C_BLOCK_QUEUED_NS, ns);
		row_hist(BLOCK, r, IOMON_H_BLOCK_QUEUED, ns);
	}
	v->issue_ns = now;
	return 0;
}

static __always_inline int blk_completed(u32 dev, u64 sector, u32 nr_sector, int error, char c0,
					 char c1)
{
	u32 op = blk_op(c0, c1, nr_sector);
	u64 bytes = (u64)nr_sector << 9;
	u64 *r = row_of(&block_rows, dev, &zero_block_row);
	count(0, IOMON_C_BLOCK_REQUESTS + op, 1);
	count(0, IOMON_C_BLOCK_BYTES + op, bytes);
	row_count(BLOCK, r, IOMON_C_BLOCK_REQUESTS + op, 1);
	row_count(BLOCK, r, IOMON_C_BLOCK_BYTES + op, bytes);
	if (error) {
		count(0, IOMON_C_BLOCK_ERRORS + op, 1);
		row_count(BLOCK, r, IOMON_C_BLOCK_ERRORS + op, 1);
	}
	struct blk_key k = { .dev = dev, .sector = sector };
	struct blk_times *v = bpf_map_lookup_elem(&block_inflight, &k);
	u64 issued = v ? v->issue_ns : 0;
	if (v)
		bpf_map_delete_elem(&block_inflight, &k);
	if (!issued) {
		count(0, IOMON_C_BLOCK_UNMATCHED, 1);
		row_count(BLOCK, r, IOMON_C_BLOCK_UNMATCHED, 1);
		return 0;
	}
	u64 ns = bpf_ktime_get_ns() - issued;
	count(0, IOMON_C_BLOCK_LATENCY_NS, ns);
	hist_add(0, IOMON_H_BLOCK_LATENCY, ns);
	row_count(BLOCK, r, IOMON_C_BLOCK_LATENCY_NS, ns);
	row_hist(BLOCK, r, IOMON_H_BLOCK_LATENCY, ns);
	if (op == IOMON_BLOCK_OP_READ) {
		count(0, IOMON_C_BLOCK_READ_LATENCY_NS, ns);
		hist_add(0, IOMON_H_BLOCK_READ_LATENCY, ns);
		row_count(BLOCK, r, IOMON_C_BLOCK_READ_LATENCY_NS, ns);
		row_hist(BLOCK, r, IOMON_H_BLOCK_READ_LATENCY, ns);
	}
	return 0;
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

/* A bio reaching a request-based device, in the task that submitted it: a
 * new request, or merged into one. */
static __always_inline int blk_submitted(u32 dev, u32 nr_sector, char c0, char c1)
{
	u32 op = blk_op(c0, c1, nr_sector);
	u64 bytes = (u64)nr_sector << 9;
	u32 tm = targets_of(NULL);
	u64 *r = row_of(&block_rows, dev, &zero_block_row);
	count(tm, IOMON_C_BLOCK_SUBMITTED + op, 1);
	row_count(BLOCK, r, IOMON_C_BLOCK_SUBMITTED + op, 1);
	if (!bytes)
		return 0;
	count(tm, IOMON_C_BLOCK_SUBMITTED_BYTES + op, bytes);
	row_count(BLOCK, r, IOMON_C_BLOCK_SUBMITTED_BYTES + op, bytes);
	if (op == IOMON_BLOCK_OP_READ)
		proc_add(proc_entry(tm), IOMON_P_BLOCK_READ_BYTES, bytes);
	else if (op == IOMON_BLOCK_OP_WRITE)
		proc_add(proc_entry(tm), IOMON_P_BLOCK_WRITE_BYTES, bytes);
	return 0;
}

SEC("tracepoint/block/block_getrq")
int blk_getrq(void *ctx)
{
	if (bpf_core_type_exists(struct trace_event_raw_block_bio)) {
		struct trace_event_raw_block_bio *b = ctx;
		return blk_submitted(b->dev, b->nr_sector, b->rwbs[0], b->rwbs[1]);
	}
	struct trace_event_raw_block_get_rq___5_10 *b = ctx;
	return blk_submitted(b->dev, b->nr_sector, b->rwbs[0], b->rwbs[1]);
}

static __always_inline int blk_merged(void *ctx)
{
	if (bpf_core_type_exists(struct trace_event_raw_block_bio)) {
		struct trace_event_raw_block_bio *b = ctx;
		return blk_submitted(b->dev, b->nr_sector, b->rwbs[0], b->rwbs[1]);
	}
	struct trace_event_raw_block_bio_merge___5_10 *b = ctx;
	return blk_submitted(b->dev, b->nr_sector, b->rwbs[0], b->rwbs[1]);
}

SEC("tracepoint/block/block_bio_backmerge")
int blk_backmerge(void *ctx) { return blk_merged(ctx); }

SEC("tracepoint/block/block_bio_frontmerge")
int blk_frontmerge(void *ctx) { return blk_merged(ctx); }
