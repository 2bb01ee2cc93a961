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
from spagate.gate.service.preflight import check_interfaces, missing_capabilities


@dataclass
class LoadOptions:
    interfaces: tuple[str, ...]
    mode: str = "auto"
    force: bool = False  # replace a foreign XDP program
    pin_dir: str = str(pins.DEFAULT_PIN_DIR)
    all_interfaces: bool = False  # interface = all / attach --all: every IP-carrying one


def expand_interfaces(opts: LoadOptions) -> LoadOptions:
    """With all_interfaces: the IP-carrying interfaces the program can parse, now."""
    if not opts.all_interfaces:
        return opts
    names = tuple(i.name for i in hostnet.interfaces() if i.carries_ip and i.guardable)
    return LoadOptions(names, opts.mode, opts.force, opts.pin_dir, True)


def preflight(cfg: GateConfig, opts: LoadOptions):
    """Everything checked before anything loads; returns the service account."""
    check_interfaces(opts.interfaces)
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


def load_gate(
    cfg: GateConfig, opts: LoadOptions, log=lambda line: None, error=lambda line: None
) -> dict[str, str]:
    """Load and attach the gate for cfg on opts.interfaces. Returns {interface: mode}."""
    from spagate.gate.kernel.build import GateOptions, load  # bcc: imported only here

    opts = expand_interfaces(opts)
    account = preflight(cfg, opts)
    pins.make_pin_dir(opts.pin_dir, account.gid)
    disguise, why = hostnet.decide_disguise(cfg.disguise)
    reply = hostnet.reply_params(opts.interfaces)
    log(f"{why}; replies with TTL {reply.ttl}, hop limit {reply.hop_limit}")
    gate = load(
        GateOptions(
            spa_port=cfg.spa_port,
            spa_rate_per_s=cfg.rate.per_second,
            spa_burst=cfg.rate.burst,
            spa_budget_per_s=cfg.spa_budget,
            udp_idle_timeout_s=cfg.udp_idle_seconds,
            disguise=disguise,
            reply=reply,
        ),
        pin_dir=opts.pin_dir,
    )
    created: list[str] = []
    try:
        # Configured before any new link exists: the first packet meets the right ports.
        gate.maps.set_protected((p.proto, p.port) for p in cfg.protected)
        gate.maps.set_static(cfg.allow)
        gate.maps.set_spa_keys([i.keys.hmac_key for i in cfg.identities])
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
        left = hostnet.unguarded(set(attached))
        if left:
            error(hostnet.unguarded_warning(left))
    except BaseException:
        for name in created:
            with contextlib.suppress(Exception):
                link.detach_link(opts.pin_dir, name)
        raise
    finally:
        gate.close()  # the links, the program array and the pins keep everything alive
    return attached
