"""Protocol conformance of the host's own listeners, with a raw-socket client: the cases of
RFC 6455 sections 5.1-5.8 and 7.4 (each asserts the close code the server sends), and the
HTTP/1.1 request limits (400, 411, 413, 414, 431, 501), each also sent in pieces."""
import json
import socket
import struct
import time
import unittest

from harness import Host, make_jwt
from rawclient import (BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, Closed, RawConnection,
                       close_payload, frame)

MAX_MESSAGE = 4096


class HostCase(unittest.TestCase):
    config = f"max_message_bytes = {MAX_MESSAGE}\n"
    apps = ()

    @classmethod
    def setUpClass(cls):
        cls.host = Host(apps=cls.apps, test_plugin=True, config=cls.config).start()

    @classmethod
    def tearDownClass(cls):
        cls.host.close()

    def port(self, app="testapp"):
        return self.host.apps[app]


class WebSocketCase(HostCase):
    def open(self, name="proto"):
        c = RawConnection(self.port())
        status, _ = c.upgrade(f"/o/{name}")
        self.assertEqual(status, 101)
        hello = json.loads(c.recv_data())
        self.assertEqual(hello["hello"], name)
        self.addCleanup(c.close)
        return c

    def echo(self, c, text):
        c.send(frame(TEXT, text))
        return json.loads(c.recv_data())["echo"]

    def assertFails(self, c, data, code, pieces=1):
        """Sends `data` and expects the server's Close with `code`, then the end of TCP."""
        c.send(data, pieces)
        got, _ = c.expect_close()
        self.assertEqual(got, code)
        self.assertTrue(c.at_eof(), "the server must close the connection after its Close")


class FramingTest(WebSocketCase):
    """RFC 6455 5.1-5.3: masking, reserved bits, opcodes, lengths."""

    def test_masked_frames_in_pieces_are_one_message(self):
        c = self.open()
        c.send(frame(TEXT, "hello"), pieces=7)  # header and mask split across writes
        self.assertEqual(json.loads(c.recv_data())["echo"], "hello")
        big = "x" * 300  # 16-bit length form
        c.send(frame(TEXT, big), pieces=50)
        self.assertEqual(json.loads(c.recv_data())["echo"], big)

    def test_unmasked_client_frame_fails_1002(self):
        self.assertFails(self.open(), frame(TEXT, "plain", mask=False), 1002)

    def test_unmasked_empty_frame_fails_1002(self):
        self.assertFails(self.open(), frame(PING, b"", mask=False), 1002)

    def test_reserved_bits_fail_1002(self):
        for rsv in (1, 2, 4, 7):
            with self.subTest(rsv=rsv):
                self.assertFails(self.open(), frame(TEXT, "x", rsv=rsv), 1002)

    def test_reserved_opcodes_fail_1002(self):
        for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF):
            with self.subTest(opcode=op):
                self.assertFails(self.open(), frame(op, "x"), 1002)

    def test_64_bit_length_with_high_bit_fails_1002(self):
        c = self.open()
        head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + b"\0\0\0\0"
        self.assertFails(c, head, 1002)

    def test_binary_message_is_echoed(self):
        c = self.open()
        c.send(frame(BINARY, b"\x00\xff\x10"))
        fin, op, payload = c.recv_frame()
        self.assertEqual((fin, op, payload), (True, BINARY, b"\x00\xff\x10"))


class ControlFrameTest(WebSocketCase):
    """RFC 6455 5.4, 5.5: control frames, ping and pong."""

    def test_ping_is_answered_with_the_same_payload(self):
        c = self.open()
        for payload in (b"", b"abc", bytes(range(125))):
            c.send(frame(PING, payload), pieces=3)
            self.assertEqual(c.recv_frame(), (True, PONG, payload))

    def test_unsolicited_pong_is_ignored(self):
        c = self.open()
        c.send(frame(PONG, b"unasked"))
        self.assertEqual(self.echo(c, "still open"), "still open")

    def test_control_frame_over_125_bytes_fails_1002(self):
        self.assertFails(self.open(), frame(PING, b"p" * 126), 1002)

    def test_fragmented_control_frame_fails_1002(self):
        self.assertFails(self.open(), frame(PING, b"p", fin=False), 1002)

    def test_control_frames_between_fragments(self):
        c = self.open()
        c.send(frame(TEXT, "frag", fin=False))
        c.send(frame(PING, b"mid"))
        self.assertEqual(c.recv_frame(), (True, PONG, b"mid"))
        c.send(frame(CONTINUATION, "mented", fin=False))
        c.send(frame(PONG, b"unasked"))
        c.send(frame(CONTINUATION, "!"))
        self.assertEqual(json.loads(c.recv_data())["echo"], "fragmented!")


class FragmentationTest(WebSocketCase):
    """RFC 6455 5.4: fragments."""

    def test_continuation_without_a_start_fails_1002(self):
        self.assertFails(self.open(), frame(CONTINUATION, "x"), 1002)

    def test_new_data_frame_inside_a_fragmented_message_fails_1002(self):
        c = self.open()
        c.send(frame(TEXT, "a", fin=False))
        self.assertFails(c, frame(TEXT, "b"), 1002)

    def test_binary_frame_inside_a_fragmented_message_fails_1002(self):
        c = self.open()
        c.send(frame(BINARY, b"a", fin=False))
        self.assertFails(c, frame(BINARY, b"b"), 1002)

    def test_many_fragments_make_one_message(self):
        c = self.open()
        parts = [f"{i}," for i in range(100)]
        data = b"".join(frame(TEXT if i == 0 else CONTINUATION, p, fin=(i == 99))
                        for i, p in enumerate(parts))
        c.send(data, pieces=13)
        self.assertEqual(json.loads(c.recv_data())["echo"], "".join(parts))

    def test_empty_fragments(self):
        c = self.open()
        c.send(frame(TEXT, "", fin=False) + frame(CONTINUATION, "", fin=False) +
               frame(CONTINUATION, "end"))
        self.assertEqual(json.loads(c.recv_data())["echo"], "end")


class Utf8Test(WebSocketCase):
    """RFC 6455 5.6 and 8.1: text must be UTF-8, also across fragments."""

    def test_invalid_utf8_fails_1007(self):
        self.assertFails(self.open(), frame(TEXT, b"ok \xff"), 1007)

    def test_invalid_utf8_in_a_later_fragment_fails_1007(self):
        c = self.open()
        c.send(frame(TEXT, "good", fin=False))
        self.assertFails(c, frame(CONTINUATION, b"\xc0\xaf", fin=False), 1007)

    def test_truncated_sequence_at_the_end_fails_1007(self):
        c = self.open()
        c.send(frame(TEXT, b"ab\xe2\x82", fin=False))
        self.assertFails(c, frame(CONTINUATION, b""), 1007)

    def test_surrogates_and_overlongs_fail_1007(self):
        for bad in (b"\xed\xa0\x80", b"\xe0\x80\xaf", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80"):
            with self.subTest(bytes=bad):
                self.assertFails(self.open(), frame(TEXT, bad), 1007)

    def test_code_point_split_across_fragments_is_valid(self):
        c = self.open()
        euro = "€".encode()  # e2 82 ac
        c.send(frame(TEXT, b"a" + euro[:1], fin=False) + frame(CONTINUATION, euro[1:2], fin=False) +
               frame(CONTINUATION, euro[2:] + b"z"))
        self.assertEqual(json.loads(c.recv_data())["echo"], "a€z")

    def test_binary_is_not_checked(self):
        c = self.open()
        c.send(frame(BINARY, b"\xff\xfe"))
        self.assertEqual(c.recv_frame(), (True, BINARY, b"\xff\xfe"))


class CloseTest(WebSocketCase):
    """RFC 6455 5.5.1 and 7.4: the closing handshake and close codes."""

    def test_close_is_answered_with_the_same_code(self):
        for code in (1000, 1001, 1003, 1007, 1011, 3000, 4001, 4999):
            with self.subTest(code=code):
                c = self.open()
                c.send(frame(CLOSE, close_payload(code, "bye")))
                self.assertEqual(c.expect_close()[0], code)
                self.assertTrue(c.at_eof())

    def test_empty_close_is_answered(self):
        c = self.open()
        c.send(frame(CLOSE, b""))
        code, _ = c.expect_close()
        self.assertIn(code, (None, 1000))
        self.assertTrue(c.at_eof())

    def test_one_byte_close_payload_fails_1002(self):
        self.assertFails(self.open(), frame(CLOSE, b"\x03"), 1002)

    def test_invalid_close_codes_fail_1002(self):
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
            with self.subTest(code=code):
                self.assertFails(self.open(), frame(CLOSE, close_payload(code)), 1002)

    def test_close_reason_must_be_utf8(self):
        self.assertFails(self.open(), frame(CLOSE, close_payload(1000, b"\xff\xfe")), 1007)

    def test_close_in_pieces(self):
        c = self.open()
        c.send(frame(CLOSE, close_payload(1000, "done")), pieces=6)
        self.assertEqual(c.expect_close()[0], 1000)
        self.assertTrue(c.at_eof())

    def test_data_after_close_is_ignored(self):
        c = self.open()
        c.send(frame(CLOSE, close_payload(1000)) + frame(TEXT, "late"))
        fin, op, payload = c.recv_frame()
        self.assertEqual(op, CLOSE)  # nothing was echoed before the Close
        self.assertTrue(c.at_eof())


class MessageSizeTest(WebSocketCase):
    """The host's message limit (max_message_bytes): 1009, however the message comes."""

    def test_limit_exactly_is_accepted(self):
        c = self.open()
        c.send(frame(TEXT, "x" * MAX_MESSAGE), pieces=9)
        self.assertEqual(len(json.loads(c.recv_data())["echo"]), MAX_MESSAGE)

    def test_one_frame_over_the_limit_fails_1009(self):
        c = self.open()
        self.assertFails(c, frame(TEXT, "x" * (MAX_MESSAGE + 1)), 1009)

    def test_declared_length_over_the_limit_fails_1009_before_the_payload(self):
        c = self.open()
        c.send(frame(TEXT, b"", length=10 ** 9))  # the header only: no payload follows
        self.assertEqual(c.expect_close()[0], 1009)

    def test_many_fragments_over_the_limit_fail_1009(self):
        c = self.open()
        piece = "f" * 100
        count = MAX_MESSAGE // 100 + 20
        data = b"".join(frame(TEXT if i == 0 else CONTINUATION, piece, fin=False)
                        for i in range(count))
        c.send_all_or_reset(data)
        got, _ = c.expect_close()
        self.assertEqual(got, 1009)

    def test_fragments_over_the_limit_sent_slowly_fail_1009(self):
        c = self.open()
        c.send(frame(TEXT, "s" * 1000, fin=False))
        for _ in range(3):
            c.send(frame(CONTINUATION, "s" * 1000, fin=False), pieces=4)
        c.send_all_or_reset(frame(CONTINUATION, "s" * 1000, fin=False))
        self.assertEqual(c.expect_close()[0], 1009)

    def test_other_clients_carry_on(self):
        a = self.open("size-a")
        b = self.open("size-a")
        a.send_all_or_reset(frame(TEXT, "x" * (MAX_MESSAGE * 4)))
        self.assertEqual(a.expect_close()[0], 1009)
        self.assertEqual(self.echo(b, "fine"), "fine")


# --- HTTP ---------------------------------------------------------------------------------

def get(target, headers=b"", method=b"GET"):
    return method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n"


class HttpCase(HostCase):
    def exchange(self, raw, pieces=1, app="testapp"):
        """Sends `raw`, reads one answer; the connection stays with the caller."""
        c = RawConnection(self.port(app))
        self.addCleanup(c.close)
        c.send_all_or_reset(raw) if pieces == 1 else c.send(raw, pieces)
        return c, c.read_response()

    def assertRefused(self, raw, status, pieces=1, app="testapp"):
        """`raw` is answered `status` with a JSON error, and then the connection closes."""
        c, (got, headers, body) = self.exchange(raw, pieces, app)
        self.assertEqual(got, status, body)
        self.assertIn("error", json.loads(body))
        self.assertEqual(headers.get("connection"), "close")
        self.assertTrue(c.at_eof(), "the connection must close after the answer")
        return body


class HttpDefaultLimitsTest(HttpCase):
    """The default limits, with the inputs of issue 15: each answered, then closed."""
    apps = ("hopeflow", "broadcaster", "channels")

    def test_100_kib_request_line_is_414(self):
        self.assertRefused(get(b"/slow?pad=" + b"a" * (100 * 1024)), 414)

    def test_100_kib_request_line_in_pieces_is_414(self):
        self.assertRefused(get(b"/slow?pad=" + b"a" * (100 * 1024)), 414, pieces=50)

    def test_64_kib_header_is_431(self):
        self.assertRefused(get(b"/slow", b"X-Big: " + b"b" * (64 * 1024) + b"\r\n"), 431)

    def test_64_kib_header_in_pieces_is_431(self):
        self.assertRefused(get(b"/slow", b"X-Big: " + b"b" * (64 * 1024) + b"\r\n"), 431, pieces=64)

    def test_2000_header_lines_are_431(self):
        lines = b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
        self.assertRefused(get(b"/slow", lines), 431)

    def test_nul_in_the_path_is_400(self):
        self.assertRefused(get(b"/sl\x00ow"), 400)
        self.assertRefused(get(b"/o/a%00b/events"), 400)

    def test_bad_percent_encoding_is_400(self):
        for target in (b"/o/%zz/events", b"/o/a%4/events", b"/slow?x=%", b"/slow?x=%g1"):
            with self.subTest(target=target):
                self.assertRefused(get(target), 400)

    def test_negative_or_malformed_content_length_is_400_at_once(self):
        for value in (b"-1", b"abc", b"1.5", b"", b"1, 2", b"0x10", b"+5"):
            with self.subTest(value=value):
                # No body follows: the answer must not wait for one.
                self.assertRefused(get(b"/slow", b"Content-Length: " + value + b"\r\n", b"POST"), 400)

    def test_two_different_content_lengths_are_400(self):
        self.assertRefused(get(b"/slow", b"Content-Length: 1\r\nContent-Length: 2\r\n", b"POST") + b"ab", 400)

    def test_transfer_encoding(self):
        self.assertRefused(get(b"/slow", b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"POST"), 400)
        self.assertRefused(get(b"/slow", b"Transfer-Encoding: chunked\r\n", b"POST"), 411)
        self.assertRefused(get(b"/slow", b"Transfer-Encoding: gzip\r\n", b"POST"), 501)

    def test_body_over_the_limit_is_413_before_it_is_sent(self):
        self.assertRefused(get(b"/slow", b"Content-Length: 99999999999\r\n", b"POST"), 413)

    def test_malformed_requests_are_400(self):
        for raw in (b"GARBAGE\r\n\r\n", b"GET /slow\r\n\r\n", b"GET  /slow HTTP/1.1\r\n\r\n",
                    get(b"/slow", b"No colon here\r\n"), get(b"/slow", b"X-A: 1\r\n folded\r\n"),
                    get(b"/slow", b"Bad Name: 1\r\n"), get(b"/slow", b"X-Ctl: a\x01b\r\n"),
                    get(b"slow"), b"GET /slow HTTP/1.1\rHost: x\r\n\r\n"):
            with self.subTest(raw=raw[:40]):
                self.assertRefused(raw, 400)

    def test_unknown_method_is_501_and_other_versions_505(self):
        self.assertRefused(get(b"/slow", method=b"BREW"), 501)
        self.assertRefused(b"GET /slow HTTP/2.0\r\nHost: x\r\n\r\n", 505)

    def test_10_kb_jwt_is_read_and_judged(self):
        claims = {"userId": "big-token-user", "exp": int(time.time()) + 600,
                  "roles": ["r%04d" % i for i in range(1400)]}
        token = make_jwt(claims)
        self.assertGreater(len(token), 10_000)
        c = RawConnection(self.port("hopeflow"))
        self.addCleanup(c.close)
        status, _ = c.upgrade("/", b"Authorization: Bearer " + token.encode() + b"\r\n")
        self.assertEqual(status, 101)
        bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        c2 = RawConnection(self.port("hopeflow"))
        self.addCleanup(c2.close)
        status, _ = c2.upgrade("/", b"Authorization: Bearer " + bad.encode() + b"\r\n")
        self.assertEqual(status, 401)

    def test_keep_alive_then_an_oversized_request_on_the_same_connection(self):
        c, (status, headers, _) = self.exchange(get(b"/slow"))
        self.assertEqual(status, 200)
        self.assertNotEqual(headers.get("connection"), "close")
        c.send_all_or_reset(get(b"/slow?pad=" + b"a" * (100 * 1024)))
        status, headers, _ = c.read_response()
        self.assertEqual(status, 414)
        self.assertTrue(c.at_eof())

    def test_pipelined_requests_are_answered_in_order(self):
        c, (first, _, _) = self.exchange(get(b"/slow") + get(b"/nowhere") + get(b"/slow"))
        self.assertEqual([first, c.read_response()[0], c.read_response()[0]], [200, 404, 200])

    def test_pipelined_bad_request_after_good_ones(self):
        c, (first, _, _) = self.exchange(get(b"/slow") + get(b"/o/%zz/x"))
        self.assertEqual(first, 200)
        self.assertEqual(c.read_response()[0], 400)
        self.assertTrue(c.at_eof())

    def test_head_has_no_body_and_expect_continue(self):
        c = RawConnection(self.port())
        self.addCleanup(c.close)
        c.send(get(b"/slow", method=b"HEAD") + get(b"/slow"))
        status, headers, _ = c.read_response(head=True)
        self.assertEqual((status, headers["content-length"]), (200, "11"))
        self.assertEqual(c.read_response(), (200, headers, b'{"ok":true}'))  # no body in between
        c2 = RawConnection(self.port("hopeflow"))
        self.addCleanup(c2.close)
        c2.send(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                b"Expect: 100-continue\r\nContent-Type: application/json\r\n\r\n")
        self.assertEqual(c2.read_response()[0], 100)
        c2.send(b"{}")
        self.assertEqual(c2.read_response()[0], 401)  # no token: judged after the body

    def test_bad_ids_in_every_router_are_400(self):
        cases = [
            ("broadcaster", get(b"/status?projectId=a%00b")),
            ("broadcaster", get(b"/websocket?type=runtime&projectId=%zz")),
            ("broadcaster", get(b"/health?projectId=%E0%A4")),
            ("channels", get(b"/channel/%00/messages")),
            ("channels", get(b"/channel/a%2/websocket")),
            ("hopeflow", get(b"/?token=%00")),
        ]
        for app, raw in cases:
            with self.subTest(app=app, raw=raw[:50]):
                c, (status, _, body) = self.exchange(raw, app=app)
                self.assertEqual(status, 400, body)

    def test_nul_in_a_user_id_from_json_is_400(self):
        body = json.dumps({"userId": "a\u0000b", "type": "t", "payload": {}}).encode()
        token = make_jwt({"userId": "publisher", "exp": int(time.time()) + 600})
        c, (status, _, answer) = self.exchange(
            b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body, app="hopeflow")
        self.assertEqual(status, 400, answer)
        nul_token = make_jwt({"userId": "a\u0000b", "exp": int(time.time()) + 600})
        c2 = RawConnection(self.port("hopeflow"))
        self.addCleanup(c2.close)
        status, _ = c2.upgrade("/", b"Authorization: Bearer " + nul_token.encode() + b"\r\n")
        self.assertIn(status, (400, 401))


class HttpConfiguredLimitsTest(HttpCase):
    """Small configured limits: exactly at each limit is served, one byte past is refused."""
    config = """
max_request_line_bytes = 1024
max_header_bytes = 2048
max_header_lines = 10
max_request_body_bytes = 100
http_request_timeout = 1
http_idle_timeout = 1
"""

    def request_line(self, length):
        prefix, suffix = b"GET /slow?p=", b" HTTP/1.1"
        return prefix + b"a" * (length - len(prefix) - len(suffix)) + suffix

    def test_request_line_limit(self):
        for pieces in (1, 9):
            c, (status, _, _) = self.exchange(self.request_line(1024) + b"\r\nHost: x\r\n\r\n", pieces)
            self.assertEqual(status, 200)
            self.assertRefused(self.request_line(1025) + b"\r\nHost: x\r\n\r\n", 414, pieces)

    def header_section(self, size):
        head = b"Host: x\r\n"
        pad = size - len(head) - len(b"X-Pad: \r\n")
        return head + b"X-Pad: " + b"p" * pad + b"\r\n"

    def test_header_bytes_limit(self):
        for pieces in (1, 7):
            c, (status, _, _) = self.exchange(b"GET /slow HTTP/1.1\r\n" + self.header_section(2048) + b"\r\n", pieces)
            self.assertEqual(status, 200)
            self.assertRefused(b"GET /slow HTTP/1.1\r\n" + self.header_section(2049) + b"\r\n", 431, pieces)

    def test_header_lines_limit(self):
        lines = lambda n: b"".join(b"X-%d: v\r\n" % i for i in range(n))
        c, (status, _, _) = self.exchange(b"GET /slow HTTP/1.1\r\n" + lines(10) + b"\r\n")
        self.assertEqual(status, 200)
        self.assertRefused(b"GET /slow HTTP/1.1\r\n" + lines(11) + b"\r\n", 431)

    def test_body_limit(self):
        post = lambda n: (b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n) + b"x" * n
        c, (status, _, _) = self.exchange(post(100), pieces=5)
        self.assertEqual(status, 200)
        self.assertRefused(post(101), 413)

    def test_slow_request_is_408(self):
        c = RawConnection(self.port())
        self.addCleanup(c.close)
        c.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # never finished
        status, headers, body = c.read_response()
        self.assertEqual(status, 408)
        self.assertTrue(c.at_eof())

    def test_body_that_never_comes_is_408(self):
        c = RawConnection(self.port())
        self.addCleanup(c.close)
        c.send(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        self.assertEqual(c.read_response()[0], 408)

    def test_idle_connection_is_closed(self):
        c, (status, _, _) = self.exchange(get(b"/slow"))
        self.assertEqual(status, 200)
        self.assertTrue(c.at_eof(timeout=5))
        c2 = RawConnection(self.port())
        self.addCleanup(c2.close)
        self.assertTrue(c2.at_eof(timeout=5))  # one that never sends anything, too


if __name__ == "__main__":
    unittest.main()
