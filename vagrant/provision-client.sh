#!/usr/bin/env bash
# Client VM: the spagate client (from the .deb), its key file and an ssh config for the gate,
# for the user vagrant. Runs as root: provision-client.sh LAB GATE_IP [APT_PROXY]
set -euo pipefail
lab=$1 gate_ip=$2 proxy=${3:-}
keys=$lab/.keys
home=/home/vagrant

"$lab/install-deb.sh" "$lab" "$proxy"

install -m 600 -o vagrant -g vagrant "$keys/spa.ini" "$home/.spagate.ini"
install -d -m 700 -o vagrant -g vagrant "$home/.ssh"
install -m 600 -o vagrant -g vagrant "$keys/demo_ssh_key" "$home/.ssh/spagate_demo"

"$lab/client-ssh-config.sh" "$gate_ip" > "$home/.ssh/config"
chown vagrant:vagrant "$home/.ssh/config"
chmod 600 "$home/.ssh/config"

install -m 755 "$lab/demo-ssh" /usr/local/bin/demo-ssh
echo "provision-client: ready. From the host: vagrant ssh client -c demo-ssh"
