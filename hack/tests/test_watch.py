"""``Cluster.watch_until``'s reading of ``kubectl get --watch -o json``: pretty-printed documents one after the
other, which a pipe hands over in pieces cut anywhere (in a document, in a UTF-8 character)."""

from __future__ import annotations

import json
import os
import threading
import time

from mlmodel_testing.cluster import _objects

DOCUMENTS = [{"metadata": {"name": "iris"}, "status": {"note": f"é{i}" * 50, "step": i}} for i in range(3)]


def test_documents_cut_anywhere_arrive_whole_and_in_order() -> None:
    raw = b"".join(json.dumps(d, indent=4, ensure_ascii=False).encode() + b"\n" for d in DOCUMENTS)
    read, write = os.pipe()

    def writer() -> None:
        for at in range(0, len(raw), 7):  # 7 bytes at a time: through every "é" (2 bytes) sooner or later
            os.write(write, raw[at : at + 7])
        os.close(write)

    threading.Thread(target=writer).start()
    with os.fdopen(read, "rb") as stream:
        assert list(_objects(stream, time.monotonic() + 10)) == DOCUMENTS


def test_a_stream_that_stays_silent_ends_at_the_deadline() -> None:
    read, write = os.pipe()
    os.write(write, json.dumps(DOCUMENTS[0]).encode() + b'\n{"half": ')
    with os.fdopen(read, "rb") as stream:
        started = time.monotonic()
        assert list(_objects(stream, started + 0.3)) == [DOCUMENTS[0]]
        assert time.monotonic() - started < 2
    os.close(write)
