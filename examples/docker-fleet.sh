#!/bin/sh
# Creates the containers examples/docker-fleet.toml supervises — created, not started: vigil
# starts them. Run it again to start over. Needs a Docker (or Podman) engine: DOCKER_HOST, or
# the standard socket.
#
#   sh examples/docker-fleet.sh
#   vigil run -c examples/docker-fleet.toml
#
# Then: `docker kill market-feed` (restarted at once), `docker exec market-feed sh -c 'rm /tmp/fresh'`
# (its HEALTHCHECK fails, vigil restarts it), `vigil explain -c examples/docker-fleet.toml
# trader@ETH_USDT` (a 429, backed off), `kill -9` vigil and start it again (taken over, not
# restarted), `vigil check --live -c examples/docker-fleet.toml`.
set -eu
image=${IMAGE:-busybox:1.36}
if ! docker image inspect "$image" >/dev/null 2>&1 && ! docker pull "$image" >/dev/null 2>&1; then
    # No registry: an image from this machine's static busybox.
    image=local/busybox:1
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        [ -x /bin/busybox ] || { echo "no $image and no /bin/busybox (apt install busybox-static)" >&2; exit 1; }
        root=$(mktemp -d)
        mkdir -p "$root/bin" "$root/tmp"
        cp /bin/busybox "$root/bin/"
        for c in sh sleep echo cat date test touch rm; do ln -sf busybox "$root/bin/$c"; done
        tar -C "$root" -c . | docker import - "$image" >/dev/null
        rm -rf "$root"
    fi
fi

for name in market-feed trader-BTC_USDT trader-ETH_USDT; do
    docker rm -f "$name" >/dev/null 2>&1 || true
done

# Seed 003's feed: a tick a second; healthy while it keeps /tmp/fresh.
docker create --name market-feed --network none --restart no \
    --health-cmd 'test -f /tmp/fresh' --health-interval 5s --health-retries 2 \
    "$image" sh -c 'touch /tmp/fresh; i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 1; done' >/dev/null

# Two traders: BTC trades on; ETH is rate-limited by its exchange after a few seconds.
docker create --name trader-BTC_USDT --network none --restart no \
    "$image" sh -c 'while true; do echo "BTC_USDT decision: hold"; sleep 2; done' >/dev/null
docker create --name trader-ETH_USDT --network none --restart no \
    "$image" sh -c 'echo "ETH_USDT decision: buy"; sleep 5; echo "ccxt.base.errors.RateLimitExceeded: binance 429 Too Many Requests"; exit 1' >/dev/null

echo "created market-feed, trader-BTC_USDT, trader-ETH_USDT from $image"
