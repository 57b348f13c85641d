"""``evalstack view``: a read-only web server over the current backend's executions.

Standard library only (``http.server.ThreadingHTTPServer``). It binds 127.0.0.1 (port 0: a free
one), answers GET and HEAD and refuses every other method with 405, accepts only a loopback Host
header (a page on another site cannot reach it through DNS rebinding), and sends a
Content-Security-Policy that forbids scripts and any fetch beyond the page itself.

Routes::

    /                                   executions, filtered by ?type= &status= &model=
    /executions/<id>/report             the execution's report (report.html's content, with the backend's steps)
    /executions/<id>/report.html        the report.html file the Report step wrote
    /executions/<id>/samples.jsonl      samples.jsonl with an anchor per line (#L<n>)
    /compare?id=<id>&id=<id>...         2-5 executions: per-metric and per-subtask deltas
    /history?group=<model package group> each version's primary metric over time, with its decision
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from evalstack import storage
from evalstack.results.html_report import load_inputs, render_html
from evalstack.results.timings import StepTime, recorded_step_times
from evalstack.runtime.execution import EvaluationPipelineExecution
from evalstack.view import pages
from evalstack.view.executions import Executions, ExecutionView, Filters, NotFound

HOST = "127.0.0.1"
ALLOWED_METHODS = "GET, HEAD"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'"


def _steps(view: ExecutionView) -> list[StepTime]:
    """The backend's step list; where it cannot be read (no ListPipelineExecutionSteps right), the times
    the steps recorded themselves."""
    try:
        return [StepTime(s.name, s.status, s.start_time, s.end_time) for s in view.execution.steps()]
    except ClientError:
        return recorded_step_times(view.execution.s3_output_path)


class Viewer:
    """Routes a GET path to (status, content type, body)."""

    def __init__(self, executions: Executions) -> None:
        self.executions = executions

    def _output_file(self, view: ExecutionView, name: str) -> str:
        uri = storage.join(view.execution.s3_output_path, name) if view.execution.s3_output_path else ""
        if not uri or not storage.exists(uri):
            raise NotFound(f"{view.execution.name} has no {name} (status {view.execution.status})")
        return uri

    def handle(self, target: str) -> tuple[int, str, str]:
        url = urlsplit(target)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.split("/") if p]

        def first(name: str) -> str:
            return (query.get(name) or [""])[0]

        html = "text/html; charset=utf-8"
        if not parts:
            filters = Filters(first("type"), first("model"), first("status"))
            return 200, html, pages.list_page(self.executions.all(filters), filters)
        if parts == ["compare"]:
            return 200, html, pages.compare_page(self.executions.comparable(query.get("id", [])))
        if parts == ["history"]:
            group = first("group")
            if not group:
                raise ValueError("history: give ?group=<model package group>")
            views = self.executions.history(group)
            return 200, html, pages.history_page(group, views, [self.executions.decision(v) for v in views])
        if len(parts) == 3 and parts[0] == "executions":
            view = self.executions.get(parts[1])
            if parts[2] == "report":
                self._output_file(view, "results.json")
                return 200, html, render_html(load_inputs(view.execution.s3_output_path, _steps(view)))
            if parts[2] == "report.html":
                return 200, html, storage.read_text(self._output_file(view, "report.html"))
            if parts[2] == "samples.jsonl":
                with storage.open_text(self._output_file(view, "samples.jsonl")) as lines:
                    return 200, html, pages.samples_page(f"{view.execution.name}: samples.jsonl", lines)
        raise NotFound(f"no page {url.path}")


def _handler(viewer: Viewer, port: Callable[[], int]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "evalstack-view"

        def log_message(self, format: str, *args: Any) -> None:
            return  # requests are not logged: URLs may carry model names the user filters on

        def _send(self, status: int, content_type: str, body: str, head: bool = False) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cache-Control", "no-store")
            if status == HTTPStatus.METHOD_NOT_ALLOWED:
                self.send_header("Allow", ALLOWED_METHODS)
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def _host_ok(self) -> bool:
            return self.headers.get("Host", "") in (f"{HOST}:{port()}", f"localhost:{port()}")

        def _get(self, head: bool) -> None:
            html = "text/html; charset=utf-8"
            if not self._host_ok():
                self._send(403, html, pages.error_page(403, "this server answers requests for 127.0.0.1 only"), head)
                return
            try:
                status, content_type, body = viewer.handle(self.path)
            except NotFound as err:
                status, content_type, body = 404, html, pages.error_page(404, str(err))
            except ValueError as err:
                status, content_type, body = 400, html, pages.error_page(400, str(err))
            except (OSError, RuntimeError, KeyError, ClientError, BotoCoreError) as err:
                # A page that fails (a missing or unreadable file, a refused AWS call) says why.
                status, content_type, body = 500, html, pages.error_page(500, f"{type(err).__name__}: {err}")
            self._send(status, content_type, body, head)

        def do_GET(self) -> None:
            self._get(head=False)

        def do_HEAD(self) -> None:
            self._get(head=True)

        def _refuse(self) -> None:
            self._send(405, "text/html; charset=utf-8", pages.error_page(405, "read-only: only GET and HEAD"))

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    return Handler


class ViewServer:
    """The viewer on 127.0.0.1:<port> (0: a free port) in a background thread, or in the foreground."""

    def __init__(self, executions: Executions, port: int = 0) -> None:
        self._server = ThreadingHTTPServer((HOST, port), _handler(Viewer(executions), lambda: self.port))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def start(self) -> ViewServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="evalstack-view", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()


def backend_executions(region: str | None = None) -> Executions:
    """The executions of the backend chosen as for the evaluators (EVALSTACK_BACKEND, region)."""
    return Executions(lambda: EvaluationPipelineExecution.get_all(region=region))
