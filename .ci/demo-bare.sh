#!/usr/bin/env bash
# `make demo` as on a bare machine: a copy of the working tree with no venv, a PATH from which every build
# tool is hidden (C/C++ compilers, linkers, pkg-config, mariadb_config/mysql_config, Rust), no pip cache.
# Passes when the demo installs and runs to its final table; arguments pass through to `manage.py demo`.
#
#   bash .ci/demo-bare.sh --orders 100
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d "${TMPDIR:-/tmp}/ecotone-demo-bare.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# 1. A copy of what a clone has (tracked files, and new files not yet committed), without venvs or var/.
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' path; do
    [[ -e "$path" ]] && printf '%s\0' "$path"
done | tar --null -T - -cf - | tar -xf - -C "$work"
mkdir "$work/repo" && (cd "$work" && find . -mindepth 1 -maxdepth 1 ! -name repo -exec mv {} repo/ \;)

# 2. A PATH with everything but the build tools: one directory of links to the first hit of each command.
hidden='^(cc|c\+\+|cpp|gcc|g\+\+|clang|clang\+\+|ld|ld\..*|gold|as|pkg-config|pkgconf|mariadb_config|mysql_config|mariadb-config|rustc|cargo|.*-gcc|.*-gcc-[0-9.]+|.*-g\+\+|.*-g\+\+-[0-9.]+|gcc-[0-9.]+|g\+\+-[0-9.]+|cpp-[0-9.]+|clang-[0-9]+|.*-linux-gnu-.*|.*-pkg-config)$'
bin="$work/bin"
mkdir "$bin"
IFS=: read -r -a dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
    [[ -d "$dir" ]] || continue
    for tool in "$dir"/*; do
        name="${tool##*/}"
        [[ -x "$tool" && ! -d "$tool" && ! -e "$bin/$name" ]] || continue
        [[ "$name" =~ $hidden ]] && continue
        ln -s "$tool" "$bin/$name"
    done
done
for tool in cc gcc c++ g++ clang pkg-config mariadb_config mysql_config; do
    if PATH="$bin" command -v "$tool" >/dev/null 2>&1; then
        echo "demo-bare: $tool is still on the PATH" >&2
        exit 1
    fi
done
echo "demo-bare: PATH without build tools (cc, gcc, pkg-config, mariadb_config, mysql_config, ...): $bin"

# 3. make demo in the copy: a fresh .venv, no pip cache, the hidden PATH.
cd "$work/repo"
start=$SECONDS
env -u VIRTUAL_ENV PATH="$bin" PIP_NO_CACHE_DIR=1 ECOTONE_DEMO_VAR_DIR="$work/var" \
    make --no-print-directory demo DEMO_ARGS="$*" 2>&1 | tee "$work/demo.log"

# 4. It installed only what the demo needs, and the demo reached its final table.
.venv/bin/python - <<'EOF'
import importlib.util
import sys

present = [name for name in ("MySQLdb", "psycopg", "redis", "boto3", "pycurl", "confluent_kafka", "pytest")
           if importlib.util.find_spec(name) is not None]
if present:
    sys.exit(f"demo-bare: the demo's venv holds what the demo does not need: {', '.join(present)}")
EOF
# The demo exits non-zero on a lost or doubled order; check that it got as far as saying so.
grep -q "demo OK in" "$work/demo.log" || { echo "demo-bare: the demo did not report 'demo OK'" >&2; exit 1; }
echo "demo-bare: passed: make demo installed and ran without build tools in $((SECONDS - start))s"
