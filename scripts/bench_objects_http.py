#!/usr/bin/env python3
"""PUT then GET a cluster's objects over one keep-alive connection; prints MB/s for each.

Used by scripts/bench-objects. Arguments: BASE_URL CLUSTER_ID OBJECTS OBJECT_MIB [CONNECTIONS]
[--put-only] (CONNECTIONS default 1; with more, each connection takes its share of the objects
at once; --put-only skips the GETs, for scripts/bench_objects_floor.py); the API key
comes in CMEK_BENCH_KEY (not argv, so it stays out of `ps`). Each object is sent in 1 MiB
writes with a Content-Length (no chunked encoding) and read back into one 1 MiB buffer, so
the client's own memory stays flat; every byte read back is compared with what was sent.
MB/s is 10^6 bytes of object data per second of wall time for the whole phase.
"""

import http.client
import os
import sys
import threading
import time
import urllib.parse

MIB = 1024 * 1024


def fail(what, response):
    body = response.read(4096).decode("utf-8", "replace")
    sys.exit(f"bench-objects: {what}: HTTP {response.status} {response.reason}\n{body}")


def object_path(cluster, i):
    return f"/api/v1/clusters/{cluster}/objects/bench/object-{i:06}"


def put_all(conn, headers, cluster, objects, mib, piece):
    for i in objects:
        conn.putrequest("PUT", object_path(cluster, i))
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(mib * MIB))
        conn.endheaders()
        try:
            for _ in range(mib):
                conn.send(piece)
        except OSError as err:
            # The console answered before reading the whole body: its answer says why.
            print(f"bench-objects: PUT object {i}: {err}", file=sys.stderr)
        response = conn.getresponse()
        if response.status != 201:
            fail(f"PUT object {i}", response)
        response.read()


def get_all(conn, headers, cluster, objects, mib, piece):
    buffer = bytearray(MIB)
    view = memoryview(buffer)
    for i in objects:
        conn.request("GET", object_path(cluster, i), headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            fail(f"GET object {i}", response)
        for part in range(mib):
            filled = 0
            while filled < MIB:
                n = response.readinto(view[filled:])
                if not n:
                    sys.exit(f"bench-objects: GET object {i} ended after "
                             f"{part * MIB + filled} of {mib * MIB} bytes")
                filled += n
            if buffer != piece:
                sys.exit(f"bench-objects: GET object {i}: MiB {part} differs from what was PUT")
        if response.read(1):
            sys.exit(f"bench-objects: GET object {i} is longer than {mib * MIB} bytes")


def timed(phase, *args):
    started = time.perf_counter()
    phase(*args)
    return time.perf_counter() - started


def parallel(phase, connections, url, headers, cluster, objects, mib, piece):
    """Runs `phase` over `connections` keep-alive connections at once, each on its own share
    of the objects (object i goes to connection i % connections); returns the wall time."""
    errors = []

    def share(k):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        try:
            phase(conn, headers, cluster, range(k, objects, connections), mib, piece)
        except SystemExit as failed:
            errors.append(str(failed))
        finally:
            conn.close()

    threads = [threading.Thread(target=share, args=(k,)) for k in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    if errors:
        sys.exit(errors[0])
    return took


def main():
    args = [a for a in sys.argv[1:] if a != "--put-only"]
    put_only = len(args) < len(sys.argv) - 1
    base, cluster, objects, mib = args[0], args[1], int(args[2]), int(args[3])
    connections = int(args[4]) if len(args) > 4 else 1
    url = urllib.parse.urlsplit(base)
    headers = {"Authorization": f"Bearer {os.environ['CMEK_BENCH_KEY']}"}
    piece = os.urandom(MIB)
    total = objects * mib * MIB
    put_took = parallel(put_all, connections, url, headers, cluster, objects, mib, piece)
    print(f"PUT MB/s {total / 1e6 / put_took:.0f}")
    if not put_only:
        get_took = parallel(get_all, connections, url, headers, cluster, objects, mib, piece)
        print(f"GET MB/s {total / 1e6 / get_took:.0f}")


if __name__ == "__main__":
    main()
