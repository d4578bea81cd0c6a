#!/usr/bin/env bash
# Install vigil as a systemd service: the binary, a starter config (never overwritten) that
# supervises a small example agent, the unit, and the Prometheus rules. Idempotent: a second
# run changes nothing and says so (and fixes the owner and mode of what an older one made).
#
#   cargo build --release
#   sudo deploy/install.sh --dry-run        # print every step, change nothing
#   sudo deploy/install.sh                  # do it
#   sudo systemctl enable --now vigil       # the example agent runs: vigil status -c /etc/vigil/vigil.toml
#
# Options:
#   --dry-run          print what would be done, change nothing
#   --prefix DIR       the binary goes to DIR/bin/vigil, the example agent to
#                      DIR/lib/vigil/example/ (default /usr/local)
#   --user NAME        the user vigil and its agents run as (default vigil; created if missing)
#   --binary PATH      the vigil binary to install (default target/release/vigil)
#   --root DIR         install under DIR instead of / (packaging, tests); no user, no systemctl,
#                      no chown (the owners it would set are printed)
#   --relocate         with --root: write DIR's own paths into the config and the unit
#                      (DIR/var/lib/vigil, …), so the tree runs where it is — a trial run, the
#                      tests. Run as root, and with --user an existing user, it sets owners too.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
dry_run=0
prefix=/usr/local
user=vigil
binary="$repo/target/release/vigil"
root=""
relocate=0

usage() { sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --prefix) prefix=${2:?--prefix needs a directory}; shift ;;
        --user) user=${2:?--user needs a name}; shift ;;
        --binary) binary=${2:?--binary needs a path}; shift ;;
        --root) root=${2:?--root needs a directory}; shift ;;
        --relocate) relocate=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$relocate" = 1 ] && [ -z "$root" ]; then
    echo "install.sh: --relocate needs --root DIR" >&2
    exit 2
fi
# The paths written into the config and the unit are absolute: so is the root.
[ -n "$root" ] && root=$(realpath -m "$root")

bindir="$prefix/bin"
exampledir="$prefix/lib/vigil/example"
confdir=/etc/vigil
statedir=/var/lib/vigil
unitdir=/etc/systemd/system
rulesdir=/etc/prometheus/rules
# Where the installed files will be when vigil runs: / (or DIR with --relocate).
at=""
[ "$relocate" = 1 ] && at=$root
changed=0

say() { printf '%s\n' "$*"; }
run() {
    if [ "$dry_run" = 1 ]; then say "  would run: $*"; else "$@"; fi
}

# Copy $1 to $2 (under the root) with mode $3, unless it is already there and identical.
put() {
    local src=$1 dst="$root$2" mode=$3
    if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
        say "unchanged  $2"
        return
    fi
    say "install    $2"
    changed=1
    run install -D -m "$mode" "$src" "$dst"
}

# Like put, but never replaces a file the user may have edited.
put_once() {
    local src=$1 dst="$root$2" mode=$3
    if [ -e "$dst" ]; then
        say "keep       $2 (exists; the new version is $src)"
        return
    fi
    put "$src" "$2" "$mode"
}

# Give $1 (under the root) the owner $2 (user:group), where this install may set owners.
own() {
    local path=$1 owner=$2 dst="$root$1"
    if [ "$set_owners" = 0 ]; then
        say "skip       chown $owner $1 ($why_not_owners)"
        return
    fi
    if [ -e "$dst" ] && [ "$(stat -c %U:%G "$dst")" = "$owner" ]; then
        return
    fi
    say "chown      $1 $owner"
    changed=1
    run chown "$owner" "$dst"
}

# Make sure $2 (under the root) has the owner $3 and the mode $4; $1 = dir makes it if missing.
ensure() {
    local kind=$1 path=$2 owner=$3 mode=$4 dst="$root$2"
    if [ ! -e "$dst" ]; then
        if [ "$kind" = dir ]; then
            say "create     $path"
            changed=1
            run install -d -m "$mode" "$dst"
        fi
    else
        local now
        now=$(stat -c %a "$dst")
        if [ "$now" != "${mode#0}" ]; then
            say "chmod      $path $mode (was $now)"
            changed=1
            run chmod "$mode" "$dst"
        elif [ "$kind" = dir ]; then
            say "unchanged  $path"
        fi
    fi
    own "$path" "$owner"
}

if [ ! -x "$binary" ]; then
    echo "install.sh: $binary not found: run \`cargo build --release\` first, or pass --binary" >&2
    exit 1
fi
if [ "$dry_run" = 0 ] && [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or with --dry-run, or --root DIR)" >&2
    exit 1
fi
[ "$dry_run" = 1 ] && say "dry run: nothing will be changed"

# 1. The user the service (and so every agent) runs as.
if [ -z "$root" ]; then
    if id -u "$user" >/dev/null 2>&1; then
        say "unchanged  user $user"
    else
        say "create     user $user (system user and group, home $statedir)"
        changed=1
        run useradd --system --user-group --home-dir "$statedir" --shell /usr/sbin/nologin "$user"
    fi
fi
# Its group (the unit runs with the user's primary group): a new user's is its own name.
group=$user
if id -u "$user" >/dev/null 2>&1; then group=$(id -gn "$user"); fi
# Owners are set on a real install, and on a relocated one run by root for an existing user.
set_owners=1
why_not_owners=""
if [ -n "$root" ]; then
    if [ "$relocate" = 0 ]; then
        set_owners=0 why_not_owners="--root: set it where the tree is installed"
    elif [ "$(id -u)" != 0 ] || ! id -u "$user" >/dev/null 2>&1; then
        set_owners=0 why_not_owners="--root --relocate: needs root and an existing user $user"
    fi
fi

# 2. The binary.
put "$binary" "$bindir/vigil" 0755

# 3. The example agent the starter config supervises. /usr is read-only to the service:
#    fine for code.
put "$here/example/agent.sh" "$exampledir/agent.sh" 0755

# 4. The state dir, the only place the service and its agents may write by default: the
#    service's user owns it.
ensure dir "$statedir" "$user:$group" 0750

# 5. The config: root owns it, the service's group may read it but not change it.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -e "s|@CONFDIR@|$at$confdir|g" -e "s|@STATEDIR@|$at$statedir|g" \
    -e "s|@EXAMPLEDIR@|$at$exampledir|g" -e "s|@USER@|$user|g" \
    "$here/vigil.toml" > "$tmp/vigil.toml"
ensure dir "$confdir" "root:$group" 0750
put_once "$tmp/vigil.toml" "$confdir/vigil.toml" 0640
# Older versions of this script installed the quick start's config, whose agents cannot run
# here (they are not under /etc/vigil, and /etc is read-only to the service).
if [ -f "$root$confdir/vigil.toml" ] && grep -q 'agents/trader.py' "$root$confdir/vigil.toml" 2>/dev/null; then
    say "warning    $confdir/vigil.toml is the quick start's, which cannot run as a service:"
    say "           move it away and run this again for a starter config that does"
fi
ensure file "$confdir/vigil.toml" "root:$group" 0640

# 6. The unit, with this install's paths and user.
sed -e "s|@BINDIR@|$at$bindir|g" -e "s|@CONFDIR@|$at$confdir|g" -e "s|@STATEDIR@|$at$statedir|g" \
    -e "s|@USER@|$user|g" "$here/systemd/vigil.service" > "$tmp/vigil.service"
put "$tmp/vigil.service" "$unitdir/vigil.service" 0644

# 7. Alerting rules, where a local Prometheus would read them.
if [ -n "$root" ] || [ -d /etc/prometheus ]; then
    put "$here/prometheus/vigil.rules.yml" "$rulesdir/vigil.rules.yml" 0644
else
    say "skip       $rulesdir/vigil.rules.yml (no /etc/prometheus here; copy deploy/prometheus/ to your Prometheus)"
fi

# 8. Tell systemd, if it is running here (not in a chroot, a container without it, …).
if [ -z "$root" ] && [ "$changed" = 1 ] && command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        run systemctl daemon-reload
    else
        say "skip       systemctl daemon-reload (systemd is not running here)"
    fi
fi

if [ "$changed" = 0 ]; then
    say "nothing to do: vigil is installed and up to date"
elif [ "$dry_run" = 0 ]; then
    if [ "$relocate" = 1 ]; then
        say "done. Run it here as the service would: cd $at$statedir && $at$bindir/vigil run -c $at$confdir/vigil.toml"
    else
        say "done. Next: systemctl enable --now vigil (it supervises an example agent:"
        say "vigil status -c $confdir/vigil.toml), then replace the example in $confdir/vigil.toml"
        say "with your agents and systemctl reload vigil"
    fi
fi
