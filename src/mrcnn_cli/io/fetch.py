"""Images over HTTP(S): fetched with a size limit and a timeout, from http and https only (also
where a server redirects)."""
from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.version import __version__

SCHEMES = ('http', 'https')
MAX_DOWNLOAD_BYTES = 100 * 2 ** 20    # far above any photo, far below what would hurt
TIMEOUT_S = 30.0


def is_http_url(text: object) -> bool:
    return isinstance(text, str) and text.lower().startswith(('http://', 'https://'))


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects to ftp:// too; an image URL may only lead to another http(s) URL."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in SCHEMES:
            raise MrcnnError(f'{req.full_url} redirects to a {urlsplit(newurl).scheme or "relative"}: URL; '
                             'only http and https are fetched')
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_url(url: str, name: str | None = None, *, max_bytes: int = MAX_DOWNLOAD_BYTES,
              timeout: float = TIMEOUT_S) -> bytes:
    """The body of an http(s) URL, or one MrcnnError naming it (`name`: the URL as messages may
    show it, without its password)."""
    name = name or url
    if urlsplit(url).scheme.lower() not in SCHEMES:
        raise MrcnnError(f'{name}: only http and https URLs are fetched')
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    request = urllib.request.Request(url, headers={'User-Agent': f'mrcnn/{__version__}'})
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = int(response.headers.get('Content-Length') or 0)
            if declared > max_bytes:
                raise _too_big(name, max_bytes)
            body = _read_limited(response, max_bytes, time.monotonic() + timeout)
    except urllib.error.HTTPError as e:
        raise MrcnnError(f'cannot fetch {name}: HTTP {e.code} {e.reason}') from None
    except urllib.error.URLError as e:
        raise MrcnnError(f'cannot fetch {name}: {getattr(e, "reason", e)}') from None
    except TimeoutError:
        raise MrcnnError(f'cannot fetch {name}: not complete within {timeout:g} s') from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise MrcnnError(f'cannot fetch {name}: {type(e).__name__} {e}'.rstrip()) from None
    if len(body) > max_bytes:
        raise _too_big(name, max_bytes)
    return body


def _read_limited(response, max_bytes, deadline):
    """At most max_bytes + 1 bytes (one more says it is too big), all before the deadline: the
    socket's timeout bounds each read, this the whole download."""
    chunks, size = [], 0
    while size <= max_bytes:
        if time.monotonic() > deadline:
            raise TimeoutError
        chunk = response.read(min(1 << 16, max_bytes + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b''.join(chunks)


def _too_big(name, max_bytes):
    size = f'{max_bytes / 2 ** 20:g} MiB' if max_bytes >= 2 ** 20 else f'{max_bytes} bytes'
    return MrcnnError(f'cannot fetch {name}: larger than {size}')
