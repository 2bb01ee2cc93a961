"""The only code that knows spagate/bpf/: the ABI mirror, building, pinning, attaching, the ring
buffer and typed maps.

Rule: no policy here, and bcc only in build.py; everything else talks to the kernel through
libbpf (bpfsys) or netlink (link).
"""
