#!/bin/sh
# vigil's example agent, installed with the starter config by deploy/install.sh: it "works"
# every few seconds and touches its heartbeat file after each round, which the config's
# heartbeat check watches. Replace it with your own agents (see /etc/vigil/vigil.toml).
#
#   agent.sh HEARTBEAT_FILE [SECONDS_BETWEEN_ROUNDS]
set -eu
heartbeat=${1:?usage: agent.sh HEARTBEAT_FILE [SECONDS]}
every=${2:-5}
trap 'echo "stopping"; exit 0' TERM INT
echo "example agent ${VIGIL_AGENT:-?} started, pid $$, heartbeat $heartbeat"
while :; do
    echo "$(date '+%H:%M:%S') round done"
    touch "$heartbeat"
    sleep "$every"
done
