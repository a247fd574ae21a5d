#!/usr/bin/env bash
# Build (or reuse) a free-threaded CPython 3.13 ("3.13t") for the test suite.
#
#   tools/build-freethreaded-python.sh [--tsan]     -> prints the interpreter's path on stdout
#
# The source is Debian trixie's python3.13 source package, fetched with `apt-get source`
# through a private sources list and a private apt state directory, so the system's apt
# configuration is neither read for sources nor changed. It is configured with
# --disable-gil (and --with-thread-sanitizer for --tsan) and installed into
#   ${FASTMAPS_CACHE:-$HOME/.cache/fastmaps}/cpython-3.13t[-tsan]
# A build that finished earlier (marked by a stamp file) is reused as it is. All progress
# goes to stderr; stdout carries only the path, so callers can do py=$(tools/...).
set -euo pipefail

variant=ft
configure_extra=()
if [ "${1:-}" = "--tsan" ]; then
    variant=tsan
    configure_extra=(--with-thread-sanitizer)
fi
cache=${FASTMAPS_CACHE:-$HOME/.cache/fastmaps}
suffix=""; [ "$variant" = tsan ] && suffix="-tsan"
prefix="$cache/cpython-3.13t$suffix"
stamp="$prefix/.fastmaps-build-ok"
py="$prefix/bin/python3.13t"

if [ -f "$stamp" ] && [ -x "$py" ]; then
    echo "free-threaded CPython ($variant): reusing $prefix" >&2
    echo "$py"
    exit 0
fi

t0=$(date +%s)
work="$cache/build-$variant"
rm -rf "$work" "$prefix"
mkdir -p "$work/apt/lists/partial" "$work/apt/archives/partial" "$work/apt/parts" "$work/src"

# A private apt: only trixie's deb-src line, lists and caches under $work.
cat > "$work/apt/sources.list" <<SRC
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
SRC
apt_opts=(
    -o "Dir::Etc::sourcelist=$work/apt/sources.list"
    -o "Dir::Etc::sourceparts=$work/apt/parts"
    -o "Dir::State::Lists=$work/apt/lists"
    -o "Dir::Cache::Archives=$work/apt/archives"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
    -o "APT::Get::List-Cleanup=0"
    -o "APT::Sandbox::User=root"
)
echo "fetching python3.13 sources from Debian trixie (private apt state in $work/apt)" >&2
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$work/src" && apt-get "${apt_opts[@]}" -qq source --download-only python3.13 >&2)
dsc=$(ls "$work"/src/python3.13_*.dsc | head -n1)
(cd "$work/src" && dpkg-source --no-check --skip-patches -q -x "$dsc" cpython >&2)
src="$work/src/cpython"
# --skip-patches: Debian's patches (install layout, multiarch paths) are left out, so the
# tree is the upstream CPython release the package was made from.
echo "configuring CPython $(sed -n 's/^#define PY_VERSION[[:space:]]*"\(.*\)"/\1/p' "$src/Include/patchlevel.h") --disable-gil ${configure_extra[*]:-}" >&2
cd "$src"
./configure --prefix="$prefix" --disable-gil "${configure_extra[@]}" \
    --without-ensurepip --disable-test-modules >"$work/configure.log" 2>&1 \
    || { tail -50 "$work/configure.log" >&2; exit 1; }
echo "building with $(nproc) jobs (log: $work/make.log)" >&2
make -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -50 "$work/make.log" >&2; exit 1; }
make altinstall >"$work/install.log" 2>&1 || { tail -50 "$work/install.log" >&2; exit 1; }
"$py" -c 'import sys, ssl, ctypes, sqlite3, zlib; assert not sys._is_gil_enabled()' >&2 \
    || { echo "built interpreter is not usable (missing ssl/ctypes/zlib or GIL enabled)" >&2; exit 1; }
"$py" -m ensurepip --altinstall >/dev/null 2>&1 || true
cp "$dsc" "$prefix/"
# ThreadSanitizer suppressions for the interpreter's own known races (used by .ci/run)
mkdir -p "$prefix/share/tsan" && cp "$src"/Tools/tsan/*.txt "$prefix/share/tsan/" 2>/dev/null || true
touch "$stamp"
rm -rf "$work"
echo "free-threaded CPython ($variant) built in $(( $(date +%s) - t0 )) s: $prefix" >&2
echo "$py"
