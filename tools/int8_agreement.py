"""What the INT8 accuracy guard's check gives for other ways of running the same model: each
backend and precision against OpenVINO FP32 on the same held-out images (the guard's reference),
so the INT8 file's numbers can be read beside BF16's and FP32-on-another-backend's.

    python tools/int8_agreement.py --weights W.pth --onnx r50.onnx --int8 r50_int8.xml [--int8 r50_int8.onnx]
        --images DIR [--n 20]

The held-out images are the last N readable images of DIR, as `mrcnn export --int8` holds them
out of --calib.  Prints one line per row and writes JSON with --json."""
import argparse
import json
from pathlib import Path

from mrcnn_cli import load
from mrcnn_cli.backends.quantize import int8_images, measure_agreement
from mrcnn_cli.io.cpu import cpu_info


def cpu_line():
    cpu = cpu_info()
    isa = sorted(f for f in cpu.flags or () if f.startswith(('avx512', 'amx', 'avx2', 'avx_vnni')))
    return f'{cpu.model}; {" ".join(isa)}'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--weights', required=True)
    ap.add_argument('--onnx', required=True)
    ap.add_argument('--int8', required=True, action='append', help='an INT8 file (repeatable)')
    ap.add_argument('--images', required=True)
    ap.add_argument('--n', type=int, default=20)
    ap.add_argument('--json')
    args = ap.parse_args()
    check = int8_images([args.images], check_n=args.n).check
    reference = load(onnx=args.onnx, backend='openvino', device='cpu').backend
    rows = {f'int8 {Path(path).name}': lambda path=path: load(path, device='cpu') for path in args.int8}
    rows |= {'openvino bf16': lambda: load(onnx=args.onnx, backend='openvino', device='cpu', precision='bf16'),
             'torch bf16': lambda: load(weights=args.weights, style='pytorch', device='cpu', precision='bf16'),
             'torch fp32': lambda: load(weights=args.weights, style='pytorch', device='cpu'),
             'onnxruntime fp32': lambda: load(onnx=args.onnx, backend='onnx', device='cpu')}
    print(f'cpu: {cpu_line()}; reference: openvino fp32; {len(check)} held-out images')
    out = {'cpu': cpu_line(), 'images': [p.name for p in check], 'rows': {}}
    for name, make in rows.items():
        try:
            measured = measure_agreement(reference, make().backend, check)
        except Exception as e:  # noqa: BLE001 - a precision this CPU cannot run: said, not fatal
            print(f'{name}: not measured ({e})')
            continue
        print(f'{name}: {measured}')
        out['rows'][name] = measured.as_dict()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
