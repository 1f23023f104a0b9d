"""`make bench-large`: sliced inference on generated GeoTIFFs of growing size, each run as a user
runs it (`mrcnn predict SCENE --tile T --save-geojson`, with its picture), in a process of its own
whose peak RSS is read by a launcher.  Reports wall time, peak RSS, tiles, instances and time per
megapixel per size (time against area), as JSON and a markdown table in runs/bench-large/.

The scenes are BigTIFFs (256 x 256 deflate tiles, UTM georeferencing) tiled with real COCO photos,
written tile by tile (the generator never holds a scene)."""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
PHOTOS = sorted((SHARED / 'data' / 'coco_mini_val2017' / 'val2017').glob('*.jpg'))
OUT = ROOT / 'runs' / 'bench-large'
SEGMENT = 256
LAUNCHER = ('import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); '
            'sys.stderr.write(f"\\npeak_rss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n"); '
            'sys.exit(done.returncode)')


def write_scene(path, size):
    """A size x size RGB BigTIFF of COCO photos (640 x 480 cells), georeferenced in UTM 33N."""
    cells = [cv2.resize(cv2.imread(str(p)), (640, 480))[..., ::-1] for p in PHOTOS]

    def tiles():
        for y in range(0, size, SEGMENT):
            for x in range(0, size, SEGMENT):
                tile = np.zeros((SEGMENT, SEGMENT, 3), np.uint8)
                for yy in range(SEGMENT):   # rows of the cells under this tile
                    gy = y + yy
                    if gy >= size:
                        break
                    for gx0 in range(x - x % 640, min(x + SEGMENT, size), 640):
                        cell = cells[(gy // 480 * 97 + gx0 // 640) % len(cells)]
                        a, b = max(x, gx0), min(x + SEGMENT, gx0 + 640, size)
                        tile[yy, a - x:b - x] = cell[gy % 480, a - gx0:b - gx0]
                yield tile
    keys = [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633]
    tifffile.imwrite(path, tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(SEGMENT, SEGMENT), bigtiff=True,
                     photometric='rgb', compression='zlib',
                     extratags=[(33550, 'd', 3, (0.3, 0.3, 0.0), True),
                                (33922, 'd', 6, (0, 0, 0, 500000.0, 4100000.0, 0.0), True),
                                (34735, 'H', len(keys), keys, True)])


def run_predict(scene, out, weights, tile, extra):
    cmd = [sys.executable, '-c', LAUNCHER, sys.executable, '-m', 'mrcnn_cli', 'predict', str(scene), '--weights',
           str(weights), '--style', 'pytorch', '--device', 'cpu', '--tile', str(tile), '--save-geojson',
           '--out', str(out), '--exist-ok', '-q', *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    err, _, peak = proc.stderr.rstrip().rpartition('\npeak_rss_kb=')
    if proc.returncode:
        raise SystemExit(f'{scene.name}: mrcnn failed:\n{err}')
    return seconds, int(peak) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', required=True)
    parser.add_argument('--sizes', default='2000,5000,10000,20000')
    parser.add_argument('--tile', type=int, default=1024)
    parser.add_argument('--bf16', action='store_true')
    parser.add_argument('--scenes', default=str(OUT / 'scenes'), help='where the generated TIFFs are kept')
    args = parser.parse_args()
    scenes = Path(args.scenes)
    scenes.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in (int(s) for s in args.sizes.split(',')):
        scene = scenes / f'scene_{size}.tif'
        if not scene.exists():
            write_scene(scene, size)
        out = OUT / f'run_{size}'
        seconds, peak = run_predict(scene, out, args.weights, args.tile, ['--bf16'] if args.bf16 else [])
        doc = json.loads((out / 'predictions.json').read_text())
        from mrcnn_cli.engine.tiling import TileOptions, tile_grid
        tiles = len(tile_grid(size, size, TileOptions(args.tile)))
        rows.append({'size': size, 'megapixels': size * size / 1e6, 'tiles': tiles, 'seconds': seconds,
                     'seconds_per_megapixel': seconds / (size * size / 1e6), 'peak_rss_mb': peak,
                     'instances': len(doc['annotations']),
                     'picture': list(cv2.imread(str(out / f'scene_{size}.png')).shape[:2])})
        print(json.dumps(rows[-1]), flush=True)
    report = {'tile': args.tile, 'precision': 'bf16' if args.bf16 else 'fp32', 'rows': rows}
    (OUT / 'report.json').write_text(json.dumps(report, indent=1))
    lines = ['| scene | tiles | instances | time | s / megapixel | peak RSS |', '|---|---|---|---|---|---|']
    lines += [f'| {r["size"]}×{r["size"]} ({r["megapixels"]:.0f} MP) | {r["tiles"]} | {r["instances"]} | '
              f'{r["seconds"]:.0f} s | {r["seconds_per_megapixel"]:.2f} | {r["peak_rss_mb"]:.0f} MB |' for r in rows]
    (OUT / 'report.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
