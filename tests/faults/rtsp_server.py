"""An RTSP camera: GStreamer's RTSP server serving a live H.264 test pattern at /cam.

Run with the system Python that has PyGObject and gir1.2-gst-rtsp-server-1.0 (Debian's
/usr/bin/python3), not the project's venv: ``python3 rtsp_server.py PORT [FPS]``. Prints
``ready`` once it listens; serves until killed. Used by `tests.faults.rtsp.RtspCamera`.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate={fps}/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)


def main() -> None:
    port, fps = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 15
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE.format(fps=fps))
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
