"""The pixel size an image file declares, read from its header alone: what lets a reader refuse a
60000x60000 PNG (a decompression bomb, or a damaged header) before anything is allocated.

PNG, JPEG, WebP, GIF, BMP and TIFF; None for other formats or a header that cannot be parsed
(the decoder then finds out for itself)."""
import io
import struct

# Pixel limits, here (beside the header sizes they are checked against) so that the command line
# can show them without importing OpenCV.  200 megapixels (600 MB decoded) by default; OpenCV
# itself refuses more than 2**30.
MAX_PIXELS = 200_000_000
OPENCV_MAX_PIXELS = 1 << 30

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
MAX_JPEG_SEGMENTS = 4096     # a header that never reaches a frame marker is not worth scanning on


def declared_size(path_or_data):
    """(width, height) the header of a file (or of encoded bytes) declares, or None; OSError if
    the file cannot be read."""
    data = path_or_data if isinstance(path_or_data, (bytes, bytearray, memoryview)) else None
    with (io.BytesIO(data) if data is not None else open(path_or_data, 'rb')) as f:
        head = f.read(32)
        try:
            if head.startswith(b'\xff\xd8'):
                return _jpeg_size(f)
            return _fixed_header_size(head, f)
        except (struct.error, ValueError, IndexError):   # a header cut short or nonsensical
            return None


def _fixed_header_size(head, f):
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b'IHDR':
        return struct.unpack('>II', head[16:24])
    if head[:6] in (b'GIF87a', b'GIF89a'):
        return struct.unpack('<HH', head[6:10])
    if head.startswith(b'BM'):
        if struct.unpack('<I', head[14:18])[0] == 12:     # OS/2 BITMAPCOREHEADER
            return struct.unpack('<HH', head[18:22])
        w, h = struct.unpack('<ii', head[18:26])
        return abs(w), abs(h)                              # negative height: top-down rows
    if head.startswith(b'RIFF') and head[8:12] == b'WEBP':
        return _webp_size(head)
    if head[:4] in (b'II*\x00', b'MM\x00*'):
        return _tiff_size(head[:2], f)
    return None


def _webp_size(head):
    kind = head[12:16]
    if kind == b'VP8 ' and head[23:26] == b'\x9d\x01\x2a':
        w, h = struct.unpack('<HH', head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b'VP8L' and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], 'little')
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b'VP8X':
        return int.from_bytes(head[24:27], 'little') + 1, int.from_bytes(head[27:30], 'little') + 1
    return None


def _jpeg_size(f):
    f.seek(2)
    for _ in range(MAX_JPEG_SEGMENTS):
        byte = f.read(1)
        while byte == b'\xff':            # fill bytes before a marker
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:   # markers without a length
            continue
        if marker == 0xDA:                # image data starts before any frame header: give up
            return None
        length = struct.unpack('>H', f.read(2))[0]
        if marker in JPEG_SOF:
            h, w = struct.unpack('>xHH', f.read(5))
            return w, h
        if length < 2:
            return None
        f.seek(length - 2, 1)
    return None


def _tiff_size(order, f):
    end = '<' if order == b'II' else '>'
    f.seek(4)
    f.seek(struct.unpack(end + 'I', f.read(4))[0])
    count = struct.unpack(end + 'H', f.read(2))[0]
    size = {}
    for _ in range(min(count, 4096)):
        tag, kind, _, value = struct.unpack(end + 'HHI4s', f.read(12))
        if tag in (256, 257):             # ImageWidth, ImageLength: SHORT or LONG
            size[tag] = struct.unpack(end + ('H' if kind == 3 else 'I'), value[:2 if kind == 3 else 4])[0]
    return (size[256], size[257]) if len(size) == 2 else None


def png_damage(data):
    """Why a PNG's chunk structure is broken (a chunk longer than the file, as a bit flip in a
    length field makes it), or None.  OpenCV's reader can spend a long time on such a file
    before it gives up; this is found in microseconds."""
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack('>I4s', bytes(data[at:at + 8]))
        if length >= 1 << 31 or at + 12 + length > len(data):
            return f'its {kind.decode("latin-1")!r} chunk runs past the end of the file (truncated or damaged)'
        if kind == b'IEND':
            return None
        at += 12 + length
    return 'it ends before its IEND chunk (truncated)'
