"""Running `mrcnn` as a user does, and what every CLI test checks about its output."""
import subprocess
import sys

# For tests of behaviour rather than of mmdetection's numbers: a smaller test-time resize bound
# (about a quarter of the pixels of mmdetection's 1333x800, so a quarter of the inference time).
FAST = ('--scale', '640,384')
FAST_SCALE = (640, 384)


def mrcnn(*args, cwd=None, env=None, timeout=600):
    """`mrcnn ARGS` in a subprocess, exactly as a user runs it."""
    return subprocess.run([sys.executable, '-m', 'mrcnn_cli', *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=env)


# Linux hands a process's peak RSS on to the processes it starts (ru_maxrss survives fork and exec),
# so a child of this large test process reports this process's peak.  A small launcher starts the
# command and reports the peak of its only child: the command's own.
_PEAK_LAUNCHER = ('import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); '
                  'sys.stderr.write(f"\\npeak_rss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n"); '
                  'sys.exit(done.returncode)')


def mrcnn_with_peak_rss(*args, timeout=600):
    """(`mrcnn ARGS` as `mrcnn` runs it, the peak RSS in MB of that run alone)."""
    proc = subprocess.run([sys.executable, '-c', _PEAK_LAUNCHER, sys.executable, '-m', 'mrcnn_cli', *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    err, _, peak = proc.stderr.rstrip().rpartition('\npeak_rss_kb=')
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, err), int(peak) / 1024


def mrcnn_here(*args):
    """`mrcnn ARGS` through the same entry point (`main`) in this process, for the many tests of
    options and error lines, where a subprocess would spend most of its time importing torch.
    The process settings main() installs (SIGTERM handler, warning format) are restored after."""
    import contextlib
    import io
    import signal
    import warnings

    from mrcnn_cli.commands.cli import main
    out, err = io.StringIO(), io.StringIO()
    handler, show = signal.getsignal(signal.SIGTERM), warnings.showwarning
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter('default')
            main([str(a) for a in args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        signal.signal(signal.SIGTERM, handler)
        warnings.showwarning = show
    return subprocess.CompletedProcess(['mrcnn', *map(str, args)], code, out.getvalue(), err.getvalue())


def assert_one_error_line(proc, pattern):
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and pattern in errors[0], proc.stderr


def no_partial_files(folder):
    """Temporary or partial outputs left in `folder` (there must be none)."""
    return [p.name for p in folder.rglob('*') if p.name.startswith('.') or p.name.endswith('.part')]


# The exports the ONNX Runtime and OpenVINO tests compare with PyTorch: (variant, style, images, scale)
EXPORT_IMAGES = ['000000397133.jpg', '000000516916.jpg', '000000011813.jpg', '000000181303.jpg']
# R-50 at mmdetection's test scale; the others at a smaller one (the same network either way)
EXPORT_CASES = [('r50', None, EXPORT_IMAGES, None), ('r50_caffe', 'caffe', EXPORT_IMAGES[:2], FAST_SCALE),
         ('x101_32x4d', None, EXPORT_IMAGES[2:3], FAST_SCALE)]


def interruptible():
    """`preexec_fn` for a command a test stops with SIGINT: Ctrl-C restored to its default in the child.
    A test run started in the background of a non-interactive shell ignores SIGINT, its children
    inherit that, and Python then installs no KeyboardInterrupt handler (the run would go on)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class MjpegServer:
    """A live stream as IP cameras send one (MJPEG over HTTP, no length), on port 0, that drops:
    connection k sends `connections[k]` (BGR frames) and closes; any later one is refused (503).
    `url` names it; `opened` counts the connections made.

    >>> with MjpegServer([frames, frames]) as server:   # doctest: +SKIP
    ...     mrcnn('track', server.url)
    """

    def __init__(self, connections):
        import http.server
        import threading

        import cv2
        parts = [[cv2.imencode('.jpg', frame)[1].tobytes() for frame in frames] for frames in connections]
        owner = self
        self.opened = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):   # quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                k, owner.opened = owner.opened, owner.opened + 1
                if k >= len(parts):
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header('Content-Type', 'multipart/x-mixed-replace; boundary=frame')
                self.end_headers()
                for jpg in parts[k]:
                    self.wfile.write(b'--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%b\r\n'
                                     % (len(jpg), jpg))

        self._httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self.url = f'http://127.0.0.1:{self._httpd.server_address[1]}/live.mjpg'

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()
