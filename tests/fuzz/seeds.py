#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/NAME/), valid
inputs of each kind built from the documented layouts (docs/protocol.md).
Run again after a layout change; the files are checked in."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = 4096


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# fetch_wire_fuzzer: first byte picks the decoder.
server_hello = b"FRYS" + struct.pack("<HH", 1, 0) + bytes(range(32))
client_hello = b"FRYC" + struct.pack("<HH", 1, 4) + b"fuzz" + bytes(60) + bytes(32)
hello_result = b"FRYR" + struct.pack("<HH", 1, 0)
def request(tag, count, gpa):
    return struct.pack("<IBBHQ", tag, 1, count, 0, gpa)
requests = request(1, 1, 0) + request(2, 32, 0) + request(3, 4, 60 * PAGE) + request(4, 1, 64 * PAGE)
reply = struct.pack("<IBBHQII", 2, 2, 2, 0, 0, 0b10, PAGE)
write("fetch_wire", "server_hello", b"\x00" + server_hello)
write("fetch_wire", "client_hello", b"\x01" + client_hello)
write("fetch_wire", "hello_result", b"\x02" + hello_result)
write("fetch_wire", "requests", b"\x03" + requests)
write("fetch_wire", "reply", b"\x04" + reply)


# page_frame_fuzzer: first byte the slice size, then a page frame.
def frame(phase, runs, zero_base=0, bitmap=b""):
    body = bytearray()
    body += struct.pack("<BBHIQQII", 2, phase, 0, len(runs), 0, zero_base, len(bitmap), 0)
    body += bitmap
    for gpa, count, fill in runs:
        body += struct.pack("<QII", gpa, count, 0)
        body += bytes([fill]) * (PAGE * count)
    return bytes(body)

write("page_frame", "data_runs", b"\x00" + frame(1, [(0, 2, 0x61), (10 * PAGE, 1, 0x62)]))
write("page_frame", "zero_bitmap", b"\x05" + frame(1, [(0, 1, 0x61)], PAGE, b"\x0f\x01"))
write("page_frame", "postcopy", b"\x01" + frame(3, [(255 * PAGE, 1, 0x7a)]))
write("page_frame", "zeros_only", b"\x00" + frame(2, [], 16 * PAGE, b"\xff\xff"))


# destination_fuzzer: messages after the built Hello, each a 2-byte length
# and the message (kind byte first).
def msg(b):
    return struct.pack("<H", len(b)) + b

def control(fields):
    # A SourceMessage with one oneof field: (field number, serialized body).
    num, body = fields
    key = (num << 3) | 2
    return b"\x01" + bytes([key]) + bytes([len(body)]) + body

round_end = control((3, b"\x08\x00\x10\x02"))          # RoundEnd{round 0, pages 2}
discard = control((7, b"\x0a\x05\x08\x00\x10\x01" + b"\x10\x01"))
abort = control((6, b"\x0a\x03bye"))
small = frame(1, [(0, 1, 0x61)])
write("destination", "precopy_round", msg(small) + msg(round_end))
write("destination", "discard", msg(small) + msg(round_end) + msg(discard))
write("destination", "abort", msg(small) + msg(abort))
write("destination", "bad_kind", msg(b"\x07\x00"))
