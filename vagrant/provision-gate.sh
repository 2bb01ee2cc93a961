#!/usr/bin/env bash
# Gate VM: sshd for the user "demo", hidden by spagate (the .deb's systemd service) on the
# private interface only. Runs as root: provision-gate.sh LAB GATE_IP [APT_PROXY]
# SPAGATE_LAB_GATE=skip installs and configures everything but leaves the service stopped.
set -euo pipefail
lab=$1 gate_ip=$2 proxy=${3:-}
keys=$lab/.keys

"$lab/install-deb.sh" "$lab" "$proxy"

# The interface that holds the private address (eth1); eth0 (Vagrant's NAT) stays open.
iface=$(ip -o -4 addr show | awk -v ip="$gate_ip" 'index($4, ip "/") == 1 { print $2; exit }')
[ -n "$iface" ] || { echo "provision-gate: no interface has $gate_ip" >&2; exit 1; }

# The throwaway login the client uses.
id demo >/dev/null 2>&1 || useradd --create-home --shell /bin/bash demo
install -d -m 700 -o demo -g demo /home/demo/.ssh
ssh-keygen -y -f "$keys/demo_ssh_key" > /home/demo/.ssh/authorized_keys
chown demo:demo /home/demo/.ssh/authorized_keys
chmod 600 /home/demo/.ssh/authorized_keys
systemctl enable --now ssh

# The gate's configuration: the lab's keys, ssh protected on the private interface, in the
# package's place and mode (root:spagate 0640). Stopped first so that re-provisioning starts
# it again with the new file.
systemctl stop spagate 2>/dev/null || true
"$lab/gate-config.sh" "$keys/spa.ini" "$iface" > /etc/spagate.ini.new
chown root:spagate /etc/spagate.ini.new
chmod 0640 /etc/spagate.ini.new
mv /etc/spagate.ini.new /etc/spagate.ini

if [ "${SPAGATE_LAB_GATE:-start}" = skip ]; then
  echo "provision-gate: spagate installed and configured, not started (SPAGATE_LAB_GATE=skip)"
  exit 0
fi
systemctl enable --now spagate

# Provisioning succeeds only once the program is attached, in native (driver) mode.
for _ in $(seq 120); do
  link=$(ip -o link show dev "$iface")
  case "$link" in
    *" xdp "*) echo "provision-gate: spagate attached to $iface (native XDP);" \
                    "ssh on $gate_ip:22 needs SPA now"; exit 0 ;;
    *" xdpgeneric "*) echo "provision-gate: spagate attached to $iface in generic mode," \
                           "not native" >&2; exit 1 ;;
  esac
  sleep 1
done
echo "provision-gate: spagate did not attach to $iface within 120 s:" >&2
journalctl -u spagate -n 30 --no-pager >&2
exit 1
