"""Load benchmark for `mrcnn serve`, on 127.0.0.1 only: starts the server, then a bounded client
(fixed request count, fixed concurrency, stops by itself) at 1x load (concurrency = --max-batch)
and at 4x overload, and `mrcnn predict` on the same images in the same run as the reference.
Reports images/s, p50/p99 latency, statuses, and the server's RSS before and after, as JSON in
runs/bench-serve/.  `--soak N` then sends N more requests at 1x load in chunks of 100, with the
server's RSS after each chunk: whether memory stays flat once every thread has been used."""
import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT.parent / 'shared' / 'data' / 'coco_mini_val2017' / 'val2017').glob('*.jpg'))[:10]
OUT = ROOT / 'runs' / 'bench-serve'


def rss_mb(pid):
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return 0.0


def load(base, requests, concurrency, images):
    """`requests` POSTs by `concurrency` threads; (seconds, latencies of 200s, status counts)."""
    bodies = [p.read_bytes() for p in images]
    latencies, statuses, lock, counter = [], {}, threading.Lock(), iter(range(requests))

    def worker():
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    k = next(counter, None)
                if k is None:
                    return
                start = time.perf_counter()
                try:
                    status = client.post(base + '/v1/predict', content=bodies[k % len(bodies)]).status_code
                except httpx.TransportError:
                    status = 'transport error'
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        latencies.append(time.perf_counter() - start)
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, statuses


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float('nan')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', required=True)
    parser.add_argument('--requests', type=int, default=200)
    parser.add_argument('--max-batch', type=int, default=2)
    parser.add_argument('--scale', default='1333,800')
    parser.add_argument('--soak', type=int, default=0, help='requests after the two phases, RSS every 100')
    args = parser.parse_args()
    model = ['--weights', args.weights, '--style', 'pytorch', '--device', 'cpu', '--scale', args.scale]
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:   # the reference: mrcnn predict on the same images
        count = args.requests
        folder = Path(tmp) / 'in'
        folder.mkdir()
        for k in range(count):
            (folder / f'{k:05d}.jpg').write_bytes(IMAGES[k % len(IMAGES)].read_bytes())
        start = time.perf_counter()
        subprocess.run([sys.executable, '-m', 'mrcnn_cli', 'predict', str(folder), *model, '--no-vis', '-q',
                        '--out', str(Path(tmp) / 'out'), '--batch-size', str(args.max_batch)], check=True)
        predict_ips = count / (time.perf_counter() - start)   # start-up included, as a user runs it
    server = subprocess.Popen([sys.executable, '-m', 'mrcnn_cli', 'serve', *model, '--port', '0',
                               '--max-batch', str(args.max_batch), '--queue', str(2 * args.max_batch)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = next(line.split()[2].rstrip('/') for line in server.stderr if line.startswith('serving on '))
    try:
        while True:
            try:
                if httpx.get(base + '/readyz').status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        rss_before = rss_mb(server.pid)
        rows = []
        for name, concurrency in (('1x load', args.max_batch), ('4x overload', 4 * args.max_batch)):
            seconds, latencies, statuses = load(base, args.requests, concurrency, IMAGES)
            rows.append({'run': name, 'concurrency': concurrency, 'requests': args.requests, 'seconds': seconds,
                         'images_per_s': statuses.get(200, 0) / seconds, 'p50_ms': percentile(latencies, 0.5),
                         'p99_ms': percentile(latencies, 0.99), 'rss_mb': rss_mb(server.pid),
                         'statuses': {str(k): v for k, v in statuses.items()}})
            print(json.dumps(rows[-1]), flush=True)
        soak = []
        for done in range(100, args.soak + 1, 100):
            _, _, statuses = load(base, 100, args.max_batch, IMAGES)
            soak.append({'requests': done, 'rss_mb': rss_mb(server.pid), 'statuses': {str(k): v for k, v in
                                                                                       statuses.items()}})
            print(json.dumps(soak[-1]), flush=True)
    finally:
        server.terminate()
        code = server.wait(timeout=120)
    report = {'predict_images_per_s': predict_ips, 'rss_before_mb': rss_before, 'server_exit': code, 'rows': rows,
              'ratio_1x_vs_predict': rows[0]['images_per_s'] / predict_ips, 'soak': soak}
    (OUT / 'report.json').write_text(json.dumps(report, indent=1))
    print(f'mrcnn predict: {predict_ips:.2f} images/s; server RSS {rss_before:.0f} MB after warm-up; exit {code}')
    for r in rows:
        print(f'{r["run"]}: {r["images_per_s"]:.2f} images/s ({r["images_per_s"] / predict_ips:.2f}x predict), '
              f'p50 {r["p50_ms"]:.0f} ms, p99 {r["p99_ms"]:.0f} ms, statuses {r["statuses"]}, RSS {r["rss_mb"]:.0f} MB')
    if soak:
        print('soak, RSS (MB) after each 100 requests: ' + ', '.join(f'{r["rss_mb"]:.0f}' for r in soak))


if __name__ == '__main__':
    main()
