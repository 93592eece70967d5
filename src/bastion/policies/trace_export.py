"""The trace exporter process: `python -m bastion.policies.trace_export ENDPOINT SERVICE_NAME`.

A serving process (a worker) starts one (`tracing.SpanSink`, when `exporter_process` is on) and
writes it batches of finished spans on its stdin: frames of a 4-byte big-endian length and a
`marshal`led list of `Span.fields()` tuples. Here they become the SDK's ReadableSpans and go to
the SDK's OTLP/HTTP exporter (protobuf encoding, the POST, its retries) — the ~150k instructions
a span that used to run on a thread of the serving process, on its core.

marshal, not JSON or pickle: the pipe is private to the two processes (not an input anyone else
writes), the values are plain tuples, dicts, str and int, and marshal is the cheapest of the
three for them. The process ignores SIGINT and SIGTERM (a terminal's Ctrl-C or a service manager
signals the whole group: the worker then drains and closes the pipe, and the last batch is
exported) and exits when its stdin closes, which also happens when the worker is killed
(SIGKILL): no orphan outlives it by more than its last export.
"""

from __future__ import annotations

import logging
import marshal
import signal
import sys
from typing import BinaryIO

log = logging.getLogger("bastion.tracing")

MAX_FRAME = 64 * 1024 * 1024


def read_frames(src: BinaryIO):
    """The batches on `src` until it closes (a short frame is the writer's death: dropped)."""
    while True:
        head = src.read(4)
        if len(head) < 4:
            return
        n = int.from_bytes(head, "big")
        if n > MAX_FRAME:
            raise ValueError(f"trace export frame of {n} bytes")
        data = src.read(n)
        if len(data) < n:
            return
        yield marshal.loads(data)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s trace-export: %(message)s")
    endpoint, service_name = argv
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from bastion.policies.tracing import Readables, resource_and_scope

    readables = Readables(*resource_and_scope(service_name))
    exporter = OTLPSpanExporter(endpoint=endpoint)
    try:
        for batch in read_frames(sys.stdin.buffer):
            try:
                exporter.export(readables(batch))
            except Exception:
                log.exception("trace export failed (%d spans)", len(batch))
    finally:
        exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
