"""Video, camera and stream I/O with OpenCV (FFmpeg backend)."""
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2

from mrcnn_cli.errors import MrcnnError, first_line, warn
from mrcnn_cli.io.images import too_large

# Consecutive failed reads after which a file is taken to have ended (truncated) rather
# than to have one bad frame in the middle.
MAX_CONSECUTIVE_FAILURES = 5
# Waits before the tries to reopen a live stream that dropped: a camera or server that restarts needs
# seconds, and one that is gone should not be hammered.
RECONNECT_WAIT_S = 1.0
RECONNECT_MAX_WAIT_S = 10.0


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int           # declared frame count; 0 when unknown (cameras, streams)


@dataclass
class ReadStats:
    read: int = 0
    skipped: int = 0
    truncated: bool = False


def open_capture(src, name=None, max_pixels=None):
    """An opened cv2.VideoCapture and its properties, or MrcnnError for something not a video
    (or with frames of more than `max_pixels`).  `name` is what messages call it (a stream URL
    without its password)."""
    name = name or src
    cap = None
    try:   # the decoder's boundary: whatever OpenCV/FFmpeg raises on this input
        cap = cv2.VideoCapture(int(src)) if str(src).isdigit() else cv2.VideoCapture(str(src))
        opened = cap.isOpened()
        if opened:
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            fps, frames = cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_COUNT)
    except Exception as e:  # noqa: BLE001
        _release(cap)
        raise MrcnnError(f'cannot open {name} as a video ({first_line(e)})') from None
    if not opened:
        _release(cap)
        raise MrcnnError(f'cannot open {name} as a video')
    if w <= 0 or h <= 0:
        _release(cap)
        raise MrcnnError(f'{name}: no video stream')
    if max_pixels and w * h > max_pixels:
        _release(cap)
        raise too_large(name, w, h, max_pixels, 'frames are')
    frames = int(frames) if 0 < frames < 2 ** 40 else 0    # NaN, negative or absurd: unknown
    return cap, VideoInfo(w, h, fps if 0 < fps < 1000 else 30.0, frames)


def _release(cap):
    try:
        if cap is not None:
            cap.release()
    except Exception:  # noqa: BLE001 - nothing more to free
        pass


def _read(cap):
    """(ok, image) of the next frame; a decoder exception is a failed read."""
    try:
        return cap.read()
    except Exception:  # noqa: BLE001 - the decoder's boundary
        return False, None


def read_frames(cap, info, stats, max_frames=None, start=0):
    """(frame index, BGR image) in order, numbered from `start`.  A frame that fails to decode is
    skipped and counted; several failures in a row end the video (truncated if the declared count
    was not reached)."""
    index, failures = start, 0
    try:
        while max_frames is None or index < max_frames:
            ok, img = _read(cap)
            if not ok or img is None:
                failures += 1
                if failures >= MAX_CONSECUTIVE_FAILURES or not info.frames or index >= info.frames:
                    break
                stats.skipped += 1
                index += 1
                continue
            failures = 0
            stats.read += 1
            yield index, img
            index += 1
        if info.frames and stats.read + stats.skipped < min(info.frames, max_frames or info.frames):
            stats.truncated = True
    finally:
        _release(cap)


def reopen_capture(src, name, info, tries, max_pixels=None, cancel=None):
    """A stream that dropped, opened again: up to `tries` tries, waiting 1, 2, 4 ... seconds
    before each; None when it did not come back, or at once when `cancel` (a threading.Event) is
    set.  MrcnnError when it came back with another frame size (what was drawn and tracked so far
    needs one)."""
    wait = RECONNECT_WAIT_S
    for _ in range(tries):
        if cancel is None:
            time.sleep(wait)
        elif cancel.wait(wait):   # the caller stopped
            return None
        wait = min(2 * wait, RECONNECT_MAX_WAIT_S)
        try:
            cap, again = open_capture(src, name, max_pixels)
        except MrcnnError:
            continue
        if (again.width, again.height) != (info.width, info.height):
            _release(cap)
            raise MrcnnError(f'{name} came back at {again.width}x{again.height}, it was {info.width}x{info.height}: '
                             'it ends here')
        return cap
    return None


CODECS = ('h264', 'vp9', 'mp4v')


def video_suffix(codec):
    return '.webm' if codec == 'vp9' else '.mp4'


def pyav_available():
    import importlib.util
    return importlib.util.find_spec('av') is not None


class VideoSink:
    """An annotated video written under a temporary name and renamed when closed, so that a crash
    or Ctrl-C leaves either nothing or a complete, playable file.

    h264 (default) and vp9 are encoded with PyAV (FFmpeg's libx264 / libvpx-vp9): yuv420p, which
    browsers and common players play, and for mp4 the index at the front (+faststart).  4:2:0 needs
    even sizes, so an odd width or height gets one more edge column or row.  mp4v is OpenCV's
    MPEG-4 Part 2 encoder (no browser plays it); it is also the fallback when PyAV is missing."""

    def __init__(self, path, fps, size, codec='h264'):
        if codec not in CODECS:
            raise MrcnnError(f'unknown codec {codec!r} (use {", ".join(CODECS)})')
        self.path = Path(path)
        self.tmp = self.path.with_name(f'.{self.path.stem}.part{self.path.suffix}')
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size, self.frames = tuple(size), 0
        self.codec = codec if codec == 'mp4v' or pyav_available() else 'mp4v'
        if self.codec != codec:
            warn(f'PyAV is not installed, so {self.path.name} is written as mp4v, which browsers do not '
                 'play; pip install av for H.264')
        try:
            if self.codec == 'mp4v':
                self._open_opencv(fps)
            else:
                self._open_pyav(fps)
        except (OSError, ValueError) as e:
            raise MrcnnError(f'cannot write video {self.path} ({first_line(e)})') from None

    def _open_opencv(self, fps):
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*'mp4v'), fps, self.size)
        if not self.writer.isOpened():
            raise OSError('OpenCV could not open an mp4v writer')
        self.container = None

    def _open_pyav(self, fps):
        import av
        rate = Fraction(fps).limit_denominator(1001)
        options = {'movflags': '+faststart'} if self.path.suffix == '.mp4' else {}
        self.container = av.open(str(self.tmp), mode='w', format='mp4' if self.path.suffix == '.mp4' else 'webm',
                                 options=options)
        name = 'libx264' if self.codec == 'h264' else 'libvpx-vp9'
        self.stream = self.container.add_stream(name, rate=rate)
        w, h = self.size
        self.stream.width, self.stream.height = w + w % 2, h + h % 2
        self.stream.pix_fmt = 'yuv420p'
        self.stream.options = ({'crf': '20', 'preset': 'veryfast'} if name == 'libx264'
                               else {'crf': '32', 'b': '0', 'deadline': 'realtime', 'cpu-used': '8'})

    def write(self, img):
        w, h = self.size
        if img.shape[:2] != (h, w):   # a stream that changed its resolution: the video keeps its first
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        try:   # the encoder's boundary: a full disk or an FFmpeg error is one line naming the file
            if self.container is None:
                self.writer.write(img)
            else:
                import av
                if w % 2 or h % 2:
                    img = cv2.copyMakeBorder(img, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
                frame = av.VideoFrame.from_ndarray(img, format='bgr24')
                frame.pts = self.frames
                for packet in self.stream.encode(frame):
                    self.container.mux(packet)
        except Exception as e:  # noqa: BLE001
            self._discard()
            raise MrcnnError(f'cannot write video {self.path} ({first_line(e)})') from None
        self.frames += 1

    def close(self):
        try:
            if self.container is None:
                self.writer.release()
            else:
                for packet in self.stream.encode():
                    self.container.mux(packet)
                self.container.close()
            if self.frames:
                os.replace(self.tmp, self.path)
        except Exception as e:  # noqa: BLE001 - as in write
            self._discard()
            raise MrcnnError(f'cannot write video {self.path} ({first_line(e)})') from None
        if self.tmp.exists():
            self.tmp.unlink()

    def _discard(self):
        """Drop the unfinished file (an encoder that failed does not make a playable one)."""
        try:
            if self.container is None:
                self.writer.release()
            else:
                self.container.close()
        except Exception:  # noqa: BLE001 - it is being thrown away
            pass
        self.tmp.unlink(missing_ok=True)


def display_available():
    """cv2.imshow works only with a GUI build of OpenCV and a display."""
    if not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')):
        return False
    try:
        cv2.namedWindow('mrcnn', cv2.WINDOW_NORMAL)
        return True
    except cv2.error:
        return False
