"""Node configuration (one JSON file) and DICOMweb credentials (environment or a file, never the command line)."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class Peer:
    """A remote DICOM node: DIMSE (ae_title/host/port) or DICOMweb (dicomweb URL).

    DICOMweb credentials come from `credentials_file` (JSON: {"username", "password"} or {"token"}) or else from the
    environment variables `<credentials_env>_USERNAME`/`_PASSWORD` or `<credentials_env>_TOKEN`.
    """

    name: str
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    dicomweb: str | None = None
    credentials_file: str | None = None
    credentials_env: str = "LWSEG_DICOMWEB"
    timeout: float = 30.0  # seconds one request / association may take to connect and to get each answer

    @property
    def protocol(self) -> str:
        return "dicomweb" if self.dicomweb else "dimse"

    def credentials(self) -> dict[str, str]:
        """{"username", "password"}, {"token"} or {} (no authentication)."""
        if self.credentials_file:
            creds = json.loads(Path(self.credentials_file).read_text())
        else:
            env = self.credentials_env
            creds = {
                "username": os.environ.get(f"{env}_USERNAME"),
                "password": os.environ.get(f"{env}_PASSWORD"),
                "token": os.environ.get(f"{env}_TOKEN"),
            }
        if creds.get("token"):
            return {"token": creds["token"]}
        if creds.get("username"):
            return {"username": creds["username"], "password": creds.get("password") or ""}
        return {}


@dataclass
class Config:
    """Everything the node needs; see README.md in this package for an example."""

    spool_dir: Path
    ae_title: str = "LWSEG"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling_aets: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)  # addresses / networks that may connect (empty: any)
    max_associations: int = 64
    max_associations_per_host: int = 16  # open connections one address may hold (idle ones included)
    association_request_timeout: float = 5.0  # a new connection must have sent its A-ASSOCIATE-RQ by then
    network_timeout: float = 60.0  # an established association silent for this long is aborted
    max_pdu_size: int = 262144  # the largest PDU accepted (and advertised as our Maximum Length Received)
    quiet_seconds: float = 10.0
    aborted_quiet_seconds: float = 300.0  # quiet time of a series whose delivering association was aborted
    max_attempts: int = 3
    retry_seconds: float = 30.0
    max_retry_seconds: float = 600.0  # longest wait between two tries to send a written SEG
    workers: int = 1
    bundle_root: Path | None = None  # a bundle or a folder of bundles (default: every bundle the repository ships)
    model: str | None = None  # the bundle id every series goes to, whatever the bundles' series rules say
    rules: Path | None = None
    peers: dict[str, Peer] = field(default_factory=dict)
    destination: str | None = None

    def peer(self, name: str) -> Peer:
        if name not in self.peers:
            raise KeyError(f"peer {name!r} is not in the config (known: {', '.join(self.peers) or 'none'})")
        return self.peers[name]


def load_config(path: Path | str) -> Config:
    """Read the JSON config; relative paths in it are relative to the file."""
    path = Path(path)
    raw = json.loads(path.read_text())
    base = path.parent

    def resolve(value):
        return None if value is None else (base / value).resolve()

    peers = {name: Peer(name=name, **spec) for name, spec in raw.pop("peers", {}).items()}
    for key in ("spool_dir", "bundle_root", "rules"):
        if key in raw:
            raw[key] = resolve(raw[key])
    for name, peer in peers.items():
        if peer.credentials_file:
            peers[name] = replace(peer, credentials_file=str(resolve(peer.credentials_file)))
    config = Config(peers=peers, **raw)
    if config.destination is not None:
        config.peer(config.destination)
    for host in config.allowed_hosts:
        ipaddress.ip_network(host, strict=False)  # a typo must not silently lock every sender out
    if config.max_pdu_size < 16384:
        raise ValueError(f"max_pdu_size {config.max_pdu_size} is below 16384 (no PDU of a normal peer would fit)")
    return config
