#!/usr/bin/env bash
# Print the client VM's ~/.ssh/config: client-ssh-config.sh GATE_IP
# "gate" goes through spagate; "gate-direct" is the same server without it. --ip source: the
# gate opens for the address the packet comes from (the private network, not a public IP).
set -euo pipefail
gate_ip=$1

cat <<CONF
# Written by vagrant/provision-client.sh
Host gate gate-direct
    HostName $gate_ip
    User demo
    IdentityFile ~/.ssh/spagate_demo
    IdentitiesOnly yes
    StrictHostKeyChecking accept-new
    ConnectTimeout 5

Host gate
    ProxyCommand /usr/bin/spagate connect -h %h -P %p --ip source
    ProxyUseFdpass yes
CONF
