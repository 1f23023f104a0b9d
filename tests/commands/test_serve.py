"""`mrcnn serve` (issue 29, first part): the HTTP answers equal `mrcnn predict`'s entries for the
same images, batching changes nothing, every refusal has its status and one JSON line, and a real
server process on 127.0.0.1 answers, then drains and exits 0 on SIGTERM."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from conftest import COCO_IMAGES
from helpers import FAST, FAST_SCALE, mrcnn_here

fastapi_testclient = pytest.importorskip('fastapi.testclient')
pytestmark = pytest.mark.slow
IMAGES = [COCO_IMAGES / name for name in ('000000011813.jpg', '000000034417.jpg', '000000092660.jpg')]


@pytest.fixture(scope='module')
def model(checkpoint):
    from mrcnn_cli import load
    return load(weights=checkpoint('r50'), style='pytorch', device='cpu', scale=FAST_SCALE)


def client(model, **options):
    from mrcnn_cli.serve import ServeOptions, create_app
    return fastapi_testclient.TestClient(create_app(model, ServeOptions(**options)))


@pytest.fixture(scope='module')
def expected(checkpoint, tmp_path_factory):
    """Per image: the COCO result entries `mrcnn predict` writes for it (without image_id, id, iscrowd)."""
    out = tmp_path_factory.mktemp('predict')
    proc = mrcnn_here('predict', *IMAGES, '--weights', checkpoint('r50'), '--style', 'pytorch', '--device', 'cpu',
                      *FAST, '--no-vis', '--out', out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / 'predictions.json').read_text())
    return [[{k: v for k, v in a.items() if k not in ('image_id', 'id', 'iscrowd')}
             for a in doc['annotations'] if a['image_id'] == image_id] for image_id in range(1, len(IMAGES) + 1)]


def without_names(detections):
    return [{k: v for k, v in d.items() if k != 'category_name'} for d in detections]


def test_answers_are_the_entries_mrcnn_predict_writes(model, expected):
    with client(model) as c:
        for path, entries in zip(IMAGES, expected):
            r = c.post('/v1/predict', files={'file': (path.name, path.read_bytes(), 'image/jpeg')})
            assert r.status_code == 200, r.text
            body = r.json()
            assert without_names(body['detections']) == entries and len(entries) > 0
            assert (body['width'], body['height']) == tuple(cv2.imread(str(path)).shape[1::-1])
            assert all(d['category_name'] in model.classes for d in body['detections'])
        raw = c.post('/v1/predict', content=IMAGES[0].read_bytes())           # the raw body works too
        assert raw.json()['detections'] == c.post(
            '/v1/predict', files={'file': ('a.jpg', IMAGES[0].read_bytes())}).json()['detections']


def test_batching_changes_no_answer(model):
    files = [('file', (p.name, p.read_bytes(), 'image/jpeg')) for p in IMAGES]
    with client(model, max_batch=1) as one, client(model, max_batch=4, max_delay_ms=200) as four:
        a = one.post('/v1/predict/batch', files=files).json()['results']
        b = four.post('/v1/predict/batch', files=files).json()['results']
        metrics = four.get('/metrics').text
    assert [r['detections'] for r in a] == [r['detections'] for r in b] and len(a) == 3
    batched = [line for line in metrics.splitlines() if line.startswith('mrcnn_batch_size_count')]
    assert batched and float(batched[0].split()[-1]) < 4   # warm-up + fewer calls than images


def test_options_masks_polygons_pictures_and_classes(model):
    data = IMAGES[1].read_bytes()
    with client(model) as c:
        rle = c.post('/v1/predict', content=data).json()['detections']
        poly = c.post('/v1/predict?mask_format=polygon', content=data).json()['detections']
        none = c.post('/v1/predict?mask_format=none&score_thr=0.05', content=data).json()['detections']
        picture = c.post('/v1/predict?image=png', content=data).json()['image']
        one_class = c.post(f'/v1/predict?classes={rle[0]["category_name"]}', content=data).json()['detections']
    assert [d['bbox'] for d in poly] == [d['bbox'] for d in rle] and isinstance(poly[0]['segmentation'], list)
    assert 'segmentation' not in none[0] and len(none) >= len(rle)
    png = cv2.imdecode(np.frombuffer(__import__('base64').b64decode(picture['base64']), np.uint8), cv2.IMREAD_COLOR)
    assert png.shape == cv2.imread(str(IMAGES[1])).shape
    assert {d['category_name'] for d in one_class} == {rle[0]['category_name']}


@pytest.mark.parametrize('request_kwargs,status,message', [
    ({'content': b'not an image at all'}, 415, 'not a readable image'),
    ({'content': b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\xea\x60\x00\x00\xea\x60\x08\x02\x00\x00\x00'},
     413, 'more than the limit'),
    ({'content': b'x' * 2_000_001}, 413, 'larger than the limit of 2000000 bytes'),
    ({'content': b'', 'params': {'score_thr': 2}}, 422, 'score_thr'),
    ({'content': b'', 'params': {'classes': 'persn'}}, 422, "did you mean 'person'"),
    ({'content': b'', 'params': {'colour': 'red'}}, 422, "unknown option 'colour'"),
    ({'content': b''}, 422, 'send one image (got 0)')])
def test_bad_requests_get_their_status_and_one_line(model, request_kwargs, status, message):
    with client(model, max_body=2_000_000) as c:
        r = c.post('/v1/predict', **request_kwargs)
    assert r.status_code == status and list(r.json()) == ['error'] and message in r.json()['error'], r.text


def test_an_api_key_is_required_where_set_and_probes_stay_open(model):
    with client(model, api_key='s3cret') as c:
        assert c.get('/healthz').status_code == 200 and c.get('/readyz').json() == {'status': 'ready'}
        assert c.get('/v1/model').status_code == 401
        assert c.post('/v1/predict', content=IMAGES[0].read_bytes(), headers={'X-API-Key': 'wrong'}).status_code == 401
        assert c.get('/v1/model', headers={'Authorization': 'Bearer s3cret'}).json()['backend'] == 'torch'
        assert c.get('/v1/model', headers={'X-API-Key': 's3cret'}).status_code == 200


class SlowPredictor:
    """The model, taking `seconds` longer per call."""

    def __init__(self, model, seconds):
        self.model, self.seconds = model, seconds
        self.prepare = model.prepare

    def predict_prepared(self, prepared):
        time.sleep(self.seconds)
        return self.model.predict_prepared(prepared)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_a_result_later_than_the_timeout_is_504(model):
    with client(SlowPredictor(model, 1.5), timeout=0.5) as c:
        r = c.post('/v1/predict', content=IMAGES[0].read_bytes())
        assert c.get('/healthz').status_code == 200      # the service goes on
    assert r.status_code == 504 and 'no result within 0.5 s' in r.json()['error']


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_a_real_server_answers_refuses_beyond_its_queue_and_drains_on_sigterm(checkpoint):
    import httpx
    port = free_port()
    proc = subprocess.Popen([sys.executable, '-m', 'mrcnn_cli', 'serve', '--weights', str(checkpoint('r50')),
                             '--style', 'pytorch', '--device', 'cpu', *FAST, '--port', str(port), '-q',
                             '--queue', '1', '--max-batch', '1'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f'http://127.0.0.1:{port}'
        for _ in range(600):
            try:
                if httpx.get(base + '/readyz').status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        page = httpx.get(base + '/')
        assert page.status_code == 200 and '<title>mrcnn</title>' in page.text and 'http' not in page.text.split(
            '<script>')[1].split('fetch(')[0]   # no external script or CDN: the page works offline
        # more at once than one running and one queued: the rest are told to come back
        answers = []
        burst = [threading.Thread(target=lambda: answers.append(
            httpx.post(base + '/v1/predict', content=IMAGES[0].read_bytes(), timeout=60))) for _ in range(5)]
        for t in burst:
            t.start()
        for t in burst:
            t.join()
        statuses = sorted(r.status_code for r in answers)
        assert statuses.count(200) >= 1 and statuses.count(503) >= 1 and set(statuses) <= {200, 503}, statuses
        assert all(r.headers['retry-after'] == '1' and 'queue is full' in r.json()['error']
                   for r in answers if r.status_code == 503)
        answer = {}
        worker = threading.Thread(target=lambda: answer.setdefault(
            'r', httpx.post(base + '/v1/predict', content=IMAGES[2].read_bytes(), timeout=60)))
        worker.start()
        time.sleep(0.3)                     # in flight when the signal comes
        os.kill(proc.pid, signal.SIGTERM)
        worker.join()
        assert answer['r'].status_code == 200 and answer['r'].json()['detections']
        assert proc.wait(timeout=60) == 0
        assert 'Traceback' not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ray_serve_runs_the_same_app_on_two_replicas(checkpoint, expected):
    """A local Ray cluster, two replicas: both answer, with `mrcnn predict`'s entries; Ray's own
    queue bound (max_queued_requests) turns a burst into 200s and 503s only."""
    import httpx
    ray = pytest.importorskip('ray')
    from ray import serve

    from mrcnn_cli.serve.ray_serve import app_builder
    port = free_port()
    # two CPUs a replica (so torch runs on as many threads as `mrcnn predict` here: CPU kernels sum in
    # an order that depends on it), four in the cluster, on this 2-core machine
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={'host': '127.0.0.1', 'port': port})
        # as `serve run mrcnn_cli.serve.ray_serve:app_builder key=value ...` gives them: strings
        serve.run(app_builder({'weights': str(checkpoint('r50')), 'style': 'pytorch', 'device': 'cpu',
                               'scale': ','.join(map(str, FAST_SCALE)), 'num_replicas': '2', 'num_cpus': '2',
                               'max_batch': '2', 'max_queued_requests': '4'}), route_prefix='/')
        base = f'http://127.0.0.1:{port}'
        assert httpx.get(base + '/readyz').json() == {'status': 'ready'}
        jobs = [(path, entries) for path, entries in zip(IMAGES, expected)] * 2
        # 4 at a time: fewer than Ray's queue bound, which counts requests not yet given to a replica
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda job: httpx.post(base + '/v1/predict', content=job[0].read_bytes(),
                                                           timeout=120), jobs))
        assert all(r.status_code == 200 for r in answers), [r.text[:200] for r in answers if r.status_code != 200]
        assert [without_names(r.json()['detections']) for r in answers] == [entries for _, entries in jobs]
        assert len({r.headers['x-replica'] for r in answers}) == 2
        assert serve.status().applications['default'].deployments['mrcnn'].replica_states == {'RUNNING': 2}
        with ThreadPoolExecutor(24) as pool:   # more than 2 x 4 ongoing and 4 queued
            burst = list(pool.map(lambda _: httpx.post(base + '/v1/predict', content=IMAGES[0].read_bytes(),
                                                       timeout=120), range(24)))
        statuses = sorted(r.status_code for r in burst)
        assert statuses.count(200) >= 4 and statuses.count(503) >= 1 and set(statuses) <= {200, 503}, statuses
        assert httpx.post(base + '/v1/predict', content=b'x' * 100).status_code == 415   # the app's refusals too
    finally:
        serve.shutdown()
        ray.shutdown()
