"""The node config: every shipped example loads; a missing or wrong one is one line naming the file and the problem
(exit status 2 from every command), read before the networking and model stack is imported."""

import dataclasses
import json
import re
import subprocess
import sys

import pytest
from pacs_support import REPO, cli

from lightweight_seg.pacs.config import SCHEMA, Config, ConfigError, Peer, load_config

PEERS = {"pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}}

# (what is wrong, the file's text or None for no file, the one problem named after the file)
BAD_CONFIGS = [
    ("missing", None, "cannot read it: No such file or directory"),
    (
        "not JSON",
        "{spool_dir: 'spool'}",
        "not JSON: Expecting property name enclosed in double quotes at line 1 column 2",
    ),
    ("not an object", "[1, 2]", "[1, 2] is not of type 'object'"),
    ("no spool_dir", '{"port": 11112}', "'spool_dir' is a required property"),
    ("unknown key", {"quiet_second": 5}, "Additional properties are not allowed ('quiet_second' was unexpected)"),
    ("wrong type", {"port": "11112"}, "port: '11112' is not of type 'integer'"),
    ("a bool for a count", {"workers": True}, "workers: True is not of type 'integer'"),
    ("port 0", {"port": 0}, "port: 0 is less than the minimum of 1"),
    ("port too high", {"port": 65536}, "port: 65536 is greater than the maximum of 65535"),
    ("negative seconds", {"quiet_seconds": -1}, "quiet_seconds: -1 is less than the minimum of 0"),
    ("a timeout of 0", {"network_timeout": 0}, "network_timeout: 0 is less than or equal to the minimum of 0"),
    ("max_pdu_size too small", {"max_pdu_size": 4096}, "max_pdu_size: 4096 is less than the minimum of 16384"),
    ("AE title too long", {"ae_title": "A" * 17}, f"ae_title: '{'A' * 17}' is too long"),
    (
        "several problems",
        {"port": 0, "retry_seconds": -2},
        "port: 0 is less than the minimum of 1; retry_seconds: -2 is less than the minimum of 0",
    ),
    (
        "unknown peer key",
        {"peers": {"pacs": {**PEERS["pacs"], "aet": "X"}}},
        "peers.pacs: Additional properties are not allowed ('aet' was unexpected)",
    ),
    (
        "peer port 0",
        {"peers": {"pacs": {**PEERS["pacs"], "port": 0}}},
        "peers.pacs.port: 0 is less than the minimum of 1",
    ),
    (
        "incomplete peer",
        {"peers": {"pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1"}}},
        "peers.pacs: give either ae_title, host and port (DIMSE) or dicomweb (DICOMweb)",
    ),
    (
        "unknown destination",
        {"peers": PEERS, "destination": "pacs2"},
        "destination: 'pacs2' is not one of the peers (known: pacs)",
    ),
    (
        "bad allowed_hosts",
        {"allowed_hosts": ["10.0.0.0/33"]},
        "allowed_hosts: '10.0.0.0/33' is not an IP address or network",
    ),
]
COMMANDS = [["status"], ["listen"], ["pull", "--from", "pacs", "--series", "1.2.3"], ["retry", "1.2.3"]]


def write(tmp_path, content):
    path = tmp_path / "node.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps({"spool_dir": "spool", **content}))
    return path


@pytest.mark.parametrize(("what", "content", "problem"), BAD_CONFIGS, ids=[case[0] for case in BAD_CONFIGS])
def test_a_bad_config_raises_one_config_error_naming_the_file(tmp_path, what, content, problem):
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (str(caught.value), caught.value.path, caught.value.problem) == (f"{path}: {problem}", path, problem)


@pytest.mark.parametrize(("what", "content", "problem"), BAD_CONFIGS, ids=[case[0] for case in BAD_CONFIGS])
def test_every_command_reports_a_bad_config_on_one_line_and_exits_2(tmp_path, what, content, problem):
    command = COMMANDS[BAD_CONFIGS.index((what, content, problem)) % len(COMMANDS)]
    answer = cli(write(tmp_path, content), *command, timeout=60)
    assert (answer.returncode, answer.stdout, answer.stderr) == (2, "", f"error: {tmp_path / 'node.json'}: {problem}\n")


def test_a_peer_the_command_names_must_be_in_the_config(tmp_path):
    path = write(tmp_path, {"peers": PEERS})
    answer = cli(path, "pull", "--from", "pacs", "--to", "archive", "--series", "1.2.3", timeout=60)
    expected = f"error: {path}: peer 'archive' is not in the config (known: pacs)\n"
    assert (answer.returncode, answer.stdout, answer.stderr) == (2, "", expected)


def test_listen_without_allowed_calling_aets_is_a_config_error(tmp_path):
    path = write(tmp_path, {"peers": PEERS, "destination": "pacs"})  # fine for pull, not for listen
    answer = cli(path, "listen", timeout=120)
    assert answer.returncode == 2, answer.stderr
    assert answer.stderr.splitlines()[-1] == (
        f"error: {path}: allowed_calling_aets is empty: name the AE titles that may send to this node"
    )
    assert "Traceback" not in answer.stderr


def run_main_and_list_heavy_modules(path, *command) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter, then print which of torch / MONAI it imported."""
    code = (
        "import sys\nfrom lightweight_seg.pacs.__main__ import main\n"
        f"rc = main(['--config', {str(path)!r}, *{list(command)!r}])\n"
        "print('imported:', sorted(m for m in ('torch', 'monai') if m in sys.modules))\nsys.exit(rc)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)


def test_status_and_a_bad_config_never_import_the_model_stack(tmp_path):
    good = write(tmp_path, {"peers": PEERS})
    status = run_main_and_list_heavy_modules(good, "status")
    assert (status.returncode, status.stdout) == (0, "queued 0  running 0  done 0  failed 0  parked 0\nimported: []\n")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"spool_dir": "spool", "port": 0}))
    listen = run_main_and_list_heavy_modules(bad, "listen")
    assert (listen.returncode, listen.stdout) == (2, "imported: []\n"), listen.stderr


def test_the_readme_example_loads(tmp_path):
    readme = (REPO / "apps" / "lightweight_seg" / "pacs" / "README.md").read_text()
    (example,) = re.findall(r"```json\n(.*?)```", readme, re.DOTALL)
    (tmp_path / "node.json").write_text(example)
    config = load_config(tmp_path / "node.json")
    assert config.spool_dir == tmp_path / "spool"
    assert (config.destination, config.peer("pacs").port) == ("pacs", 4242)
    assert config.peer("pacs-web").protocol == "dicomweb"
    assert config.max_pdu_size == 262144 and config.allowed_hosts == ["10.0.0.0/24"]


def test_the_schema_has_every_config_and_peer_field_and_no_other():
    assert set(SCHEMA["properties"]) == {field.name for field in dataclasses.fields(Config)}
    peer_keys = set(SCHEMA["properties"]["peers"]["additionalProperties"]["properties"])
    assert peer_keys == {field.name for field in dataclasses.fields(Peer)} - {"name"}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read it: No such file or directory"),
        ('{"token": ', "not JSON: Expecting value at line 1 column 11"),
        ('["token"]', 'not a JSON object ({"username", "password"} or {"token"})'),
    ],
)
def test_an_unusable_credentials_file_is_a_config_error_naming_it(tmp_path, content, problem):
    path = tmp_path / "creds.json"
    if content is not None:
        path.write_text(content)
    peer = Peer(name="web", dicomweb="http://127.0.0.1:1/dicom-web", credentials_file=str(path))
    with pytest.raises(ConfigError) as caught:
        peer.credentials()
    assert str(caught.value) == f"{path}: {problem}"
