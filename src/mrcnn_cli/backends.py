"""One entry point for every backend behind the Predictor interface."""
from mrcnn_cli import MrcnnError

BACKENDS = ('torch', 'onnx')


def load_predictor(backend='torch', onnx_path=None, model_name=None, weights=None, style=None, device='auto',
                   weights_dir=None, precision='fp32', ort_provider=None, compile=False):
    if backend == 'onnx':
        if compile:
            raise MrcnnError('--compile applies to the torch backend (onnxruntime optimises the graph itself)')
        if not onnx_path:
            raise MrcnnError('--backend onnx needs --onnx FILE (make one with `mrcnn export --onnx`)')
        if precision != 'fp32':
            raise MrcnnError('--fp16/--bf16 apply to the torch backend; export with `mrcnn export --fp16` instead')
        from mrcnn_cli.ort_backend import OnnxPredictor
        return OnnxPredictor(onnx_path, device, ort_provider)
    if backend != 'torch':
        raise MrcnnError(f'unknown backend {backend!r} (use torch or onnx)')
    from mrcnn_cli.predictor import load_torch_predictor
    return load_torch_predictor(model_name, weights, style, device, weights_dir, precision, compile)


def describe(predictor):
    where = getattr(predictor, 'providers', None)
    where = f'onnxruntime {where[0]}' if where else str(predictor.device)
    compiled = ', compiled' if getattr(predictor, 'compiled', False) else ''
    return (f'{predictor.spec.backbone_name} {predictor.spec.style}, {predictor.name} backend on {where} '
            f'({predictor.precision}{compiled}), from {predictor.source}')
