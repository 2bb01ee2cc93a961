#!/usr/bin/env bash
# Client VM: the spagate client, its key file and an ssh config for the gate, for the user
# vagrant. Runs as root: provision-client.sh REPO GATE_IP
set -euo pipefail
repo=$1 gate_ip=$2
keys=$repo/vagrant/.keys
home=/home/vagrant

cd "$repo"
./setup

install -m 600 -o vagrant -g vagrant "$keys/spa.ini" "$home/.spagate.ini"
install -d -m 700 -o vagrant -g vagrant "$home/.ssh"
install -m 600 -o vagrant -g vagrant "$keys/demo_ssh_key" "$home/.ssh/spagate_demo"

vagrant/client-ssh-config.sh "$repo" "$gate_ip" > "$home/.ssh/config"
chown vagrant:vagrant "$home/.ssh/config"
chmod 600 "$home/.ssh/config"

install -m 755 "$repo/vagrant/demo-ssh" /usr/local/bin/demo-ssh
echo "provision-client: ready. From the host: vagrant ssh client -c demo-ssh"
