#!/usr/bin/env python3
"""S3 + SQS emulator for strata's tests: moto's server app behind a lock.

Usage: emulator.py --port PORT [--host 127.0.0.1] [--verbose] [--exit-with-stdin]

One process serves every service moto knows (S3, SQS, ...) on one port,
dispatched the way `moto_server` does it (moto's DomainDispatcherApplication).

Why not plain `moto_server`: moto checks S3 preconditions (`If-None-Match: *`,
`If-Match: <etag>`) and then stores the object in two separate steps, with no
lock between them, so two racing conditional writers of the same key can both
get 200. Here every S3 request that changes state (PUT, POST, DELETE) runs while
holding one global lock, so such writes are serialised and exactly one of two
racing writers wins; the loser gets 412 as from real S3.

S3 reads (GET, HEAD) take the same lock in shared mode: when moto overwrites a
key it closes the old object's buffer, and a read that had already looked the
old object up would otherwise fail with a 500.

SQS fault injection, for tests of what our SQS destination does when SQS
fails part of a batch: `POST /_strata/sqs/faults` with a JSON object
`{"queue": NAME, "fail_every": K, "fail_budget": N, "code": C,
"sender_fault": false, "throttle_calls": M}` makes the next M
`SendMessageBatch` calls to queue NAME answer 400 `RequestThrottled` as a
whole, and after that every K-th entry sent to NAME fail with code C
(N entries in all), as SQS reports a failed entry: in `Failed`, not stored.
`GET /_strata/sqs/stats?queue=NAME` returns what reached NAME:
`{"calls", "entries", "failed", "throttled", "single_sends"}` (entries
counts every entry sent, failed or not).

When ready, prints `emulator listening on http://HOST:PORT` to stdout (the
port actually bound, so `--port 0` picks a free one) and flushes. Exits 0 on
SIGTERM or SIGINT, and with --exit-with-stdin also when its stdin reaches EOF
(so an emulator whose parent died does not linger).
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

S3_MUTATING_METHODS = frozenset({"PUT", "POST", "DELETE"})


class SharedExclusiveLock:
    """A readers-writer lock; writers are preferred so reads cannot starve them."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_shared(self) -> None:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_shared(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_exclusive(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def release_exclusive(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


# Which request this thread serves: moto's SQS message counts are only
# computed for the request that reports them (see _patch_moto_sqs_counts).
_REQUEST = threading.local()
# Requests whose answers hold no queue message counts.
_SQS_UNCOUNTED_TARGETS = frozenset(
    {
        "AmazonSQS.SendMessage",
        "AmazonSQS.SendMessageBatch",
        "AmazonSQS.ReceiveMessage",
        "AmazonSQS.DeleteMessage",
        "AmazonSQS.DeleteMessageBatch",
    }
)
_SQS_SEND_TARGETS = frozenset({"AmazonSQS.SendMessage", "AmazonSQS.SendMessageBatch"})


def _patch_moto_sqs_counts() -> None:
    """Stops moto's SQS sends from slowing down as the queue fills.

    moto builds a queue's whole attribute map, message counts included, each
    time it checks one static attribute, and it checks several per message
    sent or received: each count walks every message with datetime
    arithmetic, so a call costs time in proportion to the messages already
    queued (0.5 s a call at 1,000 messages), and a test or benchmark of
    thousands of messages would measure the emulator. Here the counts are
    computed as before, except while serving a send, receive or delete,
    whose answers do not hold them.
    """
    from moto.sqs import models

    for name in (
        "approximate_number_of_messages",
        "approximate_number_of_messages_delayed",
        "approximate_number_of_messages_not_visible",
    ):
        fget = getattr(models.Queue, name).fget

        def counted(self: Any, _fget: Callable[[Any], int] = fget) -> int:
            return 0 if getattr(_REQUEST, "skip_counts", False) else _fget(self)

        setattr(models.Queue, name, property(counted))


class SqsFaults:
    """Injected SendMessageBatch failures and per-queue counts (see the module docs)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, dict[str, int]] = {}

    def _stats(self, queue: str) -> dict[str, int]:
        return self.stats.setdefault(
            queue,
            {"calls": 0, "entries": 0, "failed": 0, "throttled": 0, "single_sends": 0},
        )

    def control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET").upper()
        try:
            if path == "/_strata/sqs/faults" and method == "POST":
                spec = json.loads(_read_body(environ) or b"{}")
                queue = str(spec["queue"])
                with self.lock:
                    self.faults[queue] = {
                        "fail_every": max(1, int(spec.get("fail_every", 1))),
                        "fail_budget": int(spec.get("fail_budget", 0)),
                        "code": str(spec.get("code", "InternalError")),
                        "sender_fault": bool(spec.get("sender_fault", False)),
                        "throttle_calls": int(spec.get("throttle_calls", 0)),
                    }
                return _json_response(start_response, "200 OK", {"ok": True})
            if path == "/_strata/sqs/stats" and method == "GET":
                queue = parse_qs(environ.get("QUERY_STRING", "")).get("queue", [""])[0]
                with self.lock:
                    stats = dict(self._stats(queue))
                return _json_response(start_response, "200 OK", stats)
        except (KeyError, ValueError, TypeError) as exc:
            return _json_response(start_response, "400 Bad Request", {"error": str(exc)})
        return _json_response(start_response, "404 Not Found", {"error": f"no {method} {path}"})

    def around_sqs(
        self, app: Callable[..., Iterable[bytes]], environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        _REQUEST.skip_counts = target in _SQS_UNCOUNTED_TARGETS
        if target not in _SQS_SEND_TARGETS:
            return app(environ, start_response)
        body = _read_body(environ)
        try:
            request = json.loads(body)
            queue = str(request["QueueUrl"]).rstrip("/").rsplit("/", 1)[-1]
        except (ValueError, KeyError, TypeError):
            environ["wsgi.input"] = io.BytesIO(body)
            return app(environ, start_response)
        failed: list[dict[str, Any]] = []
        with self.lock:
            stats = self._stats(queue)
            fault = self.faults.get(queue)
            if target == "AmazonSQS.SendMessage":
                stats["single_sends"] += 1
            else:
                stats["calls"] += 1
                if fault and fault["throttle_calls"] > 0:
                    fault["throttle_calls"] -= 1
                    stats["throttled"] += 1
                    return _json_response(
                        start_response,
                        "400 Bad Request",
                        {"__type": "com.amazonaws.sqs#RequestThrottled", "message": "Rate exceeded (injected)"},
                        [("x-amzn-query-error", "RequestThrottled;Sender")],
                    )
                kept = []
                for entry in request.get("Entries", []):
                    stats["entries"] += 1
                    if fault and fault["fail_budget"] > 0 and stats["entries"] % fault["fail_every"] == 0:
                        fault["fail_budget"] -= 1
                        stats["failed"] += 1
                        failed.append(
                            {
                                "Id": entry.get("Id"),
                                "SenderFault": fault["sender_fault"],
                                "Code": fault["code"],
                                "Message": "injected failure",
                            }
                        )
                    else:
                        kept.append(entry)
                request["Entries"] = kept
        if not failed:
            environ["wsgi.input"] = io.BytesIO(body)
            return app(environ, start_response)
        if not request["Entries"]:
            return _json_response(start_response, "200 OK", {"Successful": [], "Failed": failed})
        # Forward what was not failed, then add the failures to the answer.
        new_body = json.dumps(request).encode()
        environ["wsgi.input"] = io.BytesIO(new_body)
        environ["CONTENT_LENGTH"] = str(len(new_body))
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None

        result = app(environ, capture)
        try:
            answer = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if not captured.get("status", "").startswith("200"):
            start_response(captured["status"], captured["headers"])
            return [answer]
        merged = json.loads(answer or b"{}")
        merged.setdefault("Successful", [])
        merged["Failed"] = list(merged.get("Failed", [])) + failed
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        return _json_response(start_response, "200 OK", merged, headers, replace_type=False)


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _json_response(
    start_response: Callable[..., Any],
    status: str,
    value: Any,
    headers: list[tuple[str, str]] | None = None,
    replace_type: bool = True,
) -> Iterable[bytes]:
    data = json.dumps(value).encode()
    out = [(k, v) for k, v in (headers or []) if not (replace_type and k.lower() == "content-type")]
    if replace_type or not any(k.lower() == "content-type" for k, _ in out):
        out.append(("Content-Type", "application/x-amz-json-1.0"))
    out.append(("Content-Length", str(len(data))))
    start_response(status, out)
    return [data]


class SerialisedS3App:
    """WSGI app: moto's dispatcher, with S3 writes under one global lock."""

    def __init__(self, warm: Iterable[str] = ("s3", "sqs")) -> None:
        _patch_moto_sqs_counts()
        self.dispatcher = DomainDispatcherApplication(create_backend_app)
        self.s3_lock = SharedExclusiveLock()
        self.sqs_faults = SqsFaults()
        # moto builds each service's app on its first request (~0.4 s for
        # S3); build the ones the tests use before saying we are ready.
        with self.dispatcher.lock:
            for service in warm:
                if service not in self.dispatcher.app_instances:
                    self.dispatcher.app_instances[service] = create_backend_app(service)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        # The same choice of backend moto_server would make (host, signature
        # scope, X-Amz-Target, form body, path); unknown requests go to S3.
        if environ.get("PATH_INFO", "").startswith("/_strata/"):
            return self.sqs_faults.control(environ, start_response)
        app = self.dispatcher.get_application(environ)
        service = getattr(app, "service", None)
        if service == "sqs":
            return self.sqs_faults.around_sqs(app, environ, start_response)
        if service != "s3":
            return app(environ, start_response)

        exclusive = environ.get("REQUEST_METHOD", "GET").upper() in S3_MUTATING_METHODS
        if exclusive:
            self.s3_lock.acquire_exclusive()
        else:
            self.s3_lock.acquire_shared()
        try:
            # Run the request to the end, body included, inside the lock.
            result = app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        finally:
            if exclusive:
                self.s3_lock.release_exclusive()
            else:
                self.s3_lock.release_shared()


def loopback_host(value: str) -> str:
    if value == "localhost":
        return value
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an IP address or 'localhost'"
        ) from None
    if not addr.is_loopback:
        raise argparse.ArgumentTypeError(
            f"refusing to listen on non-loopback address {value}"
        )
    return value


def port_number(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} out of range")
    return port


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="S3 + SQS emulator (moto) with serialised S3 writes"
    )
    parser.add_argument(
        "--host",
        type=loopback_host,
        default="127.0.0.1",
        help="loopback address to listen on (default 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=port_number,
        required=True,
        help="port to listen on; 0 picks a free one (the ready line tells which)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log every request to stderr (off by default so a pipe nobody reads cannot fill up)",
    )
    parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="exit when stdin reaches EOF (e.g. when the parent process dies)",
    )
    return parser.parse_args(argv)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    # What werkzeug.serving.run_simple(threaded=True) does without the
    # reloader (make_server, then serve_forever), done by hand so that the
    # ready line is printed only once the socket is bound and listening.
    server = make_server(
        args.host,
        args.port,
        SerialisedS3App(),
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    port = server.socket.getsockname()[1]
    # moto_server sets this too; moto uses it when it calls itself.
    os.environ["MOTO_PORT"] = str(port)

    if args.exit_with_stdin:

        def watch_stdin() -> None:
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()

    sys.stdout.write(f"emulator listening on http://{url_host(args.host)}:{port}\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except socket.error as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        sys.exit(1)
