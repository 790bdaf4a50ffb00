#!/usr/bin/env bash
# Run every libFuzzer target of t/fuzz in turn (see docs/testing.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 10); TARGET names without "fuzz_" (default:
# all).  Builds them first (make fuzz).  Seeds: t/fuzz/corpus/<target>
# (committed, read only); inputs the fuzzer finds go to
# t/fuzz/work/<target>, which later runs start from; a crashing input is
# saved in t/fuzz/artifacts/.  Prints, per target, executions, coverage
# and findings; exits 1 when any target found something.
#
# Environment: FUZZ_NICE (nice level, default 0: use 19 on a shared
# machine), FUZZ_ARGS (more libFuzzer options, e.g. "-jobs=2"),
# FUZZ_RUNS (stop each target after that many inputs; SECONDS is then only
# a cap) and FUZZ_SEED (libFuzzer's random seed, default 1 when FUZZ_RUNS
# is set): with both, a run from the committed seeds is the same run every
# time, which is what the test command uses (a CI pass that finds a new
# bug only by luck would fail at random; long runs are what find them).
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
shift || true
case "$secs" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
all=(host map_compile map_open record html htcompat_ini htcompat_table
     geoip_parse geoip_xff logsplit)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if [ ! -f Makefile ]; then
    echo "fuzz: no Makefile: run scripts/build.sh first" >&2
    exit 2
fi
make -s fuzz >/dev/null || { echo "fuzz: make fuzz failed" >&2; exit 2; }

mkdir -p t/fuzz/work t/fuzz/artifacts
logdir=$(mktemp -d /tmp/w4a-fuzz.XXXXXX)
# ASan's leak check at exit, UBSan stops at the first report (built with
# -fno-sanitize-recover=undefined); both print a stack
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

printf '%-16s %6s %12s %9s %7s %6s  %s\n' target secs executions exec/s cov corpus findings
total_findings=0
for t in "${targets[@]}"; do
    bin=t/fuzz/bin/fuzz_$t
    if [ ! -x "$bin" ]; then
        echo "fuzz: no target $t" >&2
        total_findings=$((total_findings + 1))
        continue
    fi
    mkdir -p "t/fuzz/work/$t"
    before=$(ls t/fuzz/artifacts | grep -c "^$t-" || true)
    start=$(date +%s)
    fixed=()
    if [ -n "${FUZZ_RUNS:-}" ]; then
        fixed=(-runs="$FUZZ_RUNS" -seed="${FUZZ_SEED:-1}")
    elif [ -n "${FUZZ_SEED:-}" ]; then
        fixed=(-seed="$FUZZ_SEED")
    fi
    # shellcheck disable=SC2086
    nice -n "${FUZZ_NICE:-0}" "$bin" -max_total_time="$secs" "${fixed[@]}" \
        -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="t/fuzz/artifacts/$t-" ${FUZZ_ARGS:-} \
        "t/fuzz/work/$t" "t/fuzz/corpus/$t" >"$logdir/$t.log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    after=$(ls t/fuzz/artifacts | grep -c "^$t-" || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logdir/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logdir/$t.log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$logdir/$t.log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    found=$((after - before))
    if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then
        found=1                     # died without an artifact: still a finding
    fi
    total_findings=$((total_findings + found))
    printf '%-16s %6s %12s %9s %7s %6s  %s\n' "$t" "$took" "${execs:-?}" \
        "${rate:-?}" "${cov:-?}" "${corp:-?}" "$found"
    if [ "$found" -ne 0 ]; then
        echo "---- $t (exit $rc): $logdir/$t.log" >&2
        grep -E 'ERROR|SUMMARY|invariant failed|runtime error|Test unit written' \
            "$logdir/$t.log" | head -20 >&2
    fi
done
echo "logs: $logdir"
if [ "$total_findings" -ne 0 ]; then
    echo "fuzz: $total_findings finding(s); inputs in t/fuzz/artifacts/" >&2
    exit 1
fi
echo "fuzz: no findings"
exit 0
