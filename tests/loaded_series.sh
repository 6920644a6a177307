#!/usr/bin/env bash
# The suite under load, by hand (#22 acceptance 3): a fresh clone of COMMIT in
# its own venv, both cores kept busy by two busy loops at nice 0 for the whole
# series, the CI test command (`CI=true pytest -q tests`) RUNS times in a row,
# and beside those runs the whole Python suite SAN_RUNS times against the
# ASan+UBSan extension (tests/sanitized_suite.py). Stops at the first failing
# loaded run. Takes hours: about 35 min per loaded run on a 2-core machine.
#
#   tests/loaded_series.sh COMMIT [RUNS=10] [SAN_RUNS=3] [DIR=/tmp/series-COMMIT]
#
# DIR/series.log has one line per run (start, end, rc, pytest's summary);
# DIR/run<k>.log and DIR/san<k>.log each run's whole output. Start it with
# setsid to stop it all at once: `kill -- -PID` of the script.
#
# Run again with the same DIR, it resumes: the runs already logged count, a
# run cut short (its log without a result line: the machine or the session
# ended) is logged as interrupted and run again, and a series whose loaded run
# failed refuses to go on (start a new DIR). So a series longer than one
# sitting can be run in parts, on the same commit, and say so in its log.
set -u
commit=${1:?usage: loaded_series.sh COMMIT [RUNS] [SAN_RUNS] [DIR]}
runs=${2:-10}
san_runs=${3:-3}
dir=${4:-/tmp/series-$commit}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
log=$dir/series.log
mkdir -p "$dir"
say() { echo "$(date -u +%FT%TZ) $*" | tee -a "$log"; }

if [ ! -x "$dir/src/.venv/bin/pytest" ]; then
    rm -rf "$dir/src"
    git clone -q "$repo" "$dir/src" && git -C "$dir/src" checkout -q "$commit" || exit 2
    say "clone of $(git -C "$dir/src" rev-parse --short HEAD); installing"
    (cd "$dir/src" && python3.11 -m venv .venv && .venv/bin/pip install -q '.[test]') \
        > "$dir/install.log" 2>&1 || { say "install failed (see install.log)"; exit 2; }
fi
cd "$dir/src" || exit 2
[ "$(git rev-parse HEAD)" = "$(git rev-parse "$commit^{commit}")" ] \
    || { say "DIR/src is not at $commit"; exit 2; }
touch "$log"
if grep -q 'stopping: loaded run' "$log"; then
    say "a loaded run of this series failed; start a new DIR"; exit 1
fi
loaded_done=$(grep -c 'loaded run [0-9]*: rc 0 ' "$log")
san_done=$(grep -c 'sanitized run [0-9]*: rc ' "$log")
# A log without its result line is a run cut short: keep it aside, run it again.
for cut in "run$((loaded_done + 1))" "san$((san_done + 1))"; do
    if [ -e "$dir/$cut.log" ]; then
        mv "$dir/$cut.log" "$dir/$cut.interrupted-$(date +%s).log"
        say "$cut was cut short before its end (not a failure); running it again"
    fi
done

busy=()
for _ in 1 2; do sh -c 'while :; do :; done' & busy+=($!); done
trap 'kill "${busy[@]}" 2>/dev/null' EXIT
if [ "$san_done" -lt "$san_runs" ]; then beside=", sanitized runs $((san_done + 1))..$san_runs beside them"
else beside=" (the sanitized runs are done)"; fi
say "busy loops ${busy[*]} started; loaded runs $((loaded_done + 1))..$runs$beside"

summary() { grep -E '^(=+ )?[0-9]+ (passed|failed)|(passed|failed|error).* in [0-9.]+s' "$1" | tail -1; }

(
    for k in $(seq $((san_done + 1)) "$san_runs"); do
        t0=$(date +%s)
        CI=true .venv/bin/python tests/sanitized_suite.py --build "$dir/asan" > "$dir/san$k.log" 2>&1
        rc=$?
        say "sanitized run $k: rc $rc in $(( $(date +%s) - t0 )) s: $(summary "$dir/san$k.log")"
    done
) &
san=$!

for k in $(seq $((loaded_done + 1)) "$runs"); do
    t0=$(date +%s)
    CI=true .venv/bin/pytest -q tests > "$dir/run$k.log" 2>&1
    rc=$?
    say "loaded run $k: rc $rc in $(( $(date +%s) - t0 )) s (load $(cut -d' ' -f1-3 /proc/loadavg)): $(summary "$dir/run$k.log")"
    [ "$rc" -eq 0 ] || { say "stopping: loaded run $k failed (the sanitized runs go on)"; break; }
done
wait $san
say "series done"
