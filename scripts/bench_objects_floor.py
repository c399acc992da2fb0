#!/usr/bin/env python3
"""The floor under object PUT: a server that only takes each PUT's body and writes it durably.

Used by scripts/bench-objects. It listens on a free loopback port (printed on the first line
of stdout) and answers HTTP/1.1 keep-alive PUTs with a Content-Length: each body goes into a
new file under DIR (the console's own filesystem, given by the caller), which is fsynced, and
its directory fsynced, before the 201, as the console does. No encryption, no index, no
framework: what remains is the loopback transfer and the durable write, the part of a PUT
that no server on this machine avoids. The same client (scripts/bench_objects_http.py
--put-only) drives it, so its figure is the ceiling for the console's PUT here.

Arguments: DIR. Runs until killed.

With --disk DIR OBJECTS OBJECT_MIB GROUP it measures the disk alone instead and prints the
figure in MB/s: OBJECTS bodies of OBJECT_MIB MiB appended to one file, made durable
(fdatasync) after every GROUP of them, as a store that appended every PUT to a log and
committed GROUP concurrent PUTs at once would do at best. No network, no file per object:
the ceiling for any layout of the data that keeps the fsyncs.
"""

import os
import socket
import sys
import threading
import time
import uuid

CHUNK = 1024 * 1024


def serve(conn, directory):
    buffer = memoryview(bytearray(CHUNK))
    stream = conn.makefile("rb")
    try:
        while stream.readline():
            length = 0
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            fd = os.open(os.path.join(directory, str(uuid.uuid4())),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                left = length
                while left:
                    n = stream.readinto(buffer[:min(left, CHUNK)])
                    if not n:
                        return
                    os.write(fd, buffer[:n])
                    left -= n
                os.fsync(fd)
            finally:
                os.close(fd)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            conn.sendall(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
    finally:
        conn.close()


def disk_alone(directory, objects, object_mib, group):
    body = os.urandom(object_mib << 20)
    path = os.path.join(directory, "append")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        started = time.perf_counter()
        for n in range(1, objects + 1):
            os.write(fd, body)
            if n % group == 0 or n == objects:
                os.fdatasync(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
        os.unlink(path)
    print(f"{objects * len(body) / elapsed / 1e6:.0f}")


def main():
    if sys.argv[1] == "--disk":
        directory, objects, object_mib, group = sys.argv[2], *map(int, sys.argv[3:6])
        os.makedirs(directory, mode=0o700, exist_ok=True)
        disk_alone(directory, objects, object_mib, group)
        return
    directory = sys.argv[1]
    os.makedirs(directory, mode=0o700, exist_ok=True)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, directory), daemon=True).start()


if __name__ == "__main__":
    main()
