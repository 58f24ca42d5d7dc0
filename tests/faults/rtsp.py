"""A real RTSP camera for tests: GStreamer's RTSP server (Debian's gstreamer1.0-rtsp and
gir1.2-gst-rtsp-server-1.0) in a subprocess run by the system Python, which can be stopped and
started again on the same port, as a camera that reboots."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RtspCamera", "rtsp_server_missing"]

SYSTEM_PYTHON = "/usr/bin/python3"
_SCRIPT = Path(__file__).with_name("rtsp_server.py")
_PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "missing = [e for e in ('videotestsrc', 'x264enc', 'rtph264pay') if Gst.ElementFactory.find(e) is None]; "
    "print(' '.join(missing))"
)


def rtsp_server_missing() -> str | None:
    """Why the RTSP test camera cannot run here, or None when it can."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return (
            "GStreamer's RTSP server is not installed for the system Python (apt-get install "
            "gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi): " + probe.stderr.strip()[-200:]
        )
    if probe.stdout.strip():
        return f"GStreamer elements missing: {probe.stdout.strip()} (gstreamer1.0-plugins-base/-good/-ugly)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RtspCamera:
    """``rtsp://127.0.0.1:PORT/cam``: a live 160x120 H.264 test pattern at `fps`. `stop()` kills the
    server (the camera goes away mid-stream), `start()` brings it back on the same port."""

    def __init__(self, *, fps: int = 15, ready_timeout_s: float = 30.0) -> None:
        self.fps = fps
        self.port = _free_port()
        self.ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while True:  # the port may still be held for a moment after a stop
            proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(_SCRIPT), str(self.port), str(self.fps)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            line = proc.stdout.readline() if proc.stdout is not None else ""
            if line.strip() == "ready":
                self._proc = proc
                return
            proc.kill()
            _, err = proc.communicate(timeout=10)
            if time.monotonic() > deadline:
                raise RuntimeError(f"RTSP server did not start on port {self.port}: {line} {err[-500:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.communicate(timeout=10)

    def __enter__(self) -> RtspCamera:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
