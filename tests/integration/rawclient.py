"""A raw-socket HTTP and WebSocket client for protocol tests: frames are built by hand (any
bit, any length, masked or not) and can be sent in pieces, so a test can say exactly what
goes on the wire and read exactly what comes back."""
import os
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
    """One frame's bytes. `rsv` is the three reserved bits (0-7); `length` overrides the
    payload length written in the header (to lie about it)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code, reason=b""):
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


class Closed(Exception):
    """The server closed the TCP connection."""


class RawConnection:
    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data, pieces=1, pause=0.0):
        """Sends `data` in `pieces` roughly equal writes (each flushed on its own)."""
        if pieces <= 1:
            self.sock.sendall(data)
            return
        step = max(1, -(-len(data) // pieces))
        for i in range(0, len(data), step):
            self.sock.sendall(data[i:i + step])
            time.sleep(pause)

    def send_all_or_reset(self, data):
        """Sends what the server takes; it may answer and close before reading everything."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise Closed()
        self.buf += chunk

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def at_eof(self, timeout=5.0):
        """True once the server closed the connection (after nothing but `buf` arrived)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                self._fill()
        except Closed:
            return True
        except socket.timeout:
            return False

    # --- HTTP ---------------------------------------------------------------------------

    def read_response(self, head=False):
        """(status, headers lowercased, body) of one HTTP response (`head`: to a HEAD request,
        so no body follows whatever content-length says)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        text, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = text.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b"" if head or status == 100 else self._take(int(headers.get("content-length", "0")))
        return status, headers, body

    def request(self, raw, pieces=1):
        """Sends a raw request (bytes) and reads one response."""
        self.send(raw, pieces)
        return self.read_response()

    # --- WebSocket ----------------------------------------------------------------------

    def upgrade(self, path, headers=b""):
        key = b"dGhlIHNhbXBsZSBub25jZQ=="
        self.send(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\n" + headers + b"\r\n")
        status, hdrs, body = self.read_response()
        return status, hdrs

    def recv_frame(self):
        """(fin, opcode, payload) of the next frame from the server (servers never mask)."""
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        assert not b1 & 0x80, "a server frame must not be masked"
        return bool(b0 & 0x80), b0 & 0x0F, self._take(n)

    def recv_data(self):
        """The next data frame's payload, skipping nothing: fails on a control frame."""
        fin, op, payload = self.recv_frame()
        assert op in (TEXT, BINARY), (op, payload)
        return payload

    def expect_close(self):
        """Reads frames until the server's Close; returns (code or None, reason bytes).
        Data frames before it are skipped."""
        while True:
            fin, op, payload = self.recv_frame()
            if op == CLOSE:
                if len(payload) >= 2:
                    return struct.unpack("!H", payload[:2])[0], payload[2:]
                return None, payload
