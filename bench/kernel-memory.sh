#!/usr/bin/env bash
# Kernel memory a ruleset takes: /proc/meminfo's Slab, SUnreclaim and
# VmallocUsed before and after `relayfw apply` in a fresh network
# namespace, and relayfw's own peak RSS for print and apply. Run as root:
#
#   bash bench/kernel-memory.sh RELAYFW_BINARY TORRC [BACKEND]
#
# Each measurement runs three times; the median is printed. Other load on
# the machine moves these numbers: run it on a quiet host.
set -euo pipefail
bin=$1 torrc=$2 backend=${3:-nftables}
cfg=$(mktemp)
printf '[allow]\nresolvers = ["192.0.2.53"]\n' >"$cfg"
ns=rfwkmem$$
trap 'ip netns del $ns 2>/dev/null || true; rm -f "$cfg" "$cfg.rss"' EXIT
kb() { awk -v k="$1:" '$1 == k {print $2}' /proc/meminfo; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A d
for round in 1 2 3; do
	ip netns add $ns
	sync; echo 2 >/proc/sys/vm/drop_caches
	declare -A before
	for k in Slab SUnreclaim VmallocUsed; do before[$k]=$(kb $k); done
	/usr/bin/time -o "$cfg.rss" -f %M ip netns exec $ns "$bin" --backend "$backend" --torrc "$torrc" --config "$cfg" apply >/dev/null 2>&1
	sleep 1
	for k in Slab SUnreclaim VmallocUsed; do d[$k]+="$(( $(kb $k) - ${before[$k]} )) "; done
	d[apply_rss]+="$(cat "$cfg.rss") "
	/usr/bin/time -o "$cfg.rss" -f %M "$bin" --backend "$backend" --torrc "$torrc" --config "$cfg" print >/dev/null 2>&1
	d[print_rss]+="$(cat "$cfg.rss") "
	ip netns del $ns
	sleep 1
done
for k in Slab SUnreclaim VmallocUsed apply_rss print_rss; do
	printf '%s_kB %s\n' "$k" "$(tr ' ' '\n' <<<"${d[$k]}" | grep . | median)"
done
