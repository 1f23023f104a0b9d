"""Scale-out on Ray Serve (`pip install 'mrcnn-cli[ray]'`): the app `mrcnn serve` runs, one per
replica, behind Ray's HTTP proxy.

    from ray import serve
    from mrcnn_cli.serve.ray_serve import deployment
    serve.run(deployment('mask-rcnn_r50_fpn_1x_coco', num_replicas=2), route_prefix='/')

or, from a shell, `serve run mrcnn_cli.serve.ray_serve:app_builder model=mask-rcnn_r50_fpn_1x_coco
num_replicas=2`.  Each replica loads its own model in its own process and batches what reaches it
as `mrcnn serve` does; Ray decides how much reaches it: `max_ongoing_requests` per replica (default
twice `max_batch`, so a batch can fill while the previous one runs) and `max_queued_requests` in
front of all replicas (default `ServeOptions.queue`; Ray answers 503 beyond it).  Answers carry an
`X-Replica` header naming the replica that ran them.  Ray is imported when a deployment is made,
never with the package."""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.serve.options import ServeOptions

_SERVE_FIELDS = {f.name for f in fields(ServeOptions)}   # every `mrcnn serve` option, by its ServeOptions name
_RAY_FIELDS = {'num_replicas': int, 'num_cpus': float, 'max_ongoing_requests': int, 'max_queued_requests': int,
               'name': str}


def deployment(model: str | None = None, *, options: ServeOptions = ServeOptions(), num_replicas: int = 1,
               num_cpus: float = 1, max_ongoing_requests: int | None = None, max_queued_requests: int | None = None,
               name: str = 'mrcnn', **load_options: Any) -> Any:
    """A Ray Serve application (give it to `serve.run`) of `num_replicas` replicas, each
    `mrcnn_cli.load(model, **load_options)` behind `create_app(…, options)`.  `num_cpus` is each
    replica's share of a node (Ray also sets its torch threads to it).  Unknown options are
    refused here, not in replicas that would fail to start one after another."""
    from mrcnn_cli.api import LoadOptions
    unknown = sorted(set(load_options) - set(LoadOptions.__annotations__))
    if unknown:
        raise MrcnnError(f'unknown option {unknown[0]!r} (model options: {", ".join(LoadOptions.__annotations__)})')
    from ray import serve

    @serve.deployment(name=name, num_replicas=num_replicas, ray_actor_options={'num_cpus': num_cpus},
                      max_ongoing_requests=max_ongoing_requests or 2 * options.max_batch,
                      max_queued_requests=options.queue if max_queued_requests is None else max_queued_requests)
    @serve.ingress()
    class MrcnnReplica:
        def __init__(self, model: str | None, options: ServeOptions, load_options: dict[str, Any]):
            from mrcnn_cli.api import load
            from mrcnn_cli.engine.memory import tune_cpu_allocator
            self.predictor = load(model, **load_options)
            if self.predictor.device.type == 'cpu':   # the replica's process is ours, as `mrcnn serve`'s is
                tune_cpu_allocator()
            self.options = options
            self.replica = serve.get_replica_context().replica_id.unique_id

        def __serve_build_asgi_app__(self) -> Any:
            from mrcnn_cli.serve.app import create_app
            app = create_app(self.predictor, self.options)

            @app.middleware('http')
            async def label(request: Any, call_next: Any) -> Any:   # which replica answered
                response = await call_next(request)
                response.headers['X-Replica'] = self.replica
                return response
            return app

    return MrcnnReplica.bind(model, options, load_options)  # type: ignore[attr-defined] # added by serve.deployment


def app_builder(args: dict[str, str]) -> Any:
    """For `serve run mrcnn_cli.serve.ray_serve:app_builder key=value …` (or a Serve config
    file's `args`): `model`, `weights`, `onnx`, `backend`, `device`, `precision`, `style`,
    `scale` (`1333,800`), the Ray options of `deployment` and the `mrcnn serve` options by their
    ServeOptions names (`max_batch`, `queue`, `api_key`, …)."""
    rest: dict[str, Any] = dict(args)
    serve_options = ServeOptions.from_strings({k: rest.pop(k) for k in _SERVE_FIELDS if k in rest})
    ray_options = {k: kind(rest.pop(k)) for k, kind in _RAY_FIELDS.items() if k in rest}
    model = rest.pop('model', None)
    if 'scale' in rest:
        rest['scale'] = tuple(int(v) for v in str(rest['scale']).split(','))
    if 'compile' in rest:
        rest['compile'] = str(rest['compile']).lower() in ('1', 'true', 'yes')
    return deployment(model, options=serve_options, **ray_options, **rest)
