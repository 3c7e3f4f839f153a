"""Slow clients against nginx, from one address, while a legitimate client's latency is
measured: trickled uploads (each a body nginx must write to its tmpfs), slow request headers
(slowloris) and connections that never finish the TLS handshake. nginx lets NGINX_BODIES_PER_IP
such bodies in at once (the rest: JSON 429), caps them in total below the tmpfs's size, and cuts
off slow headers and handshakes after 10 s (docs/reliability.md, "Threats and limits")."""

import os
import re
import select
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from abuselib import percentile, record_figures, timed

HOLD_SECONDS = 30  # how long the slow clients keep at it
UPLOADS = 40
BODY_BYTES = 2_000_000  # under NGINX_CLIENT_MAX_BODY_SIZE (2m)
PREFIX_BYTES = 1_900_000  # sent at once by the uploads nginx lets in; the rest is trickled
TRICKLE = b"        "  # 8 bytes every TRICKLE_EVERY seconds
TRICKLE_EVERY = 2.0
SLOW_HEADERS = 100  # TLS connections sending one header line every TRICKLE_EVERY seconds
STALLED_HANDSHAKES = 50  # TCP connections to the HTTPS port that never start TLS
# nginx's client_header_timeout (nginx.conf: 10 s) bounds the TLS handshake too (nginx 1.26 has
# no ssl_handshake_timeout); a connection still open after this many seconds was not cut off.
CUT_OFF_BOUND = 20


def connect(base_url: str, tls: bool = True) -> socket.socket:
    parts = urlsplit(base_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    if tls:
        context = ssl.create_default_context(cafile=os.environ["E2E_CA_BUNDLE"])
        sock = context.wrap_socket(sock, server_hostname="localhost")
    return sock


def host_header(base_url: str) -> str:
    return f"localhost:{urlsplit(base_url).port}"


def read_answer(sock: socket.socket, wait: float) -> bytes:
    """What nginx sent within `wait` seconds (b"" if nothing: the request is still open)."""
    sock.settimeout(wait)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            sock.settimeout(0.5)
    except TimeoutError:
        pass
    except OSError:
        pass  # closed after its answer
    return data


def closed_by_peer(sock: socket.socket) -> bool:
    """True once nginx closed the connection (end of stream or reset); False while open."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    sock.settimeout(0.01)
    try:
        return sock.recv(4096) == b""
    except TimeoutError:
        return False  # TLS housekeeping (a session ticket), no data: still open
    except OSError:
        return True


class Uploads:
    """UPLOADS POSTs of BODY_BYTES over separate connections: the headers of all, then each
    one nginx did not refuse gets PREFIX_BYTES at once and a trickle afterwards."""

    def __init__(self, base_url: str, token: str):
        head = (
            f"POST /api/posts/ HTTP/1.1\r\nHost: {host_header(base_url)}\r\n"
            f"Authorization: Token {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {BODY_BYTES}\r\n\r\n"
        )
        self.socks = [connect(base_url) for _ in range(UPLOADS)]
        for sock in self.socks:
            sock.sendall(head.encode())
        time.sleep(1.5)  # nginx answers a refusal as soon as it has read the header
        self.held, self.refusals = [], []
        for sock in self.socks:
            answer = read_answer(sock, 0.2)
            if answer:
                self.refusals.append(answer)
                sock.close()  # as a client would: nginx need not wait for the body
            else:
                self.held.append(sock)
        prefix = b"x" * PREFIX_BYTES
        for sock in self.held:
            sock.settimeout(10)
            sock.sendall(prefix)
        self.still_open = len(self.held)

    def trickle(self) -> None:
        still_open = 0
        for sock in self.held:
            try:
                sock.sendall(TRICKLE)
                still_open += 1
            except OSError:
                pass
        self.still_open = still_open

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


class SlowHeaders:
    """SLOW_HEADERS TLS connections sending a request header one line at a time, and
    STALLED_HANDSHAKES plain TCP connections to the HTTPS port that never say a word; each is
    timed until nginx closes it."""

    def __init__(self, base_url: str):
        self.start = time.monotonic()
        self.slow = [connect(base_url) for _ in range(SLOW_HEADERS)]
        line = f"GET /api/posts/ HTTP/1.1\r\nHost: {host_header(base_url)}\r\n".encode()
        for sock in self.slow:
            sock.sendall(line)
        self.stalled = [connect(base_url, tls=False) for _ in range(STALLED_HANDSHAKES)]
        self.closed_after: dict[socket.socket, float] = {}

    def tick(self, send: bool) -> None:
        now = time.monotonic() - self.start
        for sock in self.slow + self.stalled:
            if sock in self.closed_after:
                continue
            if closed_by_peer(sock):
                self.closed_after[sock] = now
            elif send and sock in self.slow:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    self.closed_after[sock] = now

    def seconds(self, socks) -> list[float]:
        return [self.closed_after[s] for s in socks if s in self.closed_after]

    def close(self) -> None:
        for sock in self.slow + self.stalled:
            sock.close()


class Background(threading.Thread):
    """Calls `step` until stopped, `every` seconds apart."""

    def __init__(self, step, every: float):
        super().__init__(daemon=True)
        self.step, self.every, self.stop = step, every, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.step()
            self.stop.wait(self.every)


def tmpfs_kb(stack) -> tuple[int, int]:
    """(size, used) of nginx's /tmp in KB, from df inside the container."""
    out = stack.compose("exec", "-T", "nginx", "df", "-Pk", "/tmp")
    size, used = out.splitlines()[1].split()[1:3]
    return int(size), int(used)


def test_slow_uploads_and_headers_do_not_starve_a_legitimate_client(request, stack, make_user):
    alice = make_user("edge-legit")
    token = alice.headers["Authorization"].split()[1]
    env = dict(
        item.split("=", 1)
        for item in stack.inspect(stack.container_ids("nginx")[0])["Config"]["Env"]
    )
    latencies, failures, df_samples = [], [], []

    def legit_request():
        r, seconds = timed(alice.get, "/api/posts/", params={"page_size": 5})
        latencies.append(seconds)
        if r.status_code != 200:
            failures.append(f"{r.status_code} {r.text[:200]}")

    legit = Background(legit_request, 0.2)
    df = Background(lambda: df_samples.append(tmpfs_kb(stack)), 3)
    uploads = slow = None
    legit.start()
    try:
        uploads = Uploads(alice.base_url, token)
        slow = SlowHeaders(alice.base_url)
        df.start()
        end = time.monotonic() + HOLD_SECONDS
        next_send = 0.0
        while time.monotonic() < end:
            send = time.monotonic() >= next_send
            if send:
                uploads.trickle()
                next_send = time.monotonic() + TRICKLE_EVERY
            slow.tick(send)
            time.sleep(0.5)
    finally:
        legit.stop.set()
        df.stop.set()
        for part in (uploads, slow):
            if part is not None:
                part.close()
        legit.join(timeout=30)
        df.join(timeout=30)

    size_kb = max(s for s, _ in df_samples)
    used_max_kb = max(u for _, u in df_samples)
    header_seconds = slow.seconds(slow.slow)
    handshake_seconds = slow.seconds(slow.stalled)
    record_figures(
        request,
        "edge: slow uploads, slow headers, stalled TLS handshakes from one address",
        seconds=HOLD_SECONDS,
        uploads=UPLOADS,
        uploads_let_in=len(uploads.held),
        uploads_refused=len(uploads.refusals),
        uploads_open_at_end=uploads.still_open,
        tmpfs_size_kb=size_kb,
        tmpfs_used_max_kb=used_max_kb,
        slow_header_connections=SLOW_HEADERS,
        slow_headers_cut_off_max_s=round(max(header_seconds, default=-1), 1),
        stalled_handshakes=STALLED_HANDSHAKES,
        stalled_handshakes_cut_off_max_s=round(max(handshake_seconds, default=-1), 1),
        legit_requests=len(latencies),
        legit_failed=len(failures),
        legit_p50_ms=round(percentile(latencies, 50) * 1000, 1),
        legit_p99_ms=round(percentile(latencies, 99) * 1000, 1),
    )
    # Bodies: NGINX_BODIES_PER_IP let in per address, held while they trickle; the rest is
    # refused at once in the API's error shape.
    assert 1 <= len(uploads.held) <= int(env["NGINX_BODIES_PER_IP"]), len(uploads.held)
    assert len(uploads.refusals) == UPLOADS - len(uploads.held)
    for answer in uploads.refusals:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429"), head[:200]
        assert re.search(rb"(?im)^retry-after: *[1-9]", head), head
        assert b'"code":"throttled"' in body, body[:200]
    # The bodies let in sit on the tmpfs, which did not fill up.
    assert used_max_kb >= len(uploads.held) * PREFIX_BYTES * 0.9 / 1024, df_samples
    assert used_max_kb < size_kb, df_samples
    # Slow headers and stalled handshakes were cut off (none still open at the end).
    assert len(header_seconds) == SLOW_HEADERS, f"{len(header_seconds)} of {SLOW_HEADERS}"
    assert len(handshake_seconds) == STALLED_HANDSHAKES, len(handshake_seconds)
    assert max(header_seconds + handshake_seconds) <= CUT_OFF_BOUND
    # The legitimate client was served throughout.
    assert len(latencies) >= 10, len(latencies)
    assert not failures, failures[:5]


def test_spooled_bodies_cannot_fill_the_tmpfs(request, stack):
    """The running nginx's cap on bodies spooled at once (all addresses together) times the
    largest body fits in 3/4 of its tmpfs, as the entrypoint computed it from df."""
    limits = stack.compose("exec", "-T", "nginx", "cat", "/tmp/nginx/limits/server.conf")
    slots = int(re.search(r"limit_conn bodies_all (\d+);", limits).group(1))
    env = dict(
        item.split("=", 1)
        for item in stack.inspect(stack.container_ids("nginx")[0])["Config"]["Env"]
    )
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", env["NGINX_CLIENT_MAX_BODY_SIZE"]).groups()
    max_body = int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    size_kb, _ = tmpfs_kb(stack)
    record_figures(
        request,
        "edge: request bodies spooled at once (all addresses)",
        slots=slots,
        max_body_bytes=max_body,
        tmpfs_kb=size_kb,
    )
    assert slots >= 1, (slots, max_body, size_kb)
    assert slots * max_body <= size_kb * 1024 * 3 / 4, (slots, max_body, size_kb)


def test_requests_at_once_per_address_are_capped(request, stack, base_url):
    """Requests held open from one address (a small body announced, never sent: each waits in
    nginx, counted as in progress): NGINX_CONN_PER_IP are let in, the rest refused at once."""
    per_ip = int(
        dict(
            item.split("=", 1)
            for item in stack.inspect(stack.container_ids("nginx")[0])["Config"]["Env"]
        )["NGINX_CONN_PER_IP"]
    )
    head = (
        f"POST /api/posts/ HTTP/1.1\r\nHost: {host_header(base_url)}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    socks = [connect(base_url) for _ in range(per_ip + 8)]
    try:
        for sock in socks:
            sock.sendall(head)
        time.sleep(1.5)
        answers = [read_answer(sock, 0.2) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 429")]
    record_figures(
        request,
        "edge: requests held open at once from one address",
        opened=len(socks),
        let_in=sum(1 for a in answers if not a),
        refused=len(refused),
        limit=per_ip,
    )
    assert all(not a or a.startswith(b"HTTP/1.1 429") for a in answers), answers
    assert len(refused) >= len(socks) - per_ip, len(refused)
    assert all(b'"code":"throttled"' in a for a in refused)
