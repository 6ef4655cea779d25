#!/bin/sh
# Builds the release tarball flack-<version>.tar.gz: everything a host needs
# to run a flack node, without Rust (the binary needs only the C library).
#
#   rel/build-tarball.sh [--binary PATH] [--out DIR]
#
# Without --binary it runs `cargo build --release` and packs
# target/release/flack. With --binary it packs that binary instead (the tests
# pack the debug build they already have). The version is the binary's own
# (`flack --version`, the Cargo package version). The tarball goes to DIR
# (default: the cargo target directory); the tree it is made from stays
# beside it as DIR/flack-<version>/. Like relx's, the tarball has no top
# directory: extract it into the directory that is to be the release root.
#
# Layout:
#   bin/flack                   start script (start, stop, restart, ping, pid,
#                               foreground, console)
#   bin/flack-<version>         the node binary
#   releases/<version>/vm.args  as the Erlang release's: -sname, -setcookie, ...
#   releases/<version>/sys.config
#   static/                     the web client, as static/ is at build time
#   share/flack/                flack.service (systemd), nginx.conf (proxy),
#                               flack-dashboard.json (Grafana)
#   log/, var/                  empty: the node's log and pid file go there
set -eu

cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
binary=
out=$target_dir

while [ $# -gt 0 ]; do
    case $1 in
        --binary)
            binary=${2:?--binary needs a path}
            shift 2
            ;;
        --out)
            out=${2:?--out needs a directory}
            shift 2
            ;;
        -h | --help)
            sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "rel/build-tarball.sh: unknown option $1 (see --help)" >&2
            exit 2
            ;;
    esac
done

if [ -z "$binary" ]; then
    cargo build --release --bin flack
    binary=$target_dir/release/flack
fi
[ -x "$binary" ] || {
    echo "rel/build-tarball.sh: $binary is not an executable" >&2
    exit 1
}

vsn=$("$binary" --version | awk '{ print $2 }')
case $vsn in
    [0-9]*) ;;
    *)
        echo "rel/build-tarball.sh: cannot read the version of $binary" >&2
        exit 1
        ;;
esac

# The binary must run on a host without Rust: only the C library (libc,
# libm, the loader) and libgcc_s, which every glibc system has.
if command -v ldd >/dev/null 2>&1; then
    unexpected=$(ldd "$binary" | awk '{ print $1 }' | grep -Ev \
        '^(linux-vdso\.so|linux-gate\.so|libc\.so|libm\.so|libgcc_s\.so|libpthread\.so|libdl\.so|librt\.so|/lib[0-9]*/ld-linux|/lib/ld-)' || true)
    if [ -n "$unexpected" ]; then
        echo "rel/build-tarball.sh: $binary needs libraries a bare host may lack:" >&2
        echo "$unexpected" >&2
        exit 1
    fi
fi
glibc=
if command -v objdump >/dev/null 2>&1; then
    glibc=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sort -t. -k1,1 -k2,2n -k3,3n -u | tail -n 1)
fi

mkdir -p "$out"
out=$(cd "$out" && pwd -P)
tree=$out/flack-$vsn
tarball=$out/flack-$vsn.tar.gz
rm -rf "$tree"
mkdir -p "$tree/bin" "$tree/releases/$vsn" "$tree/static" "$tree/share/flack" "$tree/log" "$tree/var"

cp "$binary" "$tree/bin/flack-$vsn"
sed "s/@REL_VSN@/$vsn/g" rel/bin/flack >"$tree/bin/flack"
chmod 755 "$tree/bin/flack" "$tree/bin/flack-$vsn"
cp rel/vm.args rel/sys.config "$tree/releases/$vsn/"
if [ -d static ]; then
    cp -R static/. "$tree/static/"
fi
cp rel/flack.service rel/nginx.conf rel/grafana/flack-dashboard.json "$tree/share/flack/"

tar -C "$tree" -czf "$tarball.tmp" bin releases static share log var
mv "$tarball.tmp" "$tarball"

echo "$tarball"
echo "  flack $vsn, $(wc -c <"$tarball" | tr -d ' ') bytes${glibc:+, needs $glibc or later}" >&2
