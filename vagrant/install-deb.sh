#!/usr/bin/env bash
# In a VM, as root: install the spagate .deb staged in the lab directory with apt, which
# resolves its Depends from Debian (the box's apt lists and cache, else the network):
#   install-deb.sh LAB [APT_PROXY]
# APT_PROXY (e.g. http://192.168.121.1:3142, apt-cacher-ng on the host) is written to
# /etc/apt/apt.conf.d/01spagate-proxy for VMs that cannot reach Debian directly. Never pip.
set -euo pipefail
lab=$1 proxy=${2:-}
deb=$lab/.deb/spagate.deb
conf=/etc/apt/apt.conf.d/01spagate-proxy
export DEBIAN_FRONTEND=noninteractive

[ -f "$deb" ] || { echo "install-deb: $deb missing (vagrant rsync copies it in)" >&2; exit 1; }
if [ -n "$proxy" ]; then
  printf 'Acquire::http::Proxy "%s";\n' "$proxy" > "$conf"
else
  rm -f "$conf"
fi

start=$(date +%s)
# Recommends stay out: the lab installs what the package needs, as the box provides it.
install() { apt-get install -y -q --no-install-recommends "$deb"; }
if ! install; then
  # Lists too old for the archive (or none, as in a downloaded box): refresh once.
  apt-get update -q
  install
fi
echo "install-deb: $(dpkg-query -W -f='${Package} ${Version}' spagate) installed" \
     "in $(( $(date +%s) - start )) s"
