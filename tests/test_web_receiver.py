"""The front receiver in-process (fast): what reaches ingest, what every client gets back, and that
stalled, slow, half-closed and idle connections never delay an inverter's reply.

The real service (gunicorn + Flask behind the receiver) is tested under the ``faults`` marker
(tests/test_faults.py); here the receiver runs on its own loop thread with a recording ingest
function and a small upstream HTTP server on a unix socket standing in for gunicorn.
"""
from __future__ import annotations

import socket
import socketserver
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from appliance.protocols.nep import build_request
from appliance.web import receiver as receiver_module
from appliance.web.ingest import InverterPost
from appliance.web.receiver import Receiver
from appliance.web.server import LoopThread, open_listener
from support.vectors import NEP_BDM400
from support.waiting import wait_for

BDM400 = bytes.fromhex(NEP_BDM400["hex"])
INVERTER_REQUEST = build_request("www.nepviewer.net", "/i.php", BDM400)
BIG = 8 << 20


class Upstream(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Stands in for gunicorn: answers with the request head it got (and its body length)."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.heads: list[str] = []
        super().__init__(path, UpstreamHandler)


class UpstreamHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            head += chunk
        head, _, body = head.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += self.request.recv(65536)
        self.server.heads.append(head.decode("latin-1"))
        reply = head + f"\r\nbody={len(body)}".encode()
        if head.startswith(b"GET /big "):
            reply = b"x" * BIG
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                             + f"Content-Length: {len(reply)}\r\n\r\n".encode() + reply)


class Front:
    def __init__(self, tmp_path: Path, ingest_delay: float = 0.0, max_connections: int = 256) -> None:
        self.posts: list[InverterPost] = []
        self.batches: list[int] = []
        self.hold = threading.Event()  # ingest waits for it (set: at once)
        self.hold.set()
        self.inside = threading.Event()
        self.ingested: list[float] = []
        self.delay = ingest_delay
        self.upstream = Upstream(str(tmp_path / "ui.sock"))
        threading.Thread(target=self.upstream.serve_forever, daemon=True).start()
        self.sock = open_listener("127.0.0.1:0")
        self.port = self.sock.getsockname()[1]
        self.loop = LoopThread()
        self.receiver = Receiver(self.ingest, str(tmp_path / "ui.sock"), max_connections=max_connections)
        self.loop.run(self.receiver.start([self.sock]))

    def ingest(self, posts: list[InverterPost]) -> None:
        self.inside.set()
        self.hold.wait()
        self.batches.append(len(posts))
        for post in posts:
            time.sleep(self.delay)
            self.posts.append(post)
        self.ingested.append(time.monotonic())

    def close(self) -> None:
        self.loop.run(self.receiver.close())
        self.loop.stop()
        self.sock.close()
        self.upstream.shutdown()
        self.upstream.server_close()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def exchange(self, data: bytes, *, shut: bool = False, timeout: float = 10.0) -> tuple[bytes, float]:
        """Send ``data`` on a new connection, read to the end: (reply, seconds taken)."""
        started = time.monotonic()
        with self.connect() as sock:
            sock.settimeout(timeout)
            sock.sendall(data)
            if shut:
                sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        return reply, time.monotonic() - started


@contextmanager
def front_for(tmp_path: Path, **kwargs):
    front = Front(tmp_path, **kwargs)
    try:
        yield front
    finally:
        front.close()


@pytest.fixture
def front(tmp_path):
    with front_for(tmp_path) as running:
        yield running


def is_timestamp(reply: bytes) -> bool:
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Type: text/html" in head \
        and len(body) == 14 and body.isdigit()


def test_an_inverter_post_reaches_ingest_and_gets_the_time(front):
    reply, took = front.exchange(INVERTER_REQUEST)
    assert is_timestamp(reply) and took < 1
    post = front.posts[0]
    assert (post.path, post.source, post.body, post.problem) == ("/i.php", "127.0.0.1", BDM400, "")
    assert post.server_port == front.port and post.source_port


@pytest.mark.parametrize("target,path", [("/i%0a.php", "/i\n.php"), ("/", "/"), ("/portal/x.php", "/portal/x.php")])
def test_every_inverter_path_post_gets_the_time(front, target, path):
    reply, _ = front.exchange(f"POST {target} HTTP/1.1\r\nContent-Length: 45\r\n\r\n".encode() + BDM400)
    assert is_timestamp(reply) and front.posts[0].path == path


def test_stalled_connections_never_delay_an_inverter(front):
    stalled = [front.connect() for _ in range(64)]
    for index, sock in enumerate(stalled):
        sock.sendall([b"POST /i.php HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: x", b"\x16\x03\x01garbage", b""][index % 4])
    try:
        for _ in range(20):
            reply, took = front.exchange(INVERTER_REQUEST)
            assert is_timestamp(reply) and took < 1.0, took
    finally:
        for sock in stalled:
            sock.close()
    assert len([p for p in front.posts if p.body == BDM400]) == 20


def test_a_slow_store_never_holds_the_reply(tmp_path):
    with front_for(tmp_path, ingest_delay=3.0) as slow:
        reply, took = slow.exchange(INVERTER_REQUEST)
        assert is_timestamp(reply) and took < receiver_module.REPLY_SECONDS + 0.5
        time.sleep(3.2)
        assert slow.posts and slow.posts[0].body == BDM400  # stored all the same, after the reply


def test_reports_that_wait_are_taken_together_and_each_answered_once_stored(front):
    """While the ingest thread is busy, reports queue; it takes them in one go (one store transaction
    in the service) and each reply goes out only after that batch's ingest returned."""
    front.hold.clear()  # the first report's ingest is slow
    first = threading.Thread(target=front.exchange, args=(INVERTER_REQUEST,))
    first.start()
    assert front.inside.wait(5)
    answered: list[float] = []

    def client() -> None:
        reply, _ = front.exchange(INVERTER_REQUEST)
        assert is_timestamp(reply)
        answered.append(time.monotonic())

    clients = [threading.Thread(target=client) for _ in range(5)]
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + 5
    while front.receiver.pending < 6 and time.monotonic() < deadline:
        time.sleep(0.005)
    front.hold.set()
    for thread in [first, *clients]:
        thread.join()
    assert front.batches == [1, 5] and len(answered) == 5
    assert min(answered) >= front.ingested[1]


def test_a_report_waits_briefly_for_one_still_being_read_and_both_are_stored_together(front, monkeypatch):
    """The ingest thread, idle, gets a report while another connection is still sending its request:
    it waits for that one (up to GATHER_SECONDS) and ingests both in one go (one transaction)."""
    monkeypatch.setattr(receiver_module, "GATHER_SECONDS", 3.0)
    head, body = INVERTER_REQUEST[:-len(BDM400)], BDM400
    with front.connect() as slow:
        slow.sendall(head)
        replies: list[tuple[bytes, float]] = []
        quick = threading.Thread(target=lambda: replies.append(front.exchange(INVERTER_REQUEST)))
        quick.start()
        wait_for(lambda: front.receiver.pending == 1, 5, "the quick report to be queued")
        time.sleep(0.3)
        assert not front.batches  # held for the one still arriving
        slow.sendall(body)
        slow.settimeout(5)
        reply = b""
        while chunk := slow.recv(65536):
            reply += chunk
        quick.join()
    assert is_timestamp(reply) and is_timestamp(replies[0][0])
    assert front.batches == [2] and 0.3 <= replies[0][1] < 2.0


def test_a_report_that_comes_alone_is_not_held(front, monkeypatch):
    monkeypatch.setattr(receiver_module, "GATHER_SECONDS", 3.0)
    reply, took = front.exchange(INVERTER_REQUEST)
    assert is_timestamp(reply) and took < 1.0 and front.batches == [1]


def test_a_stalled_connection_holds_a_report_no_longer_than_the_gather_time(front, monkeypatch):
    monkeypatch.setattr(receiver_module, "GATHER_SECONDS", 0.3)
    with front.connect() as stalled:
        stalled.sendall(b"POST /i.php HTTP/1.1\r\n")
        wait_for(lambda: front.receiver.arriving == 1, 5, "the stalled connection to be counted")
        started = time.monotonic()
        reply, _ = front.exchange(INVERTER_REQUEST)
        assert is_timestamp(reply) and front.batches == [1]
        assert 0.3 <= front.ingested[0] - started < 1.5
        assert front.receiver.arriving == 1
    wait_for(lambda: front.receiver.arriving == 0, 5, "the closed connection to be counted out")


def test_a_header_trickle_is_cut_at_the_deadline_and_the_report_kept(front, monkeypatch):
    monkeypatch.setattr(receiver_module, "HEAD_SECONDS", 1.0)
    with front.connect() as sock:
        sock.settimeout(5)
        started = time.monotonic()
        sock.sendall(b"POST /i.php HTTP/1.1\r\n")
        reply = b""
        for byte in b"Host: www.nepviewer.net\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
            if time.monotonic() - started > 3:
                break
        while chunk := sock.recv(4096):
            reply += chunk
    assert is_timestamp(reply) and time.monotonic() - started < 3.5
    assert front.posts[0].body is None and "no whole request head within 1 s" in front.posts[0].problem


def test_silence_and_garbage_without_a_line_end_are_closed_at_the_deadline(front, monkeypatch):
    monkeypatch.setattr(receiver_module, "HEAD_SECONDS", 0.5)
    for data in (b"", b"\x16\x03\x01\x02\x00"):
        reply, took = front.exchange(data)
        assert reply in (b"",) or reply.startswith(b"HTTP/1.1 408"), reply
        assert 0.4 < took < 2
    reply, _ = front.exchange(b"x" * 9000)  # no line end in 8 KiB: at once
    assert reply.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")) and front.posts == []


def test_half_closed_connections(front):
    reply, _ = front.exchange(INVERTER_REQUEST, shut=True)  # whole request, then SHUT_WR: answered
    assert is_timestamp(reply) and front.posts[-1].body == BDM400
    reply, _ = front.exchange(INVERTER_REQUEST[:len(INVERTER_REQUEST) - 30], shut=True)  # power lost mid-body
    assert is_timestamp(reply) and "connection closed inside the body (15 of 45 bytes)" in front.posts[-1].problem
    reply, _ = front.exchange(b"POST /i.php HTTP/1.1\r\nHost: www.nep", shut=True)  # mid-head
    assert is_timestamp(reply) and "inside the request head" in front.posts[-1].problem
    reply, _ = front.exchange(b"GET /status HTTP/1.1\r\nHo", shut=True)  # not an inverter: closed
    assert reply.startswith(b"HTTP/1.1 400") and len(front.posts) == 3


def test_hundreds_of_idle_connections_make_room_for_inverters(tmp_path):
    with front_for(tmp_path, max_connections=128) as small:
        idle = []
        try:
            for _ in range(500):
                idle.append(small.connect())
            for _ in range(10):
                reply, took = small.exchange(INVERTER_REQUEST)
                assert is_timestamp(reply) and took < 1.0
        finally:
            for sock in idle:
                sock.close()
        assert small.receiver.stats["evicted"] >= 500 - 128
        assert len(small.receiver.connections) <= 128


def test_chunked_and_oversize_bodies(front):
    wire = b"POST /i.php HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"2d\r\n" + BDM400 + b"\r\n0\r\n\r\n"
    assert is_timestamp(front.exchange(wire)[0]) and front.posts[-1].body == BDM400
    broken = b"POST /i.php HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    assert is_timestamp(front.exchange(broken)[0])
    assert "malformed chunked body: chunk size 'zz' is not hexadecimal" in front.posts[-1].problem
    huge = b"POST /i.php HTTP/1.1\r\nContent-Length: 10485760\r\n\r\n" + b"\x79" * 1000
    assert is_timestamp(front.exchange(huge)[0])
    assert front.posts[-1].body is None and "body over 4096 bytes (Content-Length 10485760)" in front.posts[-1].problem


def test_everything_else_goes_to_the_ui_server_with_the_peer(front):
    reply, _ = front.exchange(b"GET /status?x=1 HTTP/1.1\r\nHost: gw\r\nX-Solargw-Peer: 6.6.6.6\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK")
    head = front.upstream.heads[-1]
    assert head.startswith("GET /status?x=1 HTTP/1.1") and "X-Solargw-Peer: 127.0.0.1" in head
    assert "6.6.6.6" not in head and front.posts == []


def test_a_ui_upload_with_expect_continue(front):
    body = b"a=1&" * 1000
    with front.connect() as sock:
        sock.sendall(b"POST /settings HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode())
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(f"body={len(body)}".encode())


def test_a_ui_body_over_the_limit_is_413(front):
    reply, _ = front.exchange(b"POST /settings HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413")


def test_the_ui_server_being_away_is_a_502(front):
    front.upstream.shutdown()
    front.upstream.server_close()
    Path(front.receiver.upstream).unlink()
    reply, _ = front.exchange(b"GET / HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 502")
    assert is_timestamp(front.exchange(INVERTER_REQUEST)[0])  # inverters never notice


def test_a_big_response_streams_to_a_slow_reader_and_a_client_that_reads_nothing_is_dropped(front, monkeypatch):
    monkeypatch.setattr(receiver_module, "WRITE_SECONDS", 1.0)
    with front.connect() as slow:
        slow.sendall(b"GET /big HTTP/1.1\r\n\r\n")
        got = 0
        while chunk := slow.recv(65536):
            got += len(chunk)
            time.sleep(0.001)
    assert got > BIG
    started = time.monotonic()
    with front.connect() as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(b"GET /big HTTP/1.1\r\n\r\n")
        time.sleep(2.5)  # reads nothing: dropped after WRITE_SECONDS
        stuck.settimeout(5)
        got = 0
        try:
            while chunk := stuck.recv(1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
    assert got < BIG and time.monotonic() - started < 6  # reset, not trickled out of the kernel's buffers
    assert is_timestamp(front.exchange(INVERTER_REQUEST)[0])
