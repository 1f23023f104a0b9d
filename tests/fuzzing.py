"""Mutation fuzzing of every kind of input mrcnn reads, through the code paths the CLI uses.

Seed files are built here as the original tools write them (OpenCV images, PyAV/OpenCV videos,
torch.save checkpoints in the zip and the legacy format, an ONNX file with mrcnn's metadata,
COCO JSON); each case mutates one (truncation, bit flips, header edits, inserted, deleted or
repeated bytes; for JSON also values replaced in the parsed document) with a generator seeded by
(seed, kind, case), so any case can be replayed.  A case passes when it ends normally or with a
documented outcome (MrcnnError; for images and videos a frame with an error or warning), within
the time limit, leaving nothing in its folder but its input.  Cases run in a worker process that
the runner replaces after a hang or a crash, so one bad case never stops the others.

    python tests/fuzzing.py --cases 10000            # what `make fuzz` runs
    python tests/fuzzing.py --kind image --case 417  # replay one case, with its traceback
"""
import argparse
import contextlib
import io
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ('image', 'video', 'checkpoint', 'onnx', 'annotations', 'results', 'mots', 'mot')
SELFTEST = 'selftest'   # a target that hangs and fails on purpose, for the harness's own test
EXTREMES = (0, 1, 0x7F, 0x80, 0xFF)
JSON_VALUES = (None, True, -1, 0, 1, 2 ** 63, -2 ** 31, 1e308, float('nan'), float('inf'), -0.5, '', 'x', [], {},
               [1, 2], {'a': 1})


def mutate_bytes(data, rng):
    """One to three byte-level mutations, biased to the header where decoders decide sizes."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        n = len(data)
        if n == 0:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
            continue
        at = rng.randrange(min(n, 256)) if rng.random() < 0.6 else rng.randrange(n)
        if op == 0:                                   # truncate
            del data[rng.randrange(n):]
        elif op == 1:                                 # flip bits
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                data[i] ^= 1 << rng.randrange(8)
        elif op == 2:                                 # header edit: extreme bytes (sizes, lengths, counts)
            for i in range(at, min(n, at + rng.randint(1, 4))):
                data[i] = rng.choice(EXTREMES)
        elif op == 3:                                 # insert random bytes
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        elif op == 4:                                 # delete a slice
            del data[at:at + rng.randint(1, max(1, n // 8))]
        elif op == 5:                                 # repeat a slice
            end = min(n, at + rng.randint(1, 512))
            data[at:at] = data[at:end] * rng.randint(1, 4)
        else:                                         # random bytes over a slice
            for i in range(at, min(n, at + rng.randint(1, 16))):
                data[i] = rng.randrange(256)
    return bytes(data)


def mutate_json(obj, rng):
    """The document with one to three values replaced, deleted or deeply nested."""
    obj = json.loads(json.dumps(obj))
    for _ in range(rng.randint(1, 3)):
        nodes, stack = [], [(None, None, obj)]
        while stack:
            parent, key, node = stack.pop()
            nodes.append((parent, key, node))
            children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            stack += [(node, k, v) for k, v in children]
        parent, key, node = rng.choice(nodes)
        op = rng.randrange(4)
        if parent is None:
            obj = rng.choice(JSON_VALUES) if op == 0 else obj
            continue
        if op == 0:
            parent[key] = rng.choice(JSON_VALUES)
        elif op == 1:
            del parent[key]
        elif op == 2:
            parent[key] = [node] * rng.randint(2, 5) if not isinstance(node, (dict, list)) else node
        else:
            parent[key] = DEEP   # replaced by thousands of nested lists in the text (recursion limits)
    return obj


DEEP = '__deeply_nested__'


def dump_mutated(obj, rng):
    depth = rng.choice((50, 5000, 100000))
    return json.dumps(obj).replace(json.dumps(DEEP), '[' * depth + ']' * depth).encode()


# ---- seeds: files as the original tools write them -------------------------------------------

def image_seeds():
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), (5, 5), 0)
    out = []
    for ext, params in (('.jpg', []), ('.jpg', [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), ('.png', []), ('.tif', []),
                        ('.webp', [cv2.IMWRITE_WEBP_QUALITY, 80]), ('.webp', [cv2.IMWRITE_WEBP_QUALITY, 101]),
                        ('.bmp', [])):
        ok, data = cv2.imencode(ext, img, params)
        assert ok
        out.append((ext, data.tobytes()))
    return out


def video_seeds(folder):
    import av
    import cv2
    import numpy as np
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(8)]
    mp4 = folder / 'seed.mp4'
    with av.open(str(mp4), 'w') as container:     # H.264 MP4, as PyAV (and most cameras) write it
        stream = container.add_stream('libx264', rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format='bgr24')))
        container.mux(stream.encode())
    avi = folder / 'seed.avi'
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    for f in frames:
        writer.write(f)
    writer.release()
    return [('.mp4', mp4.read_bytes()), ('.avi', avi.read_bytes())]


def checkpoint_seeds():
    """Small checkpoints in mmdetection's layout: torch.save's zip format and the legacy one."""
    import numpy as np
    import torch
    sd = {'backbone.conv1.weight': torch.randn(8, 3, 3, 3), 'backbone.bn1.running_mean': torch.zeros(8),
          'roi_head.bbox_head.fc_cls.weight': torch.randn(81, 16), 'roi_head.bbox_head.fc_cls.bias': torch.zeros(81)}
    ckpt = {'meta': {'mmdet_version': '3.3.0', 'epoch': 12, 'dataset_meta': {'classes': ['a', 'b']},
                     'lr': np.float64(0.02)}, 'state_dict': sd}
    out = []
    for legacy in (False, True):
        buf = io.BytesIO()
        torch.save(ckpt, buf, _use_new_zipfile_serialization=not legacy)
        out.append(('.pth', buf.getvalue()))
    return out


def onnx_seeds():
    from onnx import TensorProto, helper

    from mrcnn_cli.backends.onnx_metadata import model_metadata
    from mrcnn_cli.io.coco import COCO_CLASSES
    from mrcnn_cli.model.spec import ModelSpec
    graph = helper.make_graph([helper.make_node('Identity', ['image'], ['boxes'])], 'g',
                              [helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, 3, 'h', 'w'])],
                              [helper.make_tensor_value_info('boxes', TensorProto.FLOAT, [1, 3, 'h', 'w'])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    helper.set_model_props(model, model_metadata(ModelSpec(), COCO_CLASSES, 'r50.pth', precision='fp32', opset=17))
    return [('.onnx', model.SerializeToString())]


def ground_truth():
    return {'images': [{'id': 1, 'file_name': 'a.jpg', 'width': 64, 'height': 48},
                       {'id': 2, 'file_name': 'b.jpg', 'width': 40, 'height': 30}],
            'categories': [{'id': 1, 'name': 'person'}, {'id': 3, 'name': 'car'}],
            'annotations': [
                {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [4, 4, 20, 16], 'area': 200.0, 'iscrowd': 0,
                 'segmentation': [[4, 4, 24, 4, 24, 20, 4, 20]]},
                {'id': 2, 'image_id': 2, 'category_id': 3, 'bbox': [2, 2, 10, 10], 'area': 100.0, 'iscrowd': 0,
                 'segmentation': [[2, 2, 12, 2, 12, 12]]},
                {'id': 3, 'image_id': 1, 'category_id': 3, 'bbox': [30, 10, 20, 20], 'area': 300.0, 'iscrowd': 1,
                 'segmentation': {'size': [48, 64], 'counts': [1930, 20, 28, 20, 1074]}}]}


def results():
    import numpy as np
    import pycocotools.mask as mask_util
    mask = np.zeros((48, 64), np.uint8, order='F')
    mask[4:20, 5:24] = 1
    rle = mask_util.encode(mask)
    rle['counts'] = rle['counts'].decode('ascii')
    return [{'image_id': 1, 'category_id': 1, 'bbox': [5, 4, 19, 16], 'score': 0.9, 'segmentation': rle},
            {'image_id': 2, 'category_id': 3, 'bbox': [2, 3, 10, 9], 'score': 0.5,
             'segmentation': [[2, 2, 12, 2, 12, 12]]}]


def mots_text():
    """A MOTS txt ground truth: two frames of a pedestrian and a car on a 24x32 image."""
    import numpy as np
    import pycocotools.mask as mask_util
    lines = []
    for frame in (0, 1):
        for track_id, class_id, (y0, x0) in ((2001, 2, (2, 2 + frame)), (1002, 1, (12, 16 - frame))):
            mask = np.zeros((24, 32), np.uint8, order='F')
            mask[y0:y0 + 8, x0:x0 + 6] = 1
            lines.append(f'{frame} {track_id} {class_id} 24 32 {mask_util.encode(mask)["counts"].decode()}')
    return ''.join(line + '\n' for line in lines)


def mot_text():
    """A MOTChallenge box ground truth: three frames of two pedestrians and a car."""
    return ''.join(f'{t},{i},{10 * i + t},{5 + t},20,40,1,{1 if i < 3 else 3},1.0\n'
                   for t in (1, 2, 3) for i in (1, 2, 3))


# ---- targets: what the CLI calls for each kind ----------------------------------------------

class Target:
    def __init__(self, kind, folder):
        self.kind, self.folder = kind, Path(folder)
        if kind == SELFTEST:
            self.seeds = [('.bin', b'selftest', None)]
        elif kind == 'image':
            self.seeds = [(ext, data, None) for ext, data in image_seeds()]
        elif kind == 'video':
            self.seeds = [(ext, data, None) for ext, data in video_seeds(self.folder)]
            for p in self.folder.iterdir():
                p.unlink()
        elif kind == 'checkpoint':
            self.seeds = [(ext, data, None) for ext, data in checkpoint_seeds()]
        elif kind == 'onnx':
            self.seeds = [(ext, data, None) for ext, data in onnx_seeds()]
        elif kind in ('mots', 'mot'):   # a ground truth, scored against the same file unchanged
            text = mots_text() if kind == 'mots' else mot_text()
            self.results_path = self.folder.parent / 'results.txt'
            self.results_path.write_text(text if kind == 'mots' else ''.join(   # results carry no class
                ','.join(line.split(',')[:7] + ['-1', '-1', '-1']) + '\n' for line in text.splitlines()))
            self.seeds = [('.txt', text.encode(), None)]
        else:   # the other file of an evaluation, left as it is
            self.gt_path = self.folder.parent / 'gt.json'
            self.gt_path.write_text(json.dumps(ground_truth()))
            self.results_path = self.folder.parent / 'results.json'
            self.results_path.write_text(json.dumps(results()))
            doc = ground_truth() if kind == 'annotations' else results()
            self.seeds = [('.json', json.dumps(doc).encode(), doc)]
        self.out = self.folder.parent / 'out'   # where an evaluation writes metrics.json

    def case_file(self, seed, case):
        """The mutated input of one case: (suffix, bytes)."""
        rng = random.Random(f'{seed}:{self.kind}:{case}')
        ext, data, doc = rng.choice(self.seeds)
        if self.kind == SELFTEST:
            return f'{case}{ext}', data
        if doc is not None and rng.random() < 0.5:
            return ext, dump_mutated(mutate_json(doc, rng), rng)
        return ext, mutate_bytes(data, rng)

    @staticmethod
    def warm_up():
        """Import what the cases run (torch among it), so that no case's time limit pays for it."""
        import mrcnn_cli.api  # noqa: F401
        import mrcnn_cli.commands.evaluate  # noqa: F401
        import mrcnn_cli.engine.stream  # noqa: F401

    def run(self, path):
        """The CLI's code path for this kind of file: True when it ended in a documented problem (a
        frame with an error or warning); MrcnnError is the other documented outcome."""
        import mrcnn_cli
        from mrcnn_cli.commands import evaluate as ev
        from mrcnn_cli.engine.frames import Problem
        from mrcnn_cli.engine.stream import source_items
        from mrcnn_cli.io.sources import IMAGE, VIDEO, Source
        if self.kind == SELFTEST:   # the harness's own test: case 3 hangs, case 5 has a bug
            case = int(path.stem.removeprefix('case'))
            if case == 3:
                time.sleep(3600)
            if case == 5:
                raise KeyError('a bug')
            return False
        if self.kind in ('image', 'video'):
            source = Source(IMAGE if self.kind == 'image' else VIDEO, path, str(path))
            return any(isinstance(item, Problem) for item in source_items([source], max_frames=50))
        if self.kind == 'checkpoint':
            mrcnn_cli.load(weights=path, style='pytorch', device='cpu')
        elif self.kind == 'onnx':
            mrcnn_cli.load(onnx=path, device='cpu')
        elif self.kind in ('mots', 'mot'):
            from mrcnn_cli.engine.track_metrics import evaluate_tracks
            evaluate_tracks(path, self.results_path)
        elif self.kind == 'annotations':
            ev.eval_results_files(path, [str(self.results_path)], self.out)
        else:
            ev.eval_results_files(self.gt_path, [str(path)], self.out)
        return False


def run_case(target, seed, case, folder):
    """('ok' | 'documented' | 'failure', detail) for one case."""
    from mrcnn_cli.errors import MrcnnError
    ext, data = target.case_file(seed, case)
    path = folder / f'case{ext}'
    path.write_bytes(data)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter('ignore')
            problem = target.run(path)
        status, detail = ('documented', 'a frame with an error or warning') if problem else ('ok', '')
    except MrcnnError as e:
        status, detail = 'documented', str(e)
    except Exception:  # noqa: BLE001 - what the fuzzing is looking for
        status, detail = 'failure', traceback.format_exc(limit=-6)
    left = sorted(p.name for p in folder.iterdir() if p != path)
    left += sorted(p.name for p in target.out.iterdir() if p.name != 'metrics.json') if target.out.exists() else []
    path.unlink()
    shutil.rmtree(target.out, ignore_errors=True)
    for name in left:
        (folder / name).unlink(missing_ok=True)
    if left and status != 'failure':
        status, detail = 'failure', f'left files behind: {left}'
    return status, detail


def worker(kind, seed, cases, conn, folder):
    """Run cases in order, one message per case; the runner replaces this process if it hangs."""
    # The runner owns `folder` and removes it after killing this process, temporary files of the code under
    # test included (a killed case never runs its own clean-up).
    tempfile.tempdir = str(folder)
    seeds_dir = folder / 'seeds'
    seeds_dir.mkdir()
    target = Target(kind, seeds_dir)
    target.warm_up()
    conn.send(('ready', None, ''))   # the runner's per-case clock starts here
    for case in cases:
        status, detail = run_case(target, seed, case, seeds_dir)
        conn.send((status, case, detail))
    from mrcnn_cli.commands.bench import peak_rss_mb  # this worker's own peak (ru_maxrss carries its parent's)
    conn.send(('done', peak_rss_mb(), ''))


@dataclass
class KindReport:
    kind: str
    cases: int = 0
    ok: int = 0
    documented: int = 0
    failures: list = field(default_factory=list)   # (case, traceback)
    hangs: list = field(default_factory=list)
    crashes: list = field(default_factory=list)
    peak_rss_mb: float = 0.0
    seconds: float = 0.0

    def line(self):
        return (f'{self.kind}: {self.cases} cases, {self.documented} refused with a documented error, {self.ok} read '
                f'fine; {len(self.failures)} tracebacks, {len(self.hangs)} hangs, {len(self.crashes)} crashes; '
                f'peak RSS {self.peak_rss_mb:.0f} MB, {self.seconds:.0f} s')


def fuzz(kind, cases, seed=0, timeout_s=20.0, start_timeout_s=300.0):
    """A KindReport for `cases` cases of one kind, each bounded by `timeout_s`."""
    report, start = KindReport(kind), time.perf_counter()
    ctx = multiprocessing.get_context('spawn')
    todo = list(range(cases))
    while todo:
        parent, child = ctx.Pipe()
        folder = Path(tempfile.mkdtemp(prefix=f'mrcnn-fuzz-{kind}-'))
        proc = ctx.Process(target=worker, args=(kind, seed, todo, child, folder), daemon=True)
        proc.start()
        child.close()
        limit = start_timeout_s
        try:
            while True:
                if not parent.poll(limit):
                    report.hangs.append(todo.pop(0))
                    break
                status, case, detail = parent.recv()
                limit = timeout_s
                if status == 'ready':
                    continue
                if status == 'done':
                    report.peak_rss_mb = max(report.peak_rss_mb, case)
                    todo = []
                    break
                todo.remove(case)
                report.cases += 1
                if status == 'ok':
                    report.ok += 1
                elif status == 'documented':
                    report.documented += 1
                else:
                    report.failures.append((case, detail))
        except EOFError:   # the worker died: a crash in native code
            report.crashes.append(todo.pop(0))
        finally:
            proc.kill()
            proc.join()
            parent.close()
            shutil.rmtree(folder, ignore_errors=True)
    report.cases += len(report.hangs) + len(report.crashes)
    report.seconds = time.perf_counter() - start
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--cases', type=int, default=10000, help='cases per kind')
    parser.add_argument('--kind', choices=KINDS, action='append', help='only these kinds (default: all)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--case', type=int, default=None, help='replay this one case in this process')
    args = parser.parse_args(argv)
    kinds = args.kind or KINDS
    if args.case is not None:
        for kind in kinds:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / 'seeds'
                folder.mkdir()
                print(kind, *run_case(Target(kind, folder), args.seed, args.case, folder))
        return 0
    bad = 0
    for kind in kinds:
        report = fuzz(kind, args.cases, args.seed)
        print(report.line(), flush=True)
        for case, detail in report.failures[:3]:
            print(f'  case {case}: {detail.strip().splitlines()[-1]}  (replay: --kind {kind} --case {case})')
        for label, items in (('hang', report.hangs), ('crash', report.crashes)):
            for case in items[:3]:
                print(f'  {label} at case {case}  (replay: --kind {kind} --case {case})')
        bad += len(report.failures) + len(report.hangs) + len(report.crashes)
    print(f'{"FAILED" if bad else "passed"}: {bad} tracebacks, hangs or crashes')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
