#!/usr/bin/env bash
# Print the gate VM's /etc/spagate.ini: gate-config.sh SPA_KEYS_FILE IFACE
# ssh is protected on the private interface only, in native XDP mode (virtio-net has it;
# docs/vagrant.md says what that needs).
set -euo pipefail
keys_file=$1 iface=$2

echo "# Written by vagrant/provision-gate.sh"
cat "$keys_file"
echo "interface = $iface"
echo "unguarded = eth0 # vagrant's management network (vagrant ssh)"
echo "protected = tcp/22"
echo "port = 8484"
echo "open-seconds = 15"
echo "xdp-mode = native"
echo "disguise = filtered # silent, as the scenario checks (closed would answer RST)"
