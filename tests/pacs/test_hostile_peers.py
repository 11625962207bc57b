"""Misbehaving peers against the node's DIMSE listener: silent connections and a flood of them from one address,
an address that is not allowed, PDUs that claim far more bytes than any peer may send."""

import logging
import socket
import struct
import threading
import time

import pytest
from pacs_support import NODE_AET, SENDER_AET, free_port
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from lightweight_seg.pacs.config import Config
from lightweight_seg.pacs.node import Node


@pytest.fixture
def node(tmp_path):
    """The listener alone (no model, no destination): what it accepts is all these tests look at."""
    config = Config(
        spool_dir=tmp_path / "spool",
        ae_title=NODE_AET,
        port=free_port(),
        allowed_calling_aets=[SENDER_AET],
        allowed_hosts=["127.0.0.1", "127.0.0.2/32"],
        max_associations=6,
        max_associations_per_host=3,
        association_request_timeout=1.0,
        max_pdu_size=65536,
    )
    node = Node(config)
    node.start_server()
    yield node
    node.stop_server()
    node.jobs.close()


def connect_from(source: str, port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.settimeout(0.5)
    return sock


def closed_by_node(sock: socket.socket, within: float) -> bool:
    """Whether the node closes this connection (to which we send nothing) within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def echo_from(source: str, port: int) -> bool:
    ae = AE(ae_title=SENDER_AET)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET, bind_address=(source, 0))
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def test_silent_and_flooding_connections_do_not_lock_senders_out(node):
    port = node.config.port
    # One address opens 20 connections and never sends an A-ASSOCIATE-RQ: beyond its 3 it is closed at once.
    silent = [connect_from("127.0.0.2", port) for _ in range(20)]
    started = time.monotonic()
    closed = [closed_by_node(sock, 0.3) for sock in silent]
    assert sum(closed) >= 20 - 3 - 1, closed  # one of slack for a connection whose thread was still starting
    # The 3 it was allowed are closed once association_request_timeout (1 s) passes without a request.
    kept = [sock for sock, was_closed in zip(silent, closed) if not was_closed]
    assert all(closed_by_node(sock, 3) for sock in kept)
    assert time.monotonic() - started < 4
    # One that dribbles an A-ASSOCIATE-RQ, a byte every 0.2 s, is cut off at the same deadline.
    dribbler, began = connect_from("127.0.0.2", port), time.monotonic()
    try:
        for byte in struct.pack(">BBL", 0x01, 0, 200) + bytes(200):
            dribbler.send(bytes([byte]))
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert closed_by_node(dribbler, 1) and time.monotonic() - began < 3
    # It keeps reconnecting; a modality elsewhere still gets in at once, every time.
    stop, flood = threading.Event(), []

    def attacker():
        while not stop.is_set():
            try:
                flood.append(connect_from("127.0.0.2", port))
            except OSError:
                pass
            time.sleep(0.01)

    thread = threading.Thread(target=attacker)
    thread.start()
    try:
        time.sleep(0.3)
        for _ in range(5):
            began = time.monotonic()
            assert echo_from("127.0.0.1", port)
            assert time.monotonic() - began < 2
    finally:
        stop.set()
        thread.join()
        for sock in silent + flood:
            sock.close()
    assert len(flood) > 20  # it really was hammering meanwhile
    # An address outside allowed_hosts is closed before anything is read, even with an allowed AE title.
    assert closed_by_node(connect_from("127.0.0.3", port), 0.3)
    assert not echo_from("127.0.0.3", port)
    assert echo_from("127.0.0.1", port)


def stream_until_closed(sock: socket.socket, limit: int) -> int:
    """Send zeros until the peer closes the connection or `limit` bytes are sent; returns how many were sent."""
    chunk, sent = bytes(1 << 20), 0
    sock.settimeout(10)
    try:
        while sent < limit:
            sent += sock.send(chunk)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return sent


def test_pdu_claiming_2_gib_is_refused_before_its_body_is_read(node, caplog):
    port, body = node.config.port, 64 << 20
    caplog.set_level(logging.WARNING, logger="lightweight_seg.pacs.node")
    # Before any association: an A-ASSOCIATE-RQ header that claims 2 GiB, then 64 MiB of its "body".
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(struct.pack(">BBL", 0x01, 0, 2**31))
    assert stream_until_closed(sock, body) < 16 << 20  # closed at the header: only the socket buffers filled
    sock.close()
    # Inside an established association: a P-DATA-TF that claims 2 GiB.
    ae = AE(ae_title=SENDER_AET)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    assert assoc.is_established and assoc.acceptor.maximum_length == 65536  # what peers are told to keep to
    # A duplicate of pynetdicom's socket: its reader thread closes its own copy when the node hangs up.
    raw = assoc.dul.socket.socket.dup()
    raw.sendall(struct.pack(">BBL", 0x04, 0, 2**31))
    assert stream_until_closed(raw, body) < 16 << 20
    raw.close()
    assoc.abort()
    assert caplog.text.count("a PDU of 2147483648 bytes (max_pdu_size 65536)") == 2
    assert echo_from("127.0.0.1", port)  # and the node still works
