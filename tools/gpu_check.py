"""`make gpu-check`: every CUDA path in one command, on a machine with a GPU, from a fresh clone
after `make setup`.

Runs the GPU tests (tests/backends/test_gpu.py: mmdetection's references on cuda, FP16, the GPU paste,
onnxruntime CUDA/TensorRT, --compile, NCCL torchrun), then `mrcnn bench` on the shared COCO images
with torch FP32, FP16, FP16 + --compile, onnxruntime CUDA and TensorRT, and torchvision on the
GPU, and writes runs/gpu-check/report.md and report.json: pass/fail per check, fps and latency
percentiles, peak GPU memory, the GPU, its driver and the library versions.  Without a GPU it
says so in one line and exits 0."""
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
OUT = ROOT / 'runs' / 'gpu-check'
IMAGES = SHARED / 'data' / 'coco_mini_val2017' / 'val2017'
KEYS = SHARED / 'data' / 'state_dict_keys' / 'mmdet_mask-rcnn_r50_fpn_1x_coco.txt'
N = 50   # timed images per row: the whole check stays within 8 minutes on one GPU


def run(cmd, timeout=600):
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return proc, time.perf_counter() - start


def environment():
    import onnxruntime
    import torch
    import torchvision
    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                                capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        driver = 'unknown'
    return {'gpu': props.name, 'gpus': torch.cuda.device_count(), 'memory_gib': round(props.total_memory / 2 ** 30, 1),
            'driver': driver, 'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(),
            'torch': torch.__version__, 'torchvision': torchvision.__version__, 'onnxruntime': onnxruntime.__version__,
            'ort_providers': onnxruntime.get_available_providers(), 'python': sys.version.split()[0]}


def gpu_tests():
    xml = OUT / 'tests.xml'
    proc, seconds = run([sys.executable, '-m', 'pytest', '-q', '-rs', 'tests/backends/test_gpu.py',
                         f'--junitxml={xml}'], timeout=420)
    checks = []
    if xml.exists():
        for case in ET.parse(xml).getroot().iter('testcase'):
            status = 'pass'
            for kind in ('failure', 'error', 'skipped'):
                node = case.find(kind)
                if node is not None:
                    status = {'skipped': 'skip'}.get(kind, 'FAIL')
                    detail = (node.get('message') or '').splitlines()[0][:200] if node.get('message') else ''
                    break
            else:
                detail = ''
            checks.append({'check': case.get('name'), 'status': status, 'detail': detail})
    if not checks:
        checks.append({'check': 'tests/backends/test_gpu.py', 'status': 'FAIL', 'detail': proc.stdout[-300:]})
    return checks, seconds


def bench_rows(weights, onnx_path):
    import onnxruntime
    rows = [('torch fp32', []), ('torch fp16', ['--fp16']), ('torch fp16 + compile', ['--fp16', '--compile']),
            ('onnxruntime CUDA', ['--backend', 'onnx', '--onnx', onnx_path, '--ort-provider', 'cuda']),
            ('torchvision', ['--compare', 'torchvision'])]
    if 'TensorrtExecutionProvider' in onnxruntime.get_available_providers():
        rows.insert(4, ('onnxruntime TensorRT',
                        ['--backend', 'onnx', '--onnx', onnx_path, '--ort-provider', 'tensorrt']))
    results = []
    for label, extra in rows:
        out = OUT / f'bench-{label.replace(" ", "_").replace("+", "")}.json'
        proc, seconds = run([sys.executable, '-m', 'mrcnn_cli', 'bench', '--weights', weights, '--style', 'pytorch',
                             '--device', 'cuda', '--images', IMAGES, '--n', N, '--warmup', 5, '--json', out, *extra])
        if proc.returncode != 0 or not out.exists():
            results.append({'row': label, 'status': 'FAIL', 'detail': (proc.stderr.strip().splitlines() or [''])[-1]})
            continue
        report = json.loads(out.read_text())
        want = 'torchvision' if label == 'torchvision' else None
        for r in report['rows']:
            if (want and r['backend'] != want) or (not want and r['backend'] == 'torchvision'):
                continue
            results.append({'row': label, 'status': 'pass', 'fps': r['fps'], 'latency_ms': r['latency_ms'],
                            'peak_gpu_mb': r.get('cuda_max_allocated_mb'), 'seconds': seconds})
    return results


def write_report(env, checks, rows, seconds):
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / 'report.json').write_text(json.dumps({'environment': env, 'checks': checks, 'bench': rows,
                                                 'seconds': seconds}, indent=1))
    lines = ['# mrcnn gpu-check', '', ', '.join(f'{k} {v}' for k, v in env.items()), '',
             '| check | result | detail |', '|---|---|---|']
    lines += [f'| {c["check"]} | {c["status"]} | {c["detail"]} |' for c in checks]
    lines += ['', f'`mrcnn bench` on {IMAGES.name}, {N} images per row:', '',
              '| row | result | fps | p50 ms | p90 ms | p99 ms | peak GPU MB |', '|---|---|---|---|---|---|---|']
    for r in rows:
        if r['status'] != 'pass':
            lines.append(f'| {r["row"]} | FAIL: {r["detail"]} | | | | | |')
            continue
        lat = r['latency_ms']
        lines.append(f'| {r["row"]} | pass | {r["fps"]:.1f} | {lat["p50"]:.1f} | {lat["p90"]:.1f} | '
                     f'{lat["p99"]:.1f} | {r["peak_gpu_mb"] or 0:.0f} |')
    lines += ['', f'{seconds:.0f} s in all.']
    (OUT / 'report.md').write_text('\n'.join(lines) + '\n')


def main():
    import torch
    if not torch.cuda.is_available():
        print('gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing to check')
        return 0
    start = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    weights, onnx_path = ROOT / 'weights' / 'synthetic_r50.pth', ROOT / 'runs' / 'bench' / 'r50.onnx'
    if not weights.exists():
        weights.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, SHARED / 'tools' / 'make_checkpoint.py', KEYS, weights], check=True)
    if not onnx_path.exists():
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, '-m', 'mrcnn_cli', 'export', '--onnx', onnx_path, '--weights', weights,
                        '--style', 'pytorch'], check=True, cwd=ROOT)
    env = environment()
    checks, _ = gpu_tests()
    rows = bench_rows(weights, onnx_path)
    write_report(env, checks, rows, time.perf_counter() - start)
    failed = [c['check'] for c in checks if c['status'] == 'FAIL'] + [r['row'] for r in rows if r['status'] != 'pass']
    print(f'gpu-check: {sum(c["status"] == "pass" for c in checks)} checks passed, {len(failed)} failed'
          f'{" (" + ", ".join(failed) + ")" if failed else ""} -> {OUT / "report.md"}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
