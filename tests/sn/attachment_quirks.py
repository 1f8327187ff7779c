#!/usr/bin/env python3
"""attachment_quirks: attachment downloads that misbehave in ways the emulator (tests/snemu) does
not, for tests/sn/test_sn_attachment.c.

    python3 attachment_quirks.py --port-file F [--log L]

GET /api/now/v1/attachment/<the letter X 32 times>/file serves one content (byte i is i*7 mod 251,
100000 bytes) with X-Attachment-Metadata, misbehaving as the letter says:

  a  200 with the whole content, whatever the Range asked
  b  the first request: 200 with the Content-Length of the whole, 30000 bytes, then the connection
     closes; later requests: the Range honoured (206)
  c  206 from byte 0, whatever the Range asked
  d  200 whose metadata says 1000 bytes, with a body of 2000
  e  200 application/octet-stream without X-Attachment-Metadata
  f  as b, but the later answers carry another hash (another file)
  g  as b, but the first answer is chunked and ends cleanly after 30000 bytes

Anything else answers 404 in ServiceNow's envelope. Each download request is appended to the --log
file as "X RANGE" (RANGE is "-" when the request had none). Standard library only.
"""
import argparse
import hashlib
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SIZE = 100000
CONTENT = bytes((i * 7) % 251 for i in range(SIZE))
CUT = 30000
ROUTE = re.compile(r"^/api/now/v1/attachment/([a-z])\1{31}/file$")
RANGE = re.compile(r"^bytes=(\d+)-$")


class Quirks(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = {}  # letter -> requests served
    lock = threading.Lock()
    log_path = None

    def log_message(self, *args):  # quiet
        pass

    def _meta(self, letter, size=SIZE, digest=None):
        return json.dumps({"sys_id": letter * 32, "file_name": "quirk.bin", "size_bytes": str(size),
                           "content_type": "application/octet-stream",
                           "hash": digest or hashlib.sha256(CONTENT).hexdigest()})

    def _head(self, status, headers):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def _send(self, status, body, headers):
        self._head(status, list(headers) + [("Content-Length", str(len(body)))])
        self.wfile.write(body)

    def do_GET(self):
        m = ROUTE.match(self.path.split("?")[0])
        if not m:
            body = json.dumps({"error": {"message": "No Record found", "detail": None},
                               "status": "failure"}).encode()
            self._send(404, body, [("Content-Type", "application/json")])
            return
        letter = m.group(1)
        asked = self.headers.get("Range")
        with self.lock:
            count = self.seen.get(letter, 0)
            self.seen[letter] = count + 1
            if self.log_path:
                with open(self.log_path, "a") as log:
                    log.write("%s %s\n" % (letter, asked or "-"))
        r = RANGE.match(asked or "")
        first = int(r.group(1)) if r else 0
        octet = ("Content-Type", "application/octet-stream")
        meta = ("X-Attachment-Metadata", self._meta(letter))
        if letter == "a":
            self._send(200, CONTENT, [octet, meta])
        elif letter in "bfg" and count == 0:
            if letter == "g":
                self._head(200, [octet, meta, ("Transfer-Encoding", "chunked")])
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (CUT, CONTENT[:CUT]))
            else:
                self._head(200, [octet, meta, ("Content-Length", str(SIZE))])
                self.wfile.write(CONTENT[:CUT])
                self.close_connection = True
        elif letter in "bfg":
            if letter == "f":
                meta = ("X-Attachment-Metadata", self._meta(letter, digest="0" * 64))
            span = ("Content-Range", "bytes %d-%d/%d" % (first, SIZE - 1, SIZE))
            self._send(206 if r else 200, CONTENT[first:], [octet, meta, span])
        elif letter == "c":
            span = ("Content-Range", "bytes 0-%d/%d" % (SIZE - 1, SIZE))
            self._send(206, CONTENT, [octet, meta, span])
        elif letter == "d":
            self._send(200, CONTENT[:2000], [octet, ("X-Attachment-Metadata", self._meta(letter, 1000))])
        elif letter == "e":
            self._send(200, CONTENT[:100], [octet])
        else:
            self._send(404, b"{}", [("Content-Type", "application/json")])


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """Quiet: the client drops connections on purpose (a download it refuses)."""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port-file", required=True, help="where to write the port listened on")
    p.add_argument("--log", help="file the download requests are appended to")
    args = p.parse_args()
    Quirks.log_path = args.log
    server = Server(("127.0.0.1", 0), Quirks)
    server.daemon_threads = True
    with open(args.port_file + ".tmp", "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
