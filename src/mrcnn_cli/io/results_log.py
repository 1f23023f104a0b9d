"""predictions.jsonl: every image's or frame's results appended as it is done, and the
predictions.json COCO document assembled from one or several such logs without holding them in
memory.

Line 1 is a header: what produced the log (model, weights checksum, the options that change
results, the partition).  Then one record per image or inferred frame, in input order:
`{"source_index", "file_name", "width", "height", ["frame_index", "video"], "annotations"}`, one
`{"source_index", "end": true}` line when a video or stream is finished, and
`{"source_index", "failed": reason}` for an input that could not be read (tried again on resume)."""
import heapq
import json
from dataclasses import dataclass
from pathlib import Path

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.coco import category_ids
from mrcnn_cli.io.files import atomic_path, cannot_write

FORMAT = 'mrcnn predictions log 1'


def iter_lines(path):
    """(object, byte offset after its line) for each line of a JSON-lines file, streamed; stops at
    a last line cut short by a crash (no newline, or not valid JSON)."""
    offset = 0
    with open(path, 'rb') as f:
        for raw in f:
            if not raw.endswith(b'\n'):
                return
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                return
            offset += len(raw)
            yield obj, offset


def read_lines(path):
    """(objects, byte length of the complete lines) of a JSON-lines file (see `iter_lines`)."""
    objects, good = [], 0
    for obj, end in iter_lines(path):
        objects.append(obj)
        good = end
    return objects, good


class ResultsLog:
    """An append-only predictions.jsonl, flushed per line."""

    def __init__(self, path, header, resume=False):
        self.path = Path(path)
        self.done, self.restarted = set(), []   # finished in an earlier run; videos that restart
        header = json.loads(json.dumps(header))   # as it reads back: lists, not tuples
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume and self.path.exists():
                self._reopen(header)
            else:
                self.file = open(self.path, 'w')
                self._write(dict(header, format=FORMAT))
        except OSError as e:
            raise cannot_write(self.path, e) from None

    def _reopen(self, header):
        old = read_header(self.path, 'cannot --resume from it')
        changed = header_differences(old, header)
        if changed:
            raise MrcnnError(f'{self.path} was written by another run ('
                             + '; '.join(f'{k} {old.get(k)!r}, now {header.get(k)!r}' for k in changed)
                             + '); use another --out, or drop --resume to start over')
        found = scan(self.path)
        good, self.done, self.restarted = found.complete_bytes, found.done, found.unfinished_videos
        if not self.restarted and not found.failed:
            self.file = open(self.path, 'r+')
            self.file.truncate(good)   # drop a line cut short by the crash
            self.file.seek(good)
            return
        # an unfinished video restarts and failed inputs are tried again: their lines go
        with atomic_path(self.path) as tmp, open(tmp, 'w') as f:
            for i, (r, _) in enumerate(iter_lines(self.path)):
                if i == 0 or (r['source_index'] in self.done and 'failed' not in r):
                    f.write(json.dumps(r) + '\n')
        self.file = open(self.path, 'a')

    def _write(self, obj):
        try:
            self.file.write(json.dumps(obj) + '\n')
            self.file.flush()
        except OSError as e:
            raise cannot_write(self.path, e) from None

    def add(self, source_index, file_name, width, height, annotations, **extra):
        """One image's or frame's results entries (`Detections.to_coco`; their image_id is left out)."""
        annotations = [{k: v for k, v in e.items() if k != 'image_id'} for e in annotations]
        self._write({'source_index': source_index, 'file_name': str(file_name), 'width': width, 'height': height,
                     **extra, 'annotations': annotations})

    def end(self, source_index):
        self._write({'source_index': source_index, 'end': True})

    def failed(self, source_index, reason):
        self._write({'source_index': source_index, 'failed': str(reason)})

    def close(self):
        try:
            self.file.close()
        except OSError as e:
            raise cannot_write(self.path, e) from None


@dataclass(frozen=True)
class LogScan:
    """What a log says of its inputs: an image is done by its record, a video by its end line; an
    input that failed is not done (a resume tries it again)."""
    complete_bytes: int              # the length of its complete lines (a cut last line is not one)
    done: set[int]                   # source indexes
    unfinished_videos: list[int]
    failed: set[int]


def scan(path) -> LogScan:
    """The LogScan of a log, streamed."""
    images, videos, ended, failed, good = set(), set(), set(), set(), 0
    for i, (r, end) in enumerate(iter_lines(path)):
        good = end
        if i == 0:
            continue
        index = r['source_index']
        if 'failed' in r:
            failed.add(index)
        elif r.get('end'):
            ended.add(index)
        elif 'frame_index' in r:
            videos.add(index)
        else:
            images.add(index)
    return LogScan(good, images | ended, sorted(videos - ended), failed - images - ended)


def header_differences(header, other, parts=False):
    """The keys in which two logs' headers differ, sorted: none for two logs of one run (with
    `parts`, also for different parts of one run); the format line and a header's tuples (which
    read back as lists) do not count."""
    ignored = {'format', 'partition'} if parts else {'format'}
    a, b = (json.loads(json.dumps({k: v for k, v in h.items() if k not in ignored})) for h in (header, other))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def read_header(path, then=''):
    try:
        with open(path, 'rb') as f:
            header = json.loads(f.readline())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or header.get('format') != FORMAT:
        raise MrcnnError(f'{path} is not an mrcnn predictions log' + (f'; {then}' if then else ''))
    return header


def find_logs(out_dir, stem='predictions', suffix='.jsonl'):
    """The logs of one run in `out_dir`: its shards, its torchrun ranks, or its one log (named
    STEM[.shard-K-of-N|.rankR]SUFFIX: predict's predictions*.jsonl, eval's results*.partial.jsonl)."""
    out_dir = Path(out_dir)
    for part in ('.shard-*-of-*', '.rank*'):
        logs = sorted(out_dir.glob(f'{stem}{part}{suffix}'))
        if logs:
            return logs
    if (out_dir / f'{stem}{suffix}').exists():
        return [out_dir / f'{stem}{suffix}']
    raise MrcnnError(f'no {stem}{suffix}, {stem}.shard-K-of-N{suffix} or {stem}.rankR{suffix} in {out_dir}')


def merge_logs(out_dir):
    """predictions.json in `out_dir` from the logs of all its parts, checked to be one run's and
    complete; the same document one process would have written."""
    logs = find_logs(out_dir)
    headers = check_parts(logs, out_dir)
    return write_document(logs, Path(out_dir) / 'predictions.json', headers[0]['classes'])


def check_parts(logs, out_dir):
    """The headers of the logs of a partitioned run, checked to be one run's, every part there and
    finished; one MrcnnError naming the first problem otherwise."""
    headers = [read_header(p) for p in logs]
    for path, h in zip(logs[1:], headers[1:]):
        keys = header_differences(h, headers[0], parts=True)
        if keys:
            raise MrcnnError(f'{path.name} and {logs[0].name} come from different runs ({", ".join(keys)} differ); '
                             'they cannot be merged')
    world = headers[0]['partition'][1]
    ranks = {h['partition'][0] for h in headers}
    missing = sorted(set(range(world)) - ranks)
    if missing:
        raise MrcnnError(f'{len(missing)} of {world} parts are missing in {out_dir} (part {missing[0]} first); '
                         'run them, then merge')
    for part in unfinished_parts(logs):
        raise MrcnnError(f'{part.path.name} is not finished ({part.done} of {part.inputs} inputs done): '
                         'run that part again with --resume, then merge')
    return headers


@dataclass(frozen=True)
class UnfinishedPart:
    """A part (shard or rank) of a partitioned run that has not done all its inputs."""
    path: Path
    rank: int
    done: int          # inputs done (one that failed to read counts as done)
    inputs: int        # inputs of this part


def unfinished_parts(logs) -> list[UnfinishedPart]:
    """The parts among `logs` that have not done all their inputs."""
    parts = []
    for path in logs:
        header = read_header(path)
        rank, world = header['partition']
        found = scan(path)
        expected = set(range(rank, header['inputs']['count'], world))
        if expected - found.done - found.failed:
            parts.append(UnfinishedPart(path, rank, len(expected & (found.done | found.failed)), len(expected)))
    return parts


def result_records(path):
    """The image and frame records of a log, streamed (the header, end lines and a cut-short last
    line left out)."""
    for i, (record, _) in enumerate(iter_lines(path)):
        if i and 'annotations' in record:
            yield record


def _order_key(record):
    return record['source_index'], record.get('frame_index', -1)


def _sorted_records(path):
    """A log's records in input order.  A log is in order unless a resume retried inputs that had
    failed: then its records are read back by offset, in order (only the keys are held)."""
    keys, offset, in_order = [], 0, True
    with open(path, 'rb') as f:
        for raw in f:
            if not raw.endswith(b'\n'):
                break
            record = json.loads(raw) if b'"annotations"' in raw else {}
            if 'annotations' in record:
                key = _order_key(record)
                in_order = in_order and (not keys or keys[-1][0] <= key)
                keys.append((key, offset))
            offset += len(raw)
    if in_order:
        yield from result_records(path)
        return
    with open(path, 'rb') as f:
        for _, at in sorted(keys):
            f.seek(at)
            yield json.loads(f.readline())


def _in_input_order(paths):
    """Records of several logs (shards or ranks) merged into input order."""
    return heapq.merge(*(_sorted_records(p) for p in paths), key=_order_key)


def write_document(paths, out_path, classes):
    """predictions.json from the logs at `paths`: a COCO dataset dict pycocotools loads (images with
    ids 1.. in input order, the categories, annotations with ids 1.. and iscrowd 0), written as the
    logs are read (two passes, one for images and one for annotations), never all in memory."""
    cats = [{'id': int(c), 'name': n} for c, n in zip(category_ids(classes), classes)]
    with atomic_path(out_path) as tmp, open(tmp, 'w') as f:
        f.write('{"info": {"description": "mrcnn predictions"}, "images": [')
        for image_id, r in enumerate(_in_input_order(paths), 1):
            image = {'id': image_id, 'file_name': r['file_name'], 'width': r['width'], 'height': r['height']}
            image.update((k, r[k]) for k in ('frame_index', 'video') if k in r)
            f.write((', ' if image_id > 1 else '') + json.dumps(image))
        f.write('], "categories": ' + json.dumps(cats) + ', "annotations": [')
        ann_id = 0
        for image_id, r in enumerate(_in_input_order(paths), 1):
            for entry in r['annotations']:
                ann_id += 1
                f.write((', ' if ann_id > 1 else '') +
                        json.dumps({'image_id': image_id, **entry, 'id': ann_id, 'iscrowd': 0}))
        f.write(']}')
    return Path(out_path)
