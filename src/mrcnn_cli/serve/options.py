"""ServeOptions: every `mrcnn serve` option in one place.  The command line (commands.cli), the
app (create_app) and the Ray deployment (serve.ray_serve) all derive from these fields: each
field's metadata holds its help text and bounds, so a new option is one field here."""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.image_header import MAX_PIXELS
from mrcnn_cli.model.spec import DEFAULT_SCORE_THR


def _option(help: str, *, minimum: float | None = None, maximum: float | None = None, flag: str | None = None,
            envvar: str | None = None) -> dict[str, Any]:
    return {'help': help, 'min': minimum, 'max': maximum, 'flag': flag, 'envvar': envvar}


@dataclass(frozen=True)
class ServeOptions:
    """How the service batches, bounds and guards (`mrcnn serve`'s options)."""
    max_batch: int = field(default=4, metadata=_option(
        'Images per network call, gathered from concurrent requests (results identical to 1).', minimum=1))
    max_delay_ms: float = field(default=5.0, metadata=_option(
        'How long the first request of a batch waits for others.', minimum=0))
    queue: int = field(default=64, metadata=_option(
        'Requests waiting for the model; beyond, 503 with Retry-After.', minimum=1))
    timeout: float = field(default=30.0, metadata=_option(
        'Seconds a request may wait for its result; then 504.', minimum=0.1))
    api_key: str | None = field(default=None, metadata=_option(
        'Require this key (Authorization: Bearer KEY or X-API-Key); also $MRCNN_API_KEY.', envvar='MRCNN_API_KEY'))
    max_body: int = field(default=50 * 2 ** 20, metadata=_option(
        'Largest request body in bytes; beyond, 413 before it is read.', minimum=1))
    max_pixels: int = field(default=MAX_PIXELS, metadata=_option(
        'Refuse images (413) larger than this many pixels, read from the header before decoding.', minimum=1))
    score_thr: float = field(default=DEFAULT_SCORE_THR, metadata=_option(
        "Default lowest score returned (a request's score_thr overrides it).", minimum=0, maximum=1))
    read_timeout: float = field(default=60.0, metadata=_option(
        "Seconds a client has for a request's headers, and again for its body; then 408 (slow-loris).",
        minimum=0.1))

    def __post_init__(self) -> None:
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None:
                continue
            if (meta['min'] is not None and value < meta['min']) or (meta['max'] is not None and value > meta['max']):
                bounds = f'{meta["min"]}..{meta["max"]}' if meta['max'] is not None else f'at least {meta["min"]}'
                raise MrcnnError(f'{f.name} must be {bounds}, not {value!r}')

    @classmethod
    def from_strings(cls, values: dict[str, str]) -> ServeOptions:
        """The options from text (a Ray `serve run` argument list, an environment): each read as
        its field's type; an unknown name is one MrcnnError."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise MrcnnError(f'unknown serve option {unknown[0]!r} (options: {", ".join(known)})')
        parsed: dict[str, Any] = {}
        for name, text in values.items():
            kind = str(known[name].type)
            try:
                parsed[name] = int(text) if kind == 'int' else float(text) if kind == 'float' else str(text)
            except ValueError:
                raise MrcnnError(f'{name}: not a number: {text!r}') from None
        return cls(**parsed)


def option_fields() -> list[tuple[str, type, Any, dict[str, Any]]]:
    """(name, type, default, metadata) of every option, for the command line."""
    kinds = {'int': int, 'float': float, 'str | None': str}
    return [(f.name, kinds[str(f.type)], None if f.default is MISSING else f.default, dict(f.metadata))
            for f in fields(ServeOptions)]
