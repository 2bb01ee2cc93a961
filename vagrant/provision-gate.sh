#!/usr/bin/env bash
# Gate VM: sshd for the user "demo", hidden by spagate (systemd service) on the private
# interface only. Runs as root: provision-gate.sh REPO GATE_IP
set -euo pipefail
repo=$1 gate_ip=$2
keys=$repo/vagrant/.keys

cd "$repo"
./setup

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

# The gate's configuration: the lab's keys, ssh protected on the private interface.
# Stopped first so that re-provisioning starts it again with the new file.
systemctl stop spagate 2>/dev/null || true
(umask 077; vagrant/gate-config.sh "$keys/spa.ini" "$iface" > /etc/spagate.ini)

./setup --service # installs the unit, enables and starts it

# Provisioning succeeds only once the program is attached.
for _ in $(seq 60); do
  if ip -d link show dev "$iface" | grep -q 'prog/xdp'; then
    echo "provision-gate: spagate attached to $iface; ssh on $gate_ip:22 needs SPA now"
    exit 0
  fi
  sleep 1
done
echo "provision-gate: spagate did not attach to $iface within 60 s:" >&2
journalctl -u spagate -n 30 --no-pager >&2
exit 1
