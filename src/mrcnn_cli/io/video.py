"""Video, camera and stream I/O with OpenCV (FFmpeg backend)."""
import os
from dataclasses import dataclass
from pathlib import Path

import cv2

from mrcnn_cli.errors import MrcnnError

# Consecutive failed reads after which a file is taken to have ended (truncated) rather
# than to have one bad frame in the middle.
MAX_CONSECUTIVE_FAILURES = 5


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


def open_capture(src):
    """An opened cv2.VideoCapture and its properties, or MrcnnError for something not a video."""
    cap = cv2.VideoCapture(int(src)) if str(src).isdigit() else cv2.VideoCapture(str(src))
    if not cap.isOpened():
        cap.release()
        raise MrcnnError(f'cannot open {src} as a video')
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    if w <= 0 or h <= 0:
        cap.release()
        raise MrcnnError(f'{src}: no video stream')
    return cap, VideoInfo(w, h, fps if 0 < fps < 1000 else 30.0, max(frames, 0))


def read_frames(cap, info, stats, max_frames=None):
    """(frame index, BGR image) in order.  A frame that fails to decode is skipped and counted;
    several failures in a row end the video (truncated if the declared count was not reached)."""
    index, failures = 0, 0
    try:
        while max_frames is None or index < max_frames:
            ok, img = cap.read()
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
        cap.release()


class VideoSink:
    """An mp4 (or avi) written under a temporary name and renamed when closed, so that a
    crash or Ctrl-C leaves either nothing or a complete, playable file."""

    def __init__(self, path, fps, size):
        self.path = Path(path)
        self.tmp = self.path.with_name(f'.{self.path.stem}.part{self.path.suffix}')
        fourcc = cv2.VideoWriter_fourcc(*('mp4v' if self.path.suffix.lower() == '.mp4' else 'MJPG'))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, fps, size)
        if not self.writer.isOpened():
            raise MrcnnError(f'cannot write video {self.path}')
        self.frames = 0

    def write(self, img):
        self.writer.write(img)
        self.frames += 1

    def close(self):
        self.writer.release()
        if self.frames:
            os.replace(self.tmp, self.path)
        elif self.tmp.exists():
            self.tmp.unlink()


def display_available():
    """cv2.imshow works only with a GUI build of OpenCV and a display."""
    if not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')):
        return False
    try:
        cv2.namedWindow('mrcnn', cv2.WINDOW_NORMAL)
        return True
    except cv2.error:
        return False
