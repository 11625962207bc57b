"""Node configuration (one JSON file) and DICOMweb credentials (environment or a file, never the command line).

`load_config` checks the whole file before anything runs (unknown keys, types, ranges, then incomplete or undefined
peers and bad addresses) and raises one `ConfigError` naming the file and the problems, so that a typo is one line,
not a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from jsonschema import Draft202012Validator


class ConfigError(ValueError):
    """The node config (or a file it names) cannot be used; `problem` says why, `path` which file, if known."""

    def __init__(self, problem: str, path: Path | str | None = None):
        super().__init__(f"{path}: {problem}" if path else problem)
        self.problem = problem
        self.path = path


_AE_TITLE = {"type": "string", "minLength": 1, "maxLength": 16}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_COUNT = {"type": "integer", "minimum": 1}
_SECONDS = {"type": "number", "minimum": 0}
_TIMEOUT = {"type": "number", "exclusiveMinimum": 0}  # 0 would make a socket non-blocking, not patient
_TEXT = {"type": "string", "minLength": 1}
_TEXT_OR_NULL = {"type": ["string", "null"], "minLength": 1}
_PEER_SCHEMA = {
    "type": "object",
    "properties": {
        "ae_title": _AE_TITLE,
        "host": _TEXT,
        "port": _PORT,
        "dicomweb": _TEXT,
        "credentials_file": _TEXT,
        "credentials_env": _TEXT,
        "timeout": _TIMEOUT,
    },
    "additionalProperties": False,
}
# The keys of `Config` (a test keeps the two in step), their JSON types and ranges.
SCHEMA = {
    "type": "object",
    "required": ["spool_dir"],
    "properties": {
        "spool_dir": _TEXT,
        "ae_title": _AE_TITLE,
        "host": _TEXT,
        "port": _PORT,
        "allowed_calling_aets": {"type": "array", "items": _AE_TITLE},
        "allowed_hosts": {"type": "array", "items": _TEXT},
        "max_associations": _COUNT,
        "max_associations_per_host": _COUNT,
        "association_request_timeout": _TIMEOUT,
        "network_timeout": _TIMEOUT,
        "max_pdu_size": {"type": "integer", "minimum": 16384},  # below it, no PDU of a normal peer would fit
        "quiet_seconds": _SECONDS,
        "aborted_quiet_seconds": _SECONDS,
        "max_attempts": _COUNT,
        "retry_seconds": _SECONDS,
        "max_retry_seconds": _SECONDS,
        "workers": _COUNT,
        "bundle_root": _TEXT_OR_NULL,
        "model": _TEXT_OR_NULL,
        "rules": _TEXT_OR_NULL,
        "peers": {"type": "object", "additionalProperties": _PEER_SCHEMA},
        "destination": _TEXT_OR_NULL,
    },
    "additionalProperties": False,
}


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
            creds = _read_json(Path(self.credentials_file))
            if not isinstance(creds, dict):
                raise ConfigError('not a JSON object ({"username", "password"} or {"token"})', self.credentials_file)
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
            raise ConfigError(f"peer {name!r} is not in the config (known: {', '.join(self.peers) or 'none'})")
        return self.peers[name]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror}", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not JSON: not UTF-8 text", path) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", path) from None


def _problems(raw) -> list[str]:
    """Everything wrong with the parsed file, each as "where: what" ("peers.pacs.port: 0 is less than ...")."""
    problems = []
    for error in Draft202012Validator(SCHEMA).iter_errors(raw):
        where = ".".join(map(str, error.absolute_path))
        problems.append(f"{where}: {error.message}" if where else error.message)
    if problems:
        return sorted(problems)
    for name, spec in raw.get("peers", {}).items():
        dimse = [key for key in ("ae_title", "host", "port") if key in spec]
        if ("dicomweb" in spec) == bool(dimse) or 0 < len(dimse) < 3:
            problems.append(f"peers.{name}: give either ae_title, host and port (DIMSE) or dicomweb (DICOMweb)")
    destination = raw.get("destination")
    if destination is not None and destination not in raw.get("peers", {}):
        known = ", ".join(raw.get("peers", {})) or "none"
        problems.append(f"destination: {destination!r} is not one of the peers (known: {known})")
    for host in raw.get("allowed_hosts", []):
        try:
            ipaddress.ip_network(host, strict=False)  # a typo must not silently lock every sender out
        except ValueError:
            problems.append(f"allowed_hosts: {host!r} is not an IP address or network")
    return problems


def load_config(path: Path | str) -> Config:
    """Read and check the JSON config; relative paths in it are relative to the file.

    Raises:
        ConfigError: the file is missing or not JSON, or has unknown keys, wrong types or values out of range (all
            of these named), or else incomplete or undefined peers or addresses that are not addresses.
    """
    path = Path(path)
    raw = _read_json(path)
    problems = _problems(raw)
    if problems:
        raise ConfigError("; ".join(problems), path)
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
    return Config(peers=peers, **raw)
