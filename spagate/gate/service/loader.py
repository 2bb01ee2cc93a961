"""The loader (root, one-shot): compile, pin, configure, attach; then it exits.

It is the only process that holds bcc and LLVM, and only for the seconds it runs. What it
leaves behind keeps guarding with no process at all: the program in a BPF link pinned per
interface, the tail-called MAC check in a pinned program array, the maps and the ring buffer
pinned for the worker (shared with the `spagate` group), the program pinned for the monitor.

All or nothing: configuration, interfaces, capabilities, the service account and the pin
directory are checked before anything is loaded; a link this run created is removed again if
a later step fails. A link that already guarded an interface is updated in place (no moment
without a program), so a restart or an upgrade never opens the ports.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from spagate.errors import SpagateError
from spagate.gate.core.config import GateConfig
from spagate.gate.kernel import link, pins
from spagate.gate.service import hostnet
from spagate.gate.service.account import LOADER_CAPS, service_account
from spagate.gate.service.admission import set_tag_hints
from spagate.gate.service.preflight import check_interfaces, missing_capabilities


@dataclass
class LoadOptions:
    interfaces: tuple[str, ...]
    mode: str = "auto"
    force: bool = False  # replace a foreign XDP program
    pin_dir: str = str(pins.DEFAULT_PIN_DIR)
    all_interfaces: bool = False  # interface = all / attach --all: every IP-carrying one


def expand_interfaces(
    opts: LoadOptions, exempt: tuple[str, ...] = (), error=lambda line: None
) -> LoadOptions:
    """The interfaces the gate guards. With all_interfaces: the IP-carrying ones the program
    can parse, now, but for those exempt (`unguarded =`: left outside the gate on purpose, e.g.
    a management path). Named ones: all but those without Ethernet framing (a tun, PPP or
    WireGuard device), where the program would read the IP header as Ethernet and pass every
    packet: each is said at error level (it stays UNGUARDED, and status says so) and the others
    are guarded, so that such a name in an old configuration locks no key holder out. None
    left: SpagateError."""
    found = hostnet.interfaces()
    if opts.all_interfaces:
        names = tuple(i.name for i in found
                      if i.carries_ip and i.guardable and i.name not in exempt)  # fmt: skip
        return LoadOptions(names, opts.mode, opts.force, opts.pin_dir, True)
    bare = hostnet.bare(opts.interfaces, found)
    if not bare:
        return opts
    said = ", ".join(f"{i.name} ({i.kind})" for i in bare)
    names = tuple(n for n in opts.interfaces if n not in {i.name for i in bare})
    if not names:
        raise SpagateError(f"{said}: not Ethernet-framed, the gate cannot read its packets: "
                           "name an Ethernet interface (docs/threat-model.md)")  # fmt: skip
    for i in bare:
        error(f"{i.name} ({i.kind}) is not Ethernet-framed: the gate cannot read its packets, "
              f"so it does not guard it; {i.name} stays UNGUARDED (take it out of the "
              f"interfaces, or name it in unguarded = if it is meant to stay outside)")  # fmt: skip
    return LoadOptions(names, opts.mode, opts.force, opts.pin_dir, False)


def preflight(cfg: GateConfig, opts: LoadOptions):
    """Everything checked before anything loads; returns the service account."""
    check_interfaces(opts.interfaces)
    if cfg.fwknop_access:  # the worker reads it again, as root too, before it drops root
        from spagate.gate.core.fwknop_access import load_access

        load_access(cfg.fwknop_access)  # a bad access.conf: refused before a program attaches
    missing = missing_capabilities(needed=LOADER_CAPS)
    if missing:
        raise SpagateError(f"spagate attach needs {', '.join(missing)} (run it as root)")
    account = service_account()
    trusted_uids, trusted_gids = frozenset({0, account.uid}), frozenset({0, account.gid})
    pin_dir = Path(opts.pin_dir)
    if pin_dir.is_relative_to(pins.BPFFS):
        pins.ensure_bpffs()
    pins.check_pin_dir(pin_dir, trusted_uids, trusted_gids)
    return account


def gate_options(cfg: GateConfig, disguise: str = "filtered", reply=None):
    """The program's compile-time options for cfg (kernel.build.GateOptions); disguise and
    reply (abi.ReplyParams) as hostnet decided them for this host."""
    from spagate.gate.kernel import abi
    from spagate.gate.kernel.build import GateOptions  # no bcc: build imports it lazily

    return GateOptions(
        spa_port=cfg.spa_port,
        spa_rate_per_s=cfg.rate.per_second,
        spa_burst=cfg.rate.burst,
        spa_budget_per_s=cfg.spa_budget,
        untagged=cfg.untagged,
        untagged_budget_per_s=cfg.untagged_budget,
        source_match=cfg.require_source_match,
        udp_idle_timeout_s=cfg.udp_idle_seconds,
        fwknop_port=cfg.fwknop_port if cfg.fwknop_access else 0,  # 0: fwknop off in the kernel
        fwknop_budget_per_s=cfg.fwknop_budget,
        disguise=disguise,
        reply=reply or abi.ReplyParams(),
    )


def load_gate(
    cfg: GateConfig, opts: LoadOptions, log=lambda line: None, error=lambda line: None
) -> dict[str, str]:
    """Load and attach the gate for cfg on opts.interfaces. Returns {interface: mode}."""
    import time

    from spagate.gate.kernel.build import load  # bcc: imported only here

    opts = expand_interfaces(opts, cfg.unguarded, error)
    account = preflight(cfg, opts)
    pins.make_pin_dir(opts.pin_dir, account.gid)
    disguise, why = hostnet.decide_disguise(cfg.disguise)
    reply = hostnet.reply_params(opts.interfaces)
    log(f"{why}; replies with TTL {reply.ttl}, hop limit {reply.hop_limit}")
    gate = load(gate_options(cfg, disguise, reply), pin_dir=opts.pin_dir)
    created: list[str] = []
    try:
        # Configured before any new link exists: the first packet meets the right ports.
        gate.maps.set_protected((p.proto, p.port) for p in cfg.protected)
        gate.maps.set_static(cfg.allow)
        if gate.pin_actions.get("replay") in (pins.PinAction.CREATED, pins.PinAction.REPLACED):
            # A new replay map remembers nothing (a reboot emptied bpffs, a new pin dir):
            # packets stamped before now may have been accepted already (Intake refuses them).
            gate.maps.set_replay_since(time.clock_gettime_ns(time.CLOCK_BOOTTIME))
            log("replay memory begins now: knocks stamped earlier are refused")
        gate.maps.set_spa_keys([i.keys.hmac_key for i in cfg.identities])
        set_tag_hints(cfg, gate.maps, time.time_ns() // 1_000_000)  # the worker rotates them
        gate.pin_extras()
        attached: dict[str, str] = {}
        for name in opts.interfaces:
            had_link = link.pinned_link(opts.pin_dir, name)
            if had_link is not None:
                os.close(had_link)
            attached[name] = str(
                link.attach_link(opts.pin_dir, name, gate.prog_fd, opts.mode, opts.force, log)
            )
            if had_link is None:
                created.append(name)
        for name in set(link.pinned_interfaces(opts.pin_dir)) - set(opts.interfaces):
            link.detach_link(opts.pin_dir, name)
            log(f"{name} is no longer configured: detached it")
        pins.share(opts.pin_dir, account.gid)
        ports = [("SPA", cfg.spa_port)] + (
            [("fwknop", cfg.fwknop_port)] if cfg.fwknop_access else []
        )
        for what, port in ports:
            if udp_listening(port):
                log(f"warning: a socket listens on udp/{port}, the {what} port: the gate takes "
                    "every packet to it, that service gets none")  # fmt: skip
        left = hostnet.unguarded(attached, cfg.unguarded)
        for name in cfg.unguarded:
            log(f"{name} is left outside the gate on purpose (unguarded = {name})")
        if left:
            error(hostnet.unguarded_warning(left))
        masters, gaps = hostnet.l2_multicast_gaps(attached)
        if gaps:
            error(hostnet.l2_multicast_warning(masters, gaps))
    except BaseException:
        for name in created:
            with contextlib.suppress(Exception):
                link.detach_link(opts.pin_dir, name)
        raise
    finally:
        gate.close()  # the links, the program array and the pins keep everything alive
    return attached


def udp_listening(port: int, proc_net: str = "/proc/net") -> bool:
    """Whether a UDP socket of this network namespace is bound to port (IPv4 or IPv6)."""
    for name in ("udp", "udp6"):
        try:
            with open(f"{proc_net}/{name}") as f:
                next(f, None)
                for line in f:
                    local = line.split()[1]  # "0100007F:1F90"
                    if int(local.rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False
