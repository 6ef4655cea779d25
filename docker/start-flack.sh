#!/bin/sh
# start-flack.sh: the entrypoint of the flack image (docker/Dockerfile).
#
# Like the original Erlang image's start-flack.sh, it turns FLACK_CLUSTER
# into the gproc_dist candidate list of sys.config and then execs
# `bin/flack foreground`. The release's own vm.args and sys.config are left
# as shipped: the ones the node reads are written to $FLACK_CONFIG_DIR and
# passed as --vm-args/--config, which bin/flack remembers, so
# `bin/flack ping` (the image's health check) and `bin/flack cluster` find
# the node without arguments.
#
# Environment (all optional):
#   FLACK_CLUSTER      the gproc_dist candidates: node names separated by
#                      commas (flack@flack1,flack@flack2,flack@flack3). The
#                      original's quoted form ('flack@flack-svr1','flack@flack-svr2')
#                      works too; each name becomes a quoted atom. `all`, or
#                      unset, keeps the release's {gproc_dist, all}.
#   FLACK_NODE_NAME    the node name: NAME, NAME@HOST (-sname) or
#                      NAME@HOST.DOMAIN (-name). Unset: the release's
#                      -sname flack, i.e. flack@<container hostname>.
#   FLACK_COOKIE       the distribution cookie, or
#   FLACK_COOKIE_FILE  a file holding it (a docker or kubernetes secret).
#                      Neither: the release's flack_cookie, with a warning.
#   FLACK_PORT         the HTTP port (the image sets 8080).
#   FLACK_DIST_PORT    the distribution port (the image sets 9100); empty:
#                      any free port.
#   FLACK_HOME         the release root (the image sets /opt/flack).
#   FLACK_CONFIG_DIR   where the node's vm.args and sys.config are written
#                      (default $FLACK_HOME/var/container).
#   FLACK_LOG, ERL_EPMD_PORT, ERL_EPMD_ADDRESS reach the node unchanged.
#
# Arguments are passed on to the node: `docker run flack --max-connections 20000`.
set -eu

fail() {
    echo "start-flack.sh: $*" >&2
    exit 1
}

FLACK_HOME=${FLACK_HOME:-/opt/flack}
config_dir=${FLACK_CONFIG_DIR:-$FLACK_HOME/var/container}
[ -x "$FLACK_HOME/bin/flack" ] || fail "$FLACK_HOME/bin/flack is missing (FLACK_HOME=$FLACK_HOME)"

release_dir=
for dir in "$FLACK_HOME"/releases/*; do
    if [ -f "$dir/vm.args" ] && [ -f "$dir/sys.config" ]; then
        release_dir=$dir
    fi
done
[ -n "$release_dir" ] || fail "no releases/<version>/vm.args and sys.config under $FLACK_HOME"

# check_name WHAT NAME: a node name (or its name part) an atom can hold
# without escapes.
check_name() {
    case $2 in
        '' | *[!A-Za-z0-9_.@-]*)
            fail "$1: '$2' is not a node name (letters, digits, _ . - and one @)"
            ;;
    esac
}

# ---- sys.config: FLACK_CLUSTER -> {gproc_dist, ['a@h', 'b@h', ...]}
cluster=$(printf '%s' "${FLACK_CLUSTER:-}" | tr -d ' \t\n')
candidates=
if [ -n "$cluster" ] && [ "$cluster" != all ]; then
    old_ifs=$IFS
    IFS=,
    for name in $cluster; do
        name=${name#\'}
        name=${name%\'}
        [ -n "$name" ] || continue
        check_name FLACK_CLUSTER "$name"
        case $name in
            *@*@* | @* | *@) fail "FLACK_CLUSTER: '$name' is not NAME@HOST" ;;
            *@*) ;;
            *) fail "FLACK_CLUSTER: '$name' is not NAME@HOST (a candidate's full name)" ;;
        esac
        candidates="${candidates:+$candidates, }'$name'"
    done
    IFS=$old_ifs
    [ -n "$candidates" ] || fail "FLACK_CLUSTER names no node"
fi

mkdir -p "$config_dir" || fail "cannot create $config_dir"
umask 077
sys_config=$config_dir/sys.config
vm_args=$config_dir/vm.args

if [ -n "$candidates" ]; then
    grep -q '{gproc_dist,[[:space:]]*all}' "$release_dir/sys.config" ||
        fail "$release_dir/sys.config has no {gproc_dist, all} to replace with FLACK_CLUSTER"
    sed "s/{gproc_dist,[[:space:]]*all}/{gproc_dist, [$candidates]}/" \
        "$release_dir/sys.config" >"$sys_config.tmp"
else
    cp "$release_dir/sys.config" "$sys_config.tmp"
fi
mv "$sys_config.tmp" "$sys_config"

# ---- vm.args: the release's, with the name, cookie and distribution port
# of the environment in place of its own.
name_flag=
node_name=${FLACK_NODE_NAME:-}
if [ -n "$node_name" ]; then
    check_name FLACK_NODE_NAME "$node_name"
    case $node_name in
        *@*@* | @* | *@) fail "FLACK_NODE_NAME: '$node_name' is not NAME or NAME@HOST" ;;
        *@*.*) name_flag=-name ;;
        *) name_flag=-sname ;;
    esac
fi

if [ -n "${FLACK_COOKIE_FILE:-}" ] && [ -n "${FLACK_COOKIE:-}" ]; then
    fail "set FLACK_COOKIE or FLACK_COOKIE_FILE, not both"
fi
cookie=
if [ -n "${FLACK_COOKIE_FILE:-}" ]; then
    [ -r "$FLACK_COOKIE_FILE" ] || fail "FLACK_COOKIE_FILE: cannot read $FLACK_COOKIE_FILE"
    cookie=$(head -n 1 "$FLACK_COOKIE_FILE" | tr -d '\r\n')
    [ -n "$cookie" ] || fail "FLACK_COOKIE_FILE: $FLACK_COOKIE_FILE is empty"
elif [ -n "${FLACK_COOKIE:-}" ]; then
    cookie=$FLACK_COOKIE
else
    echo "start-flack.sh: warning: no FLACK_COOKIE or FLACK_COOKIE_FILE; using the release's cookie, which anyone can read in the image" >&2
fi
case $cookie in
    *[!!-~]* | *[\#\\\"\']*)
        fail "the cookie must be printable ASCII without spaces, quotes, # or \\"
        ;;
esac

port=${FLACK_PORT:-8080}
case $port in
    '' | *[!0-9]*) fail "FLACK_PORT: '$port' is not a port number" ;;
esac
[ "$port" -ge 1 ] && [ "$port" -le 65535 ] || fail "FLACK_PORT: '$port' is not a port number"

dist_port=${FLACK_DIST_PORT:-}
case $dist_port in
    '') ;;
    *[!0-9]*) fail "FLACK_DIST_PORT: '$dist_port' is not a port number" ;;
    *) [ "$dist_port" -ge 1 ] && [ "$dist_port" -le 65535 ] ||
        fail "FLACK_DIST_PORT: '$dist_port' is not a port number" ;;
esac

{
    echo "# Written by /start-flack.sh from $release_dir/vm.args and the environment."
    while IFS= read -r line || [ -n "$line" ]; do
        word=$(printf '%s\n' "$line" | awk '{ print $1 }')
        case $word in
            -sname | -name) [ -n "$name_flag" ] && continue ;;
            -setcookie) [ -n "$cookie" ] && continue ;;
        esac
        printf '%s\n' "$line"
    done <"$release_dir/vm.args"
    [ -z "$name_flag" ] || printf '%s %s\n' "$name_flag" "$node_name"
    [ -z "$cookie" ] || printf -- '-setcookie %s\n' "$cookie"
    [ -z "$dist_port" ] ||
        printf -- '-kernel inet_dist_listen_min %s inet_dist_listen_max %s\n' "$dist_port" "$dist_port"
} >"$vm_args.tmp"
mv "$vm_args.tmp" "$vm_args"

# A container runs one node: a pid file left by an earlier run of this
# container (a kept var/ volume) is stale.
rm -f "$FLACK_HOME/var/flack.pid"

exec "$FLACK_HOME/bin/flack" foreground \
    --vm-args "$vm_args" --config "$sys_config" -flack port "$port" "$@"
