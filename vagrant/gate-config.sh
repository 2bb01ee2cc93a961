#!/usr/bin/env bash
# Print the gate VM's /etc/spagate.ini: gate-config.sh SPA_KEYS_FILE IFACE
# ssh is protected on the private interface only; generic XDP because virtual NICs
# (VirtualBox's e1000) may have no native XDP.
set -euo pipefail
keys_file=$1 iface=$2

echo "# Written by vagrant/provision-gate.sh"
cat "$keys_file"
echo "interface = $iface"
echo "protected = tcp/22"
echo "port = 8484"
echo "open-seconds = 15"
echo "xdp-mode = generic"
