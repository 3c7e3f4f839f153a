"""A stand-in for Sentry and for a mail server, for tests/e2e/test_error_reporting.py: run in a
container on the stack's backend network, it prints one JSON line on stdout for each event an
SDK posts (HTTP on port 8080, Sentry's envelope endpoint) and each mail it is handed (SMTP on
port 8025). Standard library only: it runs in the web image's Python."""

import gzip
import json
import socketserver
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HTTP_PORT = 8080
SMTP_PORT = 8025


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def envelope_items(body: bytes):
    """(item header, payload) pairs of a Sentry envelope: a header line, then for each item a
    header line and its payload (``length`` bytes, or up to the next newline)."""
    _, _, rest = body.partition(b"\n")
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :]
            rest = rest.removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        yield header, payload


class EnvelopeHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding:
            emit({"sink": "sentry", "error": f"unsupported Content-Encoding {encoding}"})
        for header, payload in envelope_items(body):
            if header.get("type") == "event":
                emit({"sink": "sentry", "path": self.path, "event": json.loads(payload)})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


class SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.reply("220 errors-sink ESMTP")
        sender, recipients = "", []
        while line := self.rfile.readline():
            command = line.decode(errors="replace").strip()
            verb = command[:4].upper()
            if verb in {"EHLO", "HELO"}:
                self.reply("250 errors-sink")
            elif verb == "MAIL":
                sender, recipients = command[10:].strip(), []
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command[8:].strip())
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                lines = []
                while (data := self.rfile.readline()) not in {b".\r\n", b".\n", b""}:
                    lines.append(data[1:] if data.startswith(b"..") else data)
                message = b"".join(lines).decode(errors="replace")
                emit({"sink": "smtp", "from": sender, "to": recipients, "message": message})
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:  # RSET, NOOP, anything else
                self.reply("250 OK")


class SmtpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main() -> None:
    smtp = SmtpServer(("0.0.0.0", SMTP_PORT), SmtpHandler)  # noqa: S104 (a container's port)
    threading.Thread(target=smtp.serve_forever, daemon=True).start()
    http = ThreadingHTTPServer(("0.0.0.0", HTTP_PORT), EnvelopeHandler)  # noqa: S104
    emit({"sink": "ready"})
    http.serve_forever()


if __name__ == "__main__":
    main()
