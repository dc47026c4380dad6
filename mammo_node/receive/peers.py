"""The calling-peer allow-list: entries "AE", "AE@host", "*@host" (host: IP, CIDR or name)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass

from mammo_node.errors import ConfigError

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PeerRule:
    ae_title: str  # "*" = any
    networks: tuple[Network, ...]  # empty = any host
    text: str

    def matches(self, ae_title: str, host: str) -> bool:
        if self.ae_title != "*" and self.ae_title != ae_title.strip():
            return False
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.networks)


def _networks(host: str, entry: str) -> tuple[Network, ...]:
    try:
        return (ipaddress.ip_network(host, strict=False),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as exc:
        raise ConfigError(f'allowed_peers entry "{entry}": cannot resolve host {host!r}') from exc
    return tuple(sorted({ipaddress.ip_network(info[4][0]) for info in infos}, key=str))


def parse_rules(entries: list[str]) -> list[PeerRule]:
    rules = []
    for entry in entries:
        ae, _, host = entry.partition("@")
        ae = ae.strip() or "*"
        if len(ae) > 16:
            raise ConfigError(f'allowed_peers entry "{entry}": AE title longer than 16')
        networks = _networks(host.strip(), entry) if host.strip() else ()
        rules.append(PeerRule(ae, networks, entry))
    return rules


class AllowList:
    """Off when empty; otherwise a peer must match one rule."""

    def __init__(self, entries: list[str]) -> None:
        self.rules = parse_rules(entries)

    @property
    def enabled(self) -> bool:
        return bool(self.rules)

    def host_admitted(self, host: str) -> bool:
        """Could any rule admit a peer from ``host`` (whatever its AE title)? Checked on
        accept, before a byte of the association request is read."""
        if not self.rules:
            return True
        return any(rule.matches(rule.ae_title, host) for rule in self.rules)

    def check(self, ae_title: str, host: str) -> str | None:
        """None when allowed, else the reason for refusing."""
        if not self.rules or any(rule.matches(ae_title, host) for rule in self.rules):
            return None
        return f"calling AE {ae_title.strip()!r} from {host} is not in allowed_peers"
