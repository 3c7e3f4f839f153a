"""TLS as nginx serves it (docs/tls.md): HTTPS with the run's own CA, HTTP redirected except
ACME challenges, TLS 1.2+ only, HSTS, and the app seeing the request as secure."""

import os
import shutil
import socket
import ssl
import stat
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

CA_BUNDLE = os.environ.get("E2E_CA_BUNDLE", "")
ROOT = Path(__file__).resolve().parents[2]


def _hostport(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def _handshake(base_url: str, version: ssl.TLSVersion) -> str:
    """TLS handshake at exactly VERSION; returns the negotiated version or raises SSLError."""
    host, port = _hostport(base_url)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(CA_BUNDLE)
    ctx.minimum_version = ctx.maximum_version = version
    # Let the client offer old protocols at all (OpenSSL 3's default level forbids TLS 1.1),
    # so a failure below is the server's refusal, not ours.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with (
        socket.create_connection((host, port), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        return tls.version()


def test_https_serves_the_api_with_a_certificate_the_ca_signed(client):
    r = client.get("/api/posts/")
    assert r.status_code == 200, r.text
    assert r.url.startswith("https://")


def test_app_sees_https_so_it_does_not_redirect(client):
    # Django runs with SECURE_SSL_REDIRECT: only a request it sees as secure is answered.
    r = client.get("/api/me/")
    assert r.status_code in (401, 403), (r.status_code, r.headers.get("Location"))


def test_hsts_sent_once_over_https(stack, client):
    """docs/tls.md: `Strict-Transport-Security: max-age=N; includeSubDomains`, N from
    NGINX_HSTS_SECONDS, sent by nginx only (never twice)."""
    seconds = stack.env_values()["NGINX_HSTS_SECONDS"]
    assert int(seconds) > 0, "the test stack's env file turns HSTS off"
    r = client.get("/api/posts/")
    values = [v for k, v in r.raw.headers.items() if k.lower() == "strict-transport-security"]
    assert values == [f"max-age={seconds}; includeSubDomains"], values


def _verify_handshake(base_url: str, context: ssl.SSLContext) -> dict:
    """A TLS handshake for `localhost`, verified by `context`; the served leaf certificate."""
    host, port = _hostport(base_url)
    with (
        socket.create_connection((host, port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        return tls.getpeercert()


def test_served_chain_verifies_against_the_run_ca_and_no_other_trust_store(base_url, tmp_path):
    """The chain nginx serves verifies against the run's CA alone (host name checked), and fails
    verification (not some other TLS error) with no trust store, the public CAs, or another CA
    of the same name."""
    only_ours = ssl.create_default_context(cafile=CA_BUNDLE)
    assert len(only_ours.get_ca_certs()) == 1, "E2E_CA_BUNDLE should hold the run's CA alone"
    leaf = _verify_handshake(base_url, only_ours)
    assert ("DNS", "localhost") in leaf["subjectAltName"], leaf

    other = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=drs self-signed CA for localhost",
         "-keyout", str(tmp_path / "other-ca-key.pem"), "-out", str(other)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    stores = {
        "empty": ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),  # verifies, trusts nothing
        "public CAs": ssl.create_default_context(cafile=requests.certs.where()),
        "another CA of the same name": ssl.create_default_context(cafile=str(other)),
    }
    for name, context in stores.items():
        with pytest.raises(ssl.SSLCertVerificationError) as refused:
            _verify_handshake(base_url, context)
        # 20: unable to get local issuer certificate (19: self-signed certificate in chain)
        assert refused.value.verify_code in (19, 20), (name, refused.value)
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        requests.get(base_url + "/healthz", verify=requests.certs.where(), timeout=10)


@pytest.mark.parametrize("path", ["/api/posts/", "/admin/login/?next=/admin/"])
def test_plain_http_redirects_to_https(http_url, path):
    r = requests.get(
        http_url + path, headers={"Host": "localhost"}, allow_redirects=False, timeout=10
    )
    assert r.status_code == 301
    assert r.headers["Location"] == f"https://localhost{path}"


ACME = "/srv/acme/.well-known/acme-challenge"


def test_acme_challenge_served_over_http_from_the_webroot_volume(stack, http_url):
    token = uuid.uuid4().hex
    nginx_image = stack.inspect(stack.container_ids("nginx")[0])["Config"]["Image"]
    # As certbot --webroot would: write the challenge file into the acme volume.
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "bash",
         "-v", f"{stack.project}_acme:/srv/acme", nginx_image, "-c",
         f"mkdir -p {ACME} && echo {token} > {ACME}/{token}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    r = requests.get(
        f"{http_url}/.well-known/acme-challenge/{token}",
        headers={"Host": "localhost"}, allow_redirects=False, timeout=10,
    )  # fmt: skip
    assert r.status_code == 200, r.status_code
    assert r.text.strip() == token
    missing = requests.get(
        f"{http_url}/.well-known/acme-challenge/nope", headers={"Host": "localhost"}, timeout=10
    )
    assert missing.status_code == 404


def test_tls_1_2_and_1_3_accepted(base_url):
    assert _handshake(base_url, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _handshake(base_url, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1], ids=["tls1.1", "tls1.0"]
)
def test_old_tls_refused_by_the_server(base_url, version):
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(base_url, version)
    # The server's alert, not a client that could not offer the version at all.
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value).upper(), refused.value
    assert "PROTOCOL" in str(refused.value).upper(), refused.value


def _tls12_with_ciphers(base_url: str, ciphers: str) -> str:
    host, port = _hostport(base_url)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(CA_BUNDLE)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    with (
        socket.create_connection((host, port), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        return tls.cipher()[0]


def test_only_modern_ciphers_over_tls_1_2(base_url):
    # The same client code with a forward-secret AEAD suite is accepted ...
    modern = "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert _tls12_with_ciphers(base_url, modern) == modern
    # ... and with suites without forward secrecy refused by the server's handshake alert.
    with pytest.raises(ssl.SSLError) as refused:
        _tls12_with_ciphers(
            base_url, "AES128-SHA:AES256-SHA:AES128-SHA256:AES128-GCM-SHA256:@SECLEVEL=0"
        )
    assert "HANDSHAKE_FAILURE" in str(refused.value).upper(), refused.value


def _raw_request(base_url: str, host: str, path: str, sni: str) -> tuple[dict, bytes]:
    """One HTTPS request on a fresh connection: the certificate nginx presented (its chain
    verified against the run's CA; the name not checked, so that any SNI may be sent) and every
    byte nginx sent before it closed. A refused connection or a failed handshake fails the
    test. Hang guard: 10 s per socket operation."""
    address, port = _hostport(base_url)
    context = ssl.create_default_context(cafile=CA_BUNDLE)
    context.check_hostname = False
    with (
        socket.create_connection((address, port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=sni) as tls,
    ):
        cert = tls.getpeercert()
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        tls.sendall(request.encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        return cert, data


@pytest.mark.parametrize("sni", ["localhost", "evil.example"])
def test_unknown_host_over_https_gets_no_answer(base_url, sni):
    """docs/tls.md: unknown Host names get no answer over HTTPS. The handshake completes with
    the site's certificate, whatever name the client asks for, then nginx's default server
    closes the connection without a byte (444). The served name, asked the same way, is
    answered."""
    _, answer = _raw_request(base_url, "localhost", "/healthz", sni=sni)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
    cert, answer = _raw_request(base_url, "evil.example", "/api/posts/", sni=sni)
    assert ("DNS", "localhost") in cert["subjectAltName"], cert
    assert answer == b"", answer[:80]


def _served_by(base_url: str, ca: str) -> bool:
    """Whether the certificate nginx serves now verifies against `ca`: False only on a failed
    verification; any other error (refused, a broken handshake) fails the test."""
    try:
        _verify_handshake(base_url, ssl.create_default_context(cafile=ca))
        return True
    except ssl.SSLCertVerificationError:
        return False


def _wait_served_by(stack, base_url: str, ca: str, retired: str, timeout: float = 30) -> None:
    """Wait, bounded, until nginx serves the certificate `ca` signed and no longer the one
    `retired` signed. The reload is asynchronous: for a moment after it, the old workers
    still accept connections beside the new ones, so a new connection may get either."""
    deadline = time.monotonic() + timeout
    while not (_served_by(base_url, ca) and not _served_by(base_url, retired)):
        if time.monotonic() > deadline:
            logs = stack.compose("logs", "--tail=30", "nginx", check=False)
            raise AssertionError(f"nginx does not serve only the certificate {ca} signed:\n{logs}")
        time.sleep(0.5)
    for _ in range(5):  # settled: every new connection gets the new certificate
        assert _served_by(base_url, ca)
        assert not _served_by(base_url, retired)


def _hook(stack, lineage: str) -> None:
    done = subprocess.run(
        [ROOT / "scripts" / "certbot-deploy-hook.sh"],
        env={**os.environ, "RENEWED_LINEAGE": lineage,
             "PROD_ENV": stack.env_file, "PROD_PROJECT": stack.project},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout


def _assert_key_is_nginx_uid_only(key: Path) -> None:
    """docs/tls.md: installed as root, the key is readable by nginx's uid (33) alone, no host
    group's; not as root it has to be world-readable (and the hook warns)."""
    info = Path(key).stat()
    owner_mode = (info.st_uid, oct(stat.S_IMODE(info.st_mode)))
    if os.geteuid() == 0:
        assert owner_mode == (33, "0o400"), owner_mode
    else:
        assert stat.S_IMODE(info.st_mode) == 0o644, oct(info.st_mode)


def test_renewed_certificate_installed_by_the_certbot_hook_without_restarting_nginx(
    stack, base_url, tmp_path
):
    nginx = stack.container_ids("nginx")[0]
    started = stack.inspect(nginx)["State"]["StartedAt"]
    certs = Path(CA_BUNDLE).parent
    original, renewed = tmp_path / "original", tmp_path / "renewed"
    original.mkdir()
    for name in ("fullchain.pem", "privkey.pem"):
        shutil.copy(certs / name, original / name)
    certs_script = ROOT / "scripts" / "certs-selfsigned.sh"
    subprocess.run([certs_script, "localhost", str(renewed)], check=True, capture_output=True)
    try:
        _hook(stack, str(renewed))
        _assert_key_is_nginx_uid_only(certs / "privkey.pem")
        _wait_served_by(stack, base_url, str(renewed / "ca.pem"), retired=CA_BUNDLE)
    finally:
        _hook(stack, str(original))
    _wait_served_by(stack, base_url, CA_BUNDLE, retired=str(renewed / "ca.pem"))
    assert stack.inspect(nginx)["State"]["StartedAt"] == started
