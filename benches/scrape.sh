#!/bin/sh
# Scrape latency and throughput of iomond's /metrics against
# prometheus-node-exporter's, side by side in one run, with wrk.
#   benches/scrape.sh            (as root; prints a markdown table)
# Needs: wrk, prometheus-node-exporter (Debian packages), a release build.
set -eu
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -q
state=$(mktemp -d /var/tmp/iomon-scrape.XXXXXX)
./target/release/iomond --dev --state-dir "$state" --interval 10s --metrics-listen 127.0.0.1:19477 >/dev/null 2>&1 &
iomond=$!
prometheus-node-exporter --web.listen-address=127.0.0.1:19100 >/dev/null 2>&1 &
node=$!
trap 'kill $iomond $node 2>/dev/null; wait 2>/dev/null; rm -rf "$state"' EXIT
sleep 3
size() { curl -s "$1" | wc -c; }
echo "| target | body bytes | connections | requests/s | p50 | p99 |"
echo "|---|---|---|---|---|---|"
for round in 1 2; do
	for c in 1 10 50; do
		t=$([ "$c" -ge 2 ] && echo 2 || echo 1)
		for target in iomond node_exporter; do
			case $target in
			iomond) url=http://127.0.0.1:19477/metrics ;;
			node_exporter) url=http://127.0.0.1:19100/metrics ;;
			esac
			out=$(wrk -t "$t" -c "$c" -d 8s --latency "$url")
			rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
			p50=$(echo "$out" | awk '$1=="50%" {print $2}')
			p99=$(echo "$out" | awk '$1=="99%" {print $2}')
			echo "| $target (round $round) | $(size "$url") | $c | $rps | $p50 | $p99 |"
		done
	done
done
