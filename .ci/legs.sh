#!/usr/bin/env bash
# Run `make test`'s legs one after the other (`make leg-<name>` each), every one to its end even when an
# earlier one failed; then print one summary line per leg (result, pytest's counts, wall time) and a total.
# Each leg's output is also kept in var/test-logs/<leg>.log.
#
#   bash .ci/legs.sh lint package demo-bare dj61-sqlite dj61-postgres ...
set -uo pipefail
cd "$(dirname "$0")/.."

(($#)) || { echo "legs.sh: name at least one leg" >&2; exit 2; }
logs=var/test-logs
mkdir -p "$logs"

describe() {
    case "$1" in
        venvs) echo "a venv per Django leg, made or updated" ;;
        lint) echo "make lint" ;;
        package) echo "sdist + wheel: build, contents, twine check, clean installs" ;;
        demo-bare) echo "make demo from a copy, no build tools on PATH, no pip cache" ;;
        dj61-*) echo "Django 6.1 · Python 3.13 · ${1#*-} · full suite" ;;
        dj60-*) echo "Django 6.0 · Python 3.12 · ${1#*-} · unit + integration" ;;
        dj52-*) echo "Django 5.2 · Python 3.11 · ${1#*-} · unit + integration" ;;
        *) echo "$1" ;;
    esac
}

# count WORD LINE: the number before WORD in pytest's closing line ("12 passed, 3 skipped in 4.5s"), else 0.
count() {
    local n
    n="$(grep -oE "[0-9]+ $1" <<<"$2" | head -n 1 | cut -d' ' -f1)"
    echo "${n:-0}"
}

failed_legs=0
passed=0
failed=0
skipped=0
summary=()
start_all=$SECONDS
for leg in "$@"; do
    echo
    echo "===== $leg: $(describe "$leg") ====="
    log="$logs/$leg.log"
    start=$SECONDS
    ${MAKE:-make} --no-print-directory "leg-$leg" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    took=$((SECONDS - start))
    # pytest's closing line, e.g. "==== 1427 passed, 65 skipped, 2 warnings in 76.12s (0:01:16) ====".
    closing="$(grep -E '^=+ .*\b(passed|failed|errors?|skipped|no tests ran)\b.* in [0-9.]+s' "$log" | tail -n 1 |
        sed -E 's/^=+ //; s/ =+$//')"
    if [[ -n "$closing" ]]; then
        passed=$((passed + $(count passed "$closing")))
        failed=$((failed + $(count failed "$closing") + $(count error "$closing")))
        skipped=$((skipped + $(count skipped "$closing")))
        if [[ $rc -eq 0 && "$closing" == *"no tests ran"* ]]; then
            rc=5 # pytest exits 5 when it collected nothing; make only says 2
        fi
    fi
    if [[ $rc -eq 0 ]]; then
        result="passed"
    else
        result="FAILED"
        failed_legs=$((failed_legs + 1))
        [[ -n "$closing" ]] || failed=$((failed + 1))
    fi
    summary+=("$(printf '  %-14s %-6s %4dm%02ds  %s%s' "$leg" "$result" $((took / 60)) $((took % 60)) \
        "$(describe "$leg")" "${closing:+  [$closing]}")")
done
total=$((SECONDS - start_all))

echo
echo "===== summary: ${#summary[@]} legs in $((total / 60))m$((total % 60))s (logs in $logs/) ====="
printf '%s\n' "${summary[@]}"
if ((failed_legs)); then
    echo "$failed_legs leg(s) FAILED"
fi
# The plain closing line: every pytest leg's counts added up (a failed non-pytest leg counts as one failure).
echo "total: $passed passed, $failed failed, $skipped skipped"
((failed_legs == 0))
