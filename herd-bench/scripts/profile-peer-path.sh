#!/bin/bash
# Profile and count syscalls of a default herd under herd-bench iamat
# (docs/asyncio.md, "The herd path (issue 14)").
#   profile-peer-path.sh perf   BIN OUT [SECS]      perf record -g (dwarf) the servers other than Riley
#   profile-peer-path.sh stat   BIN OUT [RATE SECS] perf stat syscall counts of all five, open loop
#   profile-peer-path.sh strace BIN OUT [RATE SECS] strace -f every server (finds empty calls)
# BIN holds proxy-herd and places-offline (HERD_BENCH_BIN_DIR); herd-bench
# is taken from HERD_BENCH (default: target/release/herd-bench). Root or
# perf_event_paranoid <= 1 for perf; then:
#   perf script -i OUT/perf.data -F comm,pid,ip,sym,dso > OUT/script.txt
#   python3 herd-bench/scripts/perf_parts.py OUT/script.txt
#   python3 herd-bench/scripts/strace_sum.py OUT
set -u
mode=$1; bin=$2; out=$3
hb=${HERD_BENCH:-target/release/herd-bench}
mkdir -p "$out"
case $mode in
  perf) secs=${4:-4}; args=(iamat -d $((secs + 6))) ;;
  stat|strace) rate=${4:-5000}; secs=${5:-3}; args=(iamat --rate "$rate" -d $((secs + 6))) ;;
  *) echo "usage: $0 perf|stat|strace BIN OUT [...]" >&2; exit 2 ;;
esac
[ "$mode" = strace ] && args+=(--keep)
HERD_BENCH_BIN_DIR=$bin "$hb" "${args[@]}" --json "$out/bench.json" > "$out/bench.txt" 2>&1 &
bench=$!
pids=""
for _ in $(seq 200); do
  pids=$(pgrep -P $bench -x proxy-herd | tr '\n' ' ')
  [ "$(echo $pids | wc -w)" = 5 ] && break
  sleep 0.05
done
[ "$(echo $pids | wc -w)" = 5 ] || { echo "the herd did not start" >&2; wait $bench; exit 1; }
sleep 3 # the warm-up and the links
case $mode in
  perf)
    others=""
    for p in $pids; do
      [ "$(tr '\0' '\n' < /proc/$p/cmdline | tail -1)" != Riley ] && others="$others,$p"
    done
    perf record -F 499 --call-graph dwarf,16384 -p "${others#,}" -o "$out/perf.data" -- sleep "$secs" > "$out/perf.out" 2>&1 ;;
  stat)
    perf stat -e 'syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,raw_syscalls:sys_enter' \
      -p "$(echo $pids | tr ' ' ',')" -- sleep "$secs" > "$out/stat.txt" 2>&1 ;;
  strace)
    for p in $pids; do
      name=$(tr '\0' '\n' < /proc/$p/cmdline | tail -1)
      timeout -s INT "$secs" strace -f -qq -ttt -o "$out/st.$name" -p "$p" &
    done
    wait $(jobs -p | grep -v "^$bench\$") 2>/dev/null ;;
esac
wait $bench
grep -o 'kept .*' "$out/bench.txt" > "$out/kept" || true
