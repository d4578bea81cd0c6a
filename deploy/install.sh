#!/usr/bin/env bash
# Install vigil as a systemd service: the binary, a config (never overwritten), the unit, and
# the Prometheus rules. Idempotent: a second run changes nothing and says so.
#
#   cargo build --release
#   sudo deploy/install.sh --dry-run        # print every step, change nothing
#   sudo deploy/install.sh                  # do it
#   sudo systemctl enable --now vigil
#
# Options:
#   --dry-run          print what would be done, change nothing
#   --prefix DIR       where the binary goes: DIR/bin/vigil (default /usr/local)
#   --user NAME        the user vigil and its agents run as (default vigil; created if missing)
#   --binary PATH      the vigil binary to install (default target/release/vigil)
#   --root DIR         install under DIR instead of / (packaging, tests); no user, no systemctl
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
dry_run=0
prefix=/usr/local
user=vigil
binary="$repo/target/release/vigil"
root=""

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --prefix) prefix=${2:?--prefix needs a directory}; shift ;;
        --user) user=${2:?--user needs a name}; shift ;;
        --binary) binary=${2:?--binary needs a path}; shift ;;
        --root) root=${2:?--root needs a directory}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

bindir="$prefix/bin"
confdir=/etc/vigil
statedir=/var/lib/vigil
unitdir=/etc/systemd/system
rulesdir=/etc/prometheus/rules
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
        say "create     user $user (system user, home $statedir)"
        changed=1
        run useradd --system --home-dir "$statedir" --shell /usr/sbin/nologin "$user"
    fi
fi

# 2. The binary.
put "$binary" "$bindir/vigil" 0755

# 3. A config to start from: the quick start's, with the state dir under /var/lib/vigil.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|^state_dir = .*|state_dir = \"$statedir\"|" "$repo/examples/quickstart.toml" > "$tmp/vigil.toml"
put_once "$tmp/vigil.toml" "$confdir/vigil.toml" 0640

# 4. The unit, with this install's paths and user.
sed -e "s|@BINDIR@|$bindir|g" -e "s|@CONFDIR@|$confdir|g" -e "s|@STATEDIR@|$statedir|g" \
    -e "s|@USER@|$user|g" "$here/systemd/vigil.service" > "$tmp/vigil.service"
put "$tmp/vigil.service" "$unitdir/vigil.service" 0644

# 5. The state dir, owned by the service's user.
if [ -d "$root$statedir" ]; then
    say "unchanged  $statedir"
else
    say "create     $statedir"
    changed=1
    run install -d -m 0750 "$root$statedir"
    if [ -z "$root" ]; then run chown "$user:$user" "$statedir"; fi
fi

# 6. Alerting rules, where a local Prometheus would read them.
if [ -n "$root" ] || [ -d /etc/prometheus ]; then
    put "$here/prometheus/vigil.rules.yml" "$rulesdir/vigil.rules.yml" 0644
else
    say "skip       $rulesdir/vigil.rules.yml (no /etc/prometheus here; copy deploy/prometheus/ to your Prometheus)"
fi

# 7. Tell systemd.
if [ -z "$root" ] && [ "$changed" = 1 ] && command -v systemctl >/dev/null 2>&1; then
    run systemctl daemon-reload
fi

if [ "$changed" = 0 ]; then
    say "nothing to do: vigil is installed and up to date"
elif [ "$dry_run" = 0 ]; then
    say "done. Next: edit $confdir/vigil.toml, then: systemctl enable --now vigil"
fi
