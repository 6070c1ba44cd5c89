#!/bin/bash
# Before/after: the probe benchmark of an earlier revision and of this
# checkout, run alternately in one session on this machine (figures from
# different days or machines do not compare: this one is shared and
# noisy). Prints, per family and workload, the ns each adds per call
# (median over the rounds) before and after, and after/before; and the
# drain's time per size.
#
#   benches/before-after.sh [REV] [ROUNDS]     # default: the last release tag or HEAD~1, 4 rounds
#   BEFORE_AFTER_KEEP=/tmp/ba benches/before-after.sh REV   # and keep the raw tables (in a new directory)
#
# Needs root (BPF). The earlier revision is built in a git worktree under
# target/before-after (left there for the next run). A tracefs the run
# mounted (older revisions' benchmarks leave theirs) is unmounted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
rev=${1:-HEAD~1}
rounds=${2:-4}
wt=target/before-after/$(git rev-parse --short "$rev")
# BEFORE_AFTER_KEEP=DIR keeps each run's raw output there (the events
# tables with bpftrace's columns, the programs tables' other columns).
if [ -n "${BEFORE_AFTER_KEEP:-}" ]; then
	out=$BEFORE_AFTER_KEEP
	mkdir -p "$out"
	# The tables below read every round file there: an older run's would mix in.
	if compgen -G "$out/*.events.*" >/dev/null || compgen -G "$out/*.programs.*" >/dev/null; then
		echo "before-after: $out already holds rounds of an earlier run; name an empty directory" >&2
		exit 1
	fi
	tmp_out=
else
	out=$(mktemp -d)
	tmp_out=$out
fi
# Older revisions' benchmarks mount tracefs and leave it: unmount what
# this run left mounted (lazily, as iomond does), not what was there.
tracefs=/sys/kernel/tracing
if [ -d $tracefs/events ]; then
	tracefs_before=1
else
	tracefs_before=
fi
clean_up() {
	if [ -z "$tracefs_before" ] && [ -d $tracefs/events ]; then
		umount -l $tracefs || echo "before-after: could not unmount $tracefs, which this run mounted" >&2
	fi
	if [ -n "$tmp_out" ]; then rm -rf "$tmp_out"; fi
}
trap clean_up EXIT
if [ ! -d "$wt" ]; then
	git worktree add -f --detach "$wt" "$rev" >/dev/null
fi
bench_of() { # dir -> path of its probes bench binary
	(cd "$1" && cargo bench --locked --no-run --bench probes --message-format=json 2>/dev/null) |
		grep '"kind":\["bench"\]' | grep '"name":"probes"' |
		sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1
}
before=$(bench_of "$wt")
after=$(bench_of .)
[ -x "$before" ] && [ -x "$after" ] || { echo "before-after: could not build both benchmarks" >&2; exit 1; }
echo "before: $(git -C "$wt" log -1 --format='%h %s' | cut -c1-70)"
echo "after:  $(git log -1 --format='%h %s' | cut -c1-70)$(git diff --quiet || echo ' (+ uncommitted)')"
for r in $(seq "$rounds"); do
	# Alternate which goes first: no side always runs on a fresher machine.
	order="before after"
	[ $((r % 2)) -eq 0 ] && order="after before"
	for side in $order; do
		bin=$before
		[ $side = after ] && bin=$after
		"$bin" events --rounds 1 >"$out/$side.events.$r" 2>/dev/null
		"$bin" programs >"$out/$side.programs.$r" 2>/dev/null
		"$bin" drain --rounds 1 >"$out/$side.drain.$r" 2>/dev/null
	done
	echo "  round $r of $rounds done" >&2
done
# events: "iomon:<fam>" rows hold, per workload, "median [lo-hi] +added".
awk -v rounds="$rounds" '
FNR == 1 { side = FILENAME; sub(/.*\//, "", side); sub(/\..*/, "", side) }
/^config/ { n = 0; for (i = 2; i <= NF; i++) wl[++n] = $i; nw = n; next }
/^iomon:/ {
	cfg = $1; line = $0; sub(/^[^ ]+ +/, "", line)
	for (w = 1; w <= nw; w++) {
		# median [ lo- hi] added
		match(line, /[-+]?[0-9.]+ \[ *[0-9]+- *[0-9]+\] +[-+][0-9.]+/)
		f = substr(line, RSTART, RLENGTH); line = substr(line, RSTART + RLENGTH)
		k = split(f, p, " "); added = p[k]
		v[side, cfg, wl[w], ++cnt[side, cfg, wl[w]]] = added + 0
		cfgs[cfg] = 1; wls[wl[w]] = w
	}
}
function med(side, cfg, w,   n, i, j, t, a) {
	n = cnt[side, cfg, w]; for (i = 1; i <= n; i++) a[i] = v[side, cfg, w, i]
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return a[int((n + 1) / 2)]
}
END {
	print "\nns added per call over no probes, median of " rounds " rounds: before -> after (after/before where both are over 5 ns)"
	split("fadvise:fadvise fadvise:getppid reads:pread1 reads:getppid pagecache:read4k pagecache:pread1 mmap:mmap-small mmap:mmap-page mmap:anon-fault writeback:write4k default:fadvise default:read4k default:write4k default:getppid default:anon-fault", pairs, " ")
	for (i = 1; i in pairs; i++) {
		split(pairs[i], fw, ":"); cfg = "iomon:" fw[1]; w = fw[2]
		if (!((cfg) in cfgs) || !cnt["after", cfg, w]) continue
		# A workload the earlier revision did not have: its side is n/a.
		if (!cnt["before", cfg, w]) {
			printf "  %-16s %-11s      n/a -> %+8.1f  -\n", cfg, w, med("after", cfg, w)
			continue
		}
		b = med("before", cfg, w); a = med("after", cfg, w)
		r = (b > 5 && a > 5) ? sprintf("%.2f", a / b) : "-"
		printf "  %-16s %-11s %+8.1f -> %+8.1f  %s\n", cfg, w, b, a, r
	}
}' "$out"/before.events.* "$out"/after.events.*
# programs: rows "family program runs ns/run" (the kernel's BPF run stats;
# newer revisions add columns with the default targets set and with the
# benchmark a target; the first is compared).
awk '
FNR == 1 { side = FILENAME; sub(/.*\//, "", side); sub(/\..*/, "", side) }
NF >= 4 && NF <= 6 && $3 ~ /^[0-9]+$/ && $4 ~ /^[0-9.]+$/ { v[side, $2] = v[side, $2] " " $4; progs[$2] = $1 }
function med(list,   n, a, i, j, t) {
	n = split(list, a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return a[int((n + 1) / 2)]
}
END {
	print "\nns inside each BPF program per run (kernel.bpf_stats_enabled), median: before -> after"
	for (p in progs) if (((("before") SUBSEP p) in v) && ((("after") SUBSEP p) in v)) {
		b = med(v["before", p]); a = med(v["after", p])
		printf "  %-10s %-24s %7.1f -> %7.1f  %.2f\n", progs[p], p, b, a, a / b
	}
}' "$out"/before.programs.* "$out"/after.programs.* | sort -k1,1 -s
# drain: rows "procs batch key-by-key ratio flip", batch is "median [lo-hi]".
awk '
FNR == 1 { side = FILENAME; sub(/.*\//, "", side); sub(/\..*/, "", side) }
/^ *[0-9]+ +[0-9.]+/ { n = $1; b[side, n] = b[side, n] " " $2; sizes[n] = 1 }
END {
	print "\ndrain: ms to take N processes from the per-process map (batch), each round: before | after"
	for (n in sizes) printf "  %6d procs  %-28s | %s\n", n, b["before", n], b["after", n]
}' "$out"/before.drain.* "$out"/after.drain.*
