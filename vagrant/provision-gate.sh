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
# Blocks until the loader (bcc: seconds on a server, minutes in an emulated VM) attached the
# program and the worker started.
systemctl enable --now spagate

# Provisioning succeeds only once the program is on eth1 in native (driver) mode and the
# worker, as the spagate user, reads the knocks ("attached ...; worker uid ..." in the journal).
case "$(ip -o link show dev "$iface")" in
  *" xdp "*) ;;
  *" xdpgeneric "*) echo "provision-gate: spagate attached to $iface in generic mode, not native" >&2
                    exit 1 ;;
  *) echo "provision-gate: no XDP program on $iface after spagate started:" >&2
     journalctl -u spagate -n 30 --no-pager >&2
     exit 1 ;;
esac
for _ in $(seq 180); do
  pid=$(systemctl show -p MainPID --value spagate)
  if [ "$pid" != 0 ] && journalctl -o cat --no-pager "_PID=$pid" | grep -q "worker uid"; then
    echo "provision-gate: spagate attached to $iface (native XDP), worker pid $pid;" \
         "ssh on $gate_ip:22 needs SPA now"
    exit 0
  fi
  sleep 1
done
echo "provision-gate: the spagate worker did not start within 180 s:" >&2
journalctl -u spagate -n 30 --no-pager >&2
exit 1
