"""A live camera stand-in: an HTTP MJPEG stream (multipart/x-mixed-replace, what IP cameras serve)
at a fixed frame rate, for a fixed number of frames or seconds; it counts what it sent. The ingest stage
reads it like any network camera (OpenCV/FFmpeg), as a live source that drops by policy."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["MjpegCamera"]


class MjpegCamera:
    """Serves `frames` JPEG frames at `fps` to the first client, or fewer once `seconds` have passed
    (when it cannot keep up with `fps`); later clients get 404 (the stream is over, so a
    reconnecting reader finds nothing), or with `serve_again` a stream of their own.

    `hold_after` makes the first client's stream stall: after that many frames the camera sends
    nothing more but keeps the connection open (until the camera is closed), as a hung camera
    does. `connections` counts the clients served."""

    def __init__(
        self,
        payloads: list[bytes],
        *,
        fps: float,
        frames: int,
        seconds: float | None = None,
        hold_after: int | None = None,
        serve_again: bool = False,
    ) -> None:
        if fps <= 0 or frames < 1:
            raise ValueError(f"fps and frames must be positive, got {fps} and {frames}")
        self.payloads, self.fps, self.frames, self.seconds = payloads, fps, frames, seconds
        self.hold_after, self.serve_again = hold_after, serve_again
        self.connections = 0
        self.holding = threading.Event()  # the first stream went silent
        self._closing = threading.Event()
        self.sent = 0
        self.started_s: float | None = None
        self.finished_s: float | None = None
        self.finished = threading.Event()
        self._served = threading.Lock()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                first = camera._served.acquire(blocking=False)
                if not first and not camera.serve_again:
                    self.send_error(404, "the stream is over")
                    return
                camera.connections += 1
                try:
                    camera._stream(self, hold_after=camera.hold_after if first else None)
                finally:
                    camera.finished.set()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"

    def _stream(self, handler: BaseHTTPRequestHandler, *, hold_after: int | None = None) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        handler.end_headers()
        self.started_s = t0 = time.monotonic()
        try:
            for i in range(self.frames):
                if self.seconds is not None and time.monotonic() - t0 >= self.seconds:
                    break
                if i == hold_after:
                    handler.wfile.flush()
                    self.holding.set()
                    self._closing.wait()  # silent, connection open
                    return
                delay = t0 + i / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                jpeg = self.payloads[i % len(self.payloads)]
                head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                handler.wfile.write(head + jpeg + b"\r\n")
                self.sent += 1
            handler.wfile.write(b"--frame--\r\n")
            handler.wfile.flush()
        except OSError:
            pass  # the reader went away
        finally:
            self.finished_s = time.monotonic()

    @property
    def offered_fps(self) -> float:
        """Frames per second actually sent (a slow reader pushes back through TCP)."""
        if self.started_s is None or self.sent == 0:
            return 0.0
        end = self.finished_s or time.monotonic()
        return self.sent / max(1e-3, end - self.started_s)

    def __enter__(self) -> MjpegCamera:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
