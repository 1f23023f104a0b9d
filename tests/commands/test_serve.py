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
from helpers import FAST, FAST_SCALE, assert_one_error_line, mrcnn_here

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
    """Per image: the COCO result entries `mrcnn predict` writes for it (without image_id, id, iscrowd),
    each with its category's name from the file's categories."""
    out = tmp_path_factory.mktemp('predict')
    proc = mrcnn_here('predict', *IMAGES, '--weights', checkpoint('r50'), '--style', 'pytorch', '--device', 'cpu',
                      *FAST, '--no-vis', '--out', out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / 'predictions.json').read_text())
    names = {c['id']: c['name'] for c in doc['categories']}
    return [[{**{k: v for k, v in a.items() if k not in ('image_id', 'id', 'iscrowd')},
              'category_name': names[a['category_id']]}
             for a in doc['annotations'] if a['image_id'] == image_id] for image_id in range(1, len(IMAGES) + 1)]


def test_answers_are_the_entries_mrcnn_predict_writes(model, expected):
    with client(model) as c:
        for path, entries in zip(IMAGES, expected):
            r = c.post('/v1/predict', files={'file': (path.name, path.read_bytes(), 'image/jpeg')})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body['detections'] == entries and len(entries) > 0
            assert (body['width'], body['height']) == tuple(cv2.imread(str(path)).shape[1::-1])
        raw = c.post('/v1/predict', content=IMAGES[0].read_bytes())           # the raw body works too
        assert raw.json()['detections'] == c.post(
            '/v1/predict', files={'file': ('a.jpg', IMAGES[0].read_bytes())}).json()['detections']


def test_batching_changes_no_answer(model):
    files = [('file', (p.name, p.read_bytes(), 'image/jpeg')) for p in IMAGES]
    with client(model, max_batch=1, timeout=600) as one, \
            client(model, max_batch=4, max_delay_ms=200, timeout=600) as four:
        a = one.post('/v1/predict/batch', files=files).json()['results']
        b = four.post('/v1/predict/batch', files=files).json()['results']
        metrics = four.get('/metrics').text
    assert [r['detections'] for r in a] == [r['detections'] for r in b] and len(a) == 3
    batched = [line for line in metrics.splitlines() if line.startswith('mrcnn_batch_size_count')]
    assert batched and float(batched[0].split()[-1]) < 4   # warm-up + fewer calls than images
    rss = [line for line in metrics.splitlines() if line.startswith('process_resident_memory_bytes')]
    assert rss and float(rss[0].split()[-1]) > 100e6        # the process's own memory, for replicas' limits


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


def start_server(checkpoint, *options):
    """`mrcnn serve --port 0` in a process of its own on 127.0.0.1, ready: (process, base URL).
    The port is the one the server names in its "serving on" line; ready is when it answers."""
    import httpx
    proc = subprocess.Popen([sys.executable, '-m', 'mrcnn_cli', 'serve', '--weights', str(checkpoint('r50')),
                             '--style', 'pytorch', '--device', 'cpu', *FAST, '--port', '0', *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = []
    for line in proc.stderr:   # the model line, then "serving on http://127.0.0.1:PORT/ ..."
        said.append(line)
        if line.startswith('serving on '):
            base = line.split()[2].rstrip('/')
            break
    else:
        proc.kill()
        raise AssertionError(f'the server did not start: {"".join(said)[-2000:]}')
    while proc.poll() is None:   # listening once its lifespan has warmed the model up: refused until then
        try:
            if httpx.get(base + '/readyz').status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        look_again()
    raise AssertionError(f'the server exited: {proc.stderr.read()[-2000:]}')


def look_again():
    """The pause between two looks of a polling loop: it waits for an event the server exposes, and
    must not take the CPU the server needs to get there (a busy loop starved it beside other work)."""
    time.sleep(0.05)


def metric(base, name, client=None):
    """A number of the server's /metrics (through `client`, an httpx.Client kept for a polling loop:
    a client per look would spend the CPU the server needs)."""
    import httpx
    for line in (client or httpx).get(base + '/metrics').text.splitlines():
        if line.startswith(name + ' '):
            return float(line.split()[-1])
    return 0.0


def test_a_port_in_use_is_one_error_line_before_the_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = mrcnn_here('serve', '--weights', tmp_path / 'never-read.pth', '--port', port)
    assert_one_error_line(proc, f'cannot listen on 127.0.0.1:{port}')


def test_a_real_server_answers_refuses_beyond_its_queue_and_drains_on_sigterm(checkpoint):
    import httpx
    proc, base = start_server(checkpoint, '--queue', '1', '--max-batch', '1')
    try:
        page = httpx.get(base + '/')
        assert page.status_code == 200 and '<title>mrcnn</title>' in page.text and 'http' not in page.text.split(
            '<script>')[1].split('fetch(')[0]   # no external script or CDN: the page works offline
        # more at once than one running and one queued: the rest are told to come back
        answers = []
        burst = [threading.Thread(target=lambda: answers.append(
            httpx.post(base + '/v1/predict', content=IMAGES[0].read_bytes(), timeout=600))) for _ in range(5)]
        for t in burst:
            t.start()
        for t in burst:
            t.join()
        statuses = sorted(r.status_code for r in answers)
        assert statuses.count(200) >= 1 and statuses.count(503) >= 1 and set(statuses) <= {200, 503}, statuses
        assert all(r.headers['retry-after'] == '1' and 'queue is full' in r.json()['error']
                   for r in answers if r.status_code == 503)
        two = [('file', p.read_bytes()) for p in IMAGES[:2]]   # one running, one queued
        with httpx.Client() as poll:
            for _ in range(3):   # in flight when the signal comes; answered before it was seen (a busy machine): again
                answer = {}
                worker = threading.Thread(target=lambda into=answer: into.setdefault(
                    'r', httpx.post(base + '/v1/predict/batch', files=two, timeout=600)))
                worker.start()
                while worker.is_alive() and metric(base, 'mrcnn_images_in_flight', poll) < 1:
                    look_again()
                if worker.is_alive():
                    break
            else:
                pytest.fail('three batches were answered before one was seen in flight')
        os.kill(proc.pid, signal.SIGTERM)
        refused = False
        while not refused and proc.poll() is None:   # draining: new connections are refused
            try:
                httpx.get(base + '/healthz')
                look_again()
            except httpx.ConnectError:
                refused = True
        assert refused
        worker.join()
        assert answer['r'].status_code == 200 and all(r['detections'] for r in answer['r'].json()['results'])
        assert proc.wait(timeout=60) == 0
        assert 'Traceback' not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()



def test_ray_serve_refuses_a_misspelt_option_before_any_replica_starts():
    from mrcnn_cli.errors import MrcnnError
    from mrcnn_cli.serve.ray_serve import app_builder
    with pytest.raises(MrcnnError, match="unknown option 'weigths'"):
        app_builder({'weigths': 'r50.pth', 'num_replicas': '2'})

def free_port():
    """Ray's HTTP proxy takes its port as a number up front (no port 0 to read back)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def answers_at_one_thread(checkpoint):
    """Per image, the detections the app answers in this process with torch on one thread."""
    import torch

    from mrcnn_cli import load
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load(weights=checkpoint('r50'), style='pytorch', device='cpu', scale=FAST_SCALE)
        with client(model) as c:
            return {path: c.post('/v1/predict', content=path.read_bytes()).json()['detections'] for path in IMAGES}
    finally:
        torch.set_num_threads(threads)


def test_ray_serve_runs_the_same_app_on_two_replicas(checkpoint, monkeypatch):
    """A local Ray cluster, two replicas: both answer, with `mrcnn predict`'s entries; Ray's own
    queue bound (max_queued_requests) turns a burst into 200s and 503s only."""
    import httpx
    ray = pytest.importorskip('ray')
    from ray import serve
    from ray.serve._private import api as serve_api
    from ray.serve._private import client as serve_client
    # Ray gives its HTTP proxy a fixed 60 s to start (a module constant, no setting), its controller
    # 5 s to see the proxy ready (then kills it: "the actor never ran") and its workers 60 s to
    # register: on a 2-core machine with other work running, starting Python processes that import
    # Ray takes longer. Nothing here is about speed, so give them room (the settings reach Ray's
    # processes through the environment ray.init starts them in).  Ray also starts its workers at
    # niceness 15, where busy processes beside them leave them next to no CPU: the replicas run at
    # the test's own priority.
    for module in (serve_api, serve_client):
        monkeypatch.setattr(module, 'HTTP_PROXY_TIMEOUT', 600)
    for name in ('RAY_worker_register_timeout_seconds', 'RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S',
                 'RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S'):
        monkeypatch.setenv(name, '600')
    monkeypatch.setenv('RAY_worker_niceness', '0')

    from mrcnn_cli.serve.ray_serve import app_builder
    # one CPU a replica, the machine's two in the cluster; Ray sets a replica's torch threads to its CPUs, and
    # CPU kernels sum in an order that depends on them: the expected answers are the app's at one thread
    at_one_thread = answers_at_one_thread(checkpoint)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        port = free_port()
        serve.start(http_options={'host': '127.0.0.1', 'port': port})
        # as `serve run mrcnn_cli.serve.ray_serve:app_builder key=value ...` gives them: strings
        serve.run(app_builder({'weights': str(checkpoint('r50')), 'style': 'pytorch', 'device': 'cpu',
                               'scale': ','.join(map(str, FAST_SCALE)), 'num_replicas': '2', 'num_cpus': '1',
                               'max_batch': '2', 'max_queued_requests': '4', 'timeout': '300'}), route_prefix='/')
        base = f'http://127.0.0.1:{port}'
        assert httpx.get(base + '/readyz').json() == {'status': 'ready'}
        jobs = [(path, at_one_thread[path]) for path in IMAGES] * 2
        # 4 at a time: fewer than Ray's queue bound, which counts requests not yet given to a replica
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda job: httpx.post(base + '/v1/predict', content=job[0].read_bytes(),
                                                           timeout=600), jobs))
        assert all(r.status_code == 200 for r in answers), [r.text[:200] for r in answers if r.status_code != 200]
        assert [r.json()['detections'] for r in answers] == [entries for _, entries in jobs]
        assert all(len(entries) > 0 for entries in at_one_thread.values())
        assert len({r.headers['x-replica'] for r in answers}) == 2
        assert serve.status().applications['default'].deployments['mrcnn'].replica_states == {'RUNNING': 2}
        with ThreadPoolExecutor(24) as pool:   # more than 2 x 4 ongoing and 4 queued
            burst = list(pool.map(lambda _: httpx.post(base + '/v1/predict', content=IMAGES[0].read_bytes(),
                                                       timeout=600), range(24)))
        statuses = sorted(r.status_code for r in burst)
        assert statuses.count(200) >= 4 and statuses.count(503) >= 1 and set(statuses) <= {200, 503}, statuses
        assert httpx.post(base + '/v1/predict', content=b'x' * 100).status_code == 415   # the app's refusals too
    finally:
        serve.shutdown()
        ray.shutdown()



def read_until_closed(sock, limit=30):
    """Everything the server sends until it closes the connection (or `limit` seconds pass)."""
    sock.settimeout(limit)
    data = b''
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        data += b'<still open>'
    return data


def test_slow_and_vanishing_clients_are_cut_off_and_cost_nothing(checkpoint):
    """Slow-loris headers and bodies get 408 and a closed connection after --read-timeout; a
    client gone mid-upload or mid-inference leaves the server answering the next one."""
    import httpx
    proc, base = start_server(checkpoint, '--read-timeout', '2')
    port = int(base.rsplit(':', 1)[1])
    image = IMAGES[0].read_bytes()
    try:
        slow = []
        for opening in (b'POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Le',   # headers never finish
                        b'POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n' % len(image)
                        + image[:1000],                                              # the body never finishes
                        b'POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n'
                        b'Content-Length: 5000\r\n\r\n--b\r\nContent-Disposition: form-data; name="file"; '
                        b'filename="a.jpg"\r\n\r\n' + image[:1000]):                     # nor does this form
            sock = socket.create_connection(('127.0.0.1', port))
            sock.sendall(opening)
            slow.append(read_until_closed(sock))
            sock.close()
        for answer in slow:
            assert answer.startswith(b'HTTP/1.1 408 ') and b'"error":' in answer, answer
        assert b'not sent in time' in slow[0] and all(b'did not arrive within 2 s' in a for a in slow[1:])
        # a trickle that keeps each read short is still cut at the deadline of the whole body
        sock = socket.create_connection(('127.0.0.1', port))
        sock.sendall(b'POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n' % len(image))
        cut = False
        for i in range(0, 60):
            try:
                sock.sendall(image[i * 10:(i + 1) * 10])
            except OSError:
                cut = True
                break
            time.sleep(0.2)   # the client's pace: 10 bytes at a time, each read well within the deadline
        assert cut or read_until_closed(sock, 30).startswith(b'HTTP/1.1 408 ')
        sock.close()

        for cut_at in (len(image) // 2, len(image)):   # gone mid-upload, and gone while the model runs
            with httpx.Client() as poll:
                calls = metric(base, 'mrcnn_batch_size_count', poll)
                sock = socket.create_connection(('127.0.0.1', port))
                sock.sendall(b'POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n' % len(image)
                             + image[:cut_at])
                while cut_at == len(image) and metric(base, 'mrcnn_images_in_flight', poll) < 1 \
                        and metric(base, 'mrcnn_batch_size_count', poll) == calls:   # (or run already)
                    look_again()
            sock.close()
        r = httpx.post(base + '/v1/predict', content=image, timeout=600)
        assert r.status_code == 200 and r.json()['detections']
        metrics = httpx.get(base + '/metrics').text
        assert 'mrcnn_requests_total{status="500"}' not in metrics
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    assert 'Traceback' not in proc.stderr.read()



HTTP_FUZZ_CASES = 300   # a share of `make fuzz`'s image corpus, as raw bodies and inside multipart forms


def test_fuzzed_uploads_get_answers_or_refusals_never_a_500(checkpoint):
    """tests/fuzzing.py's mutated images (and mutated multipart bodies around them) through HTTP to
    a real server: every answer a 200 or a one-line 4xx refusal, no traceback, and it serves on."""
    import random

    import httpx

    import fuzzing
    seeds = fuzzing.image_seeds()
    # what is tested is reading the bodies: the network runs at a small scale (the last --scale given wins)
    proc, base = start_server(checkpoint, '--max-body', '200000', '--scale', '160,96')
    statuses = {}
    try:
        with httpx.Client(base_url=base, timeout=600) as c:
            for case in range(HTTP_FUZZ_CASES):
                rng = random.Random(f'1:http:{case}')
                ext, data = rng.choice(seeds)
                if case % 4 == 3:   # the whole form mutated: boundaries, headers and the image
                    body = (b'--fz\r\nContent-Disposition: form-data; name="file"; filename="a%s"\r\n'
                            b'Content-Type: image/x\r\n\r\n%s\r\n--fz--\r\n' % (ext.encode(), data))
                    r = c.post('/v1/predict', content=fuzzing.mutate_bytes(body, rng),
                               headers={'content-type': 'multipart/form-data; boundary=fz'})
                else:
                    r = c.post('/v1/predict', content=fuzzing.mutate_bytes(data, rng))
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                assert r.status_code in (200, 413, 415, 422), (case, r.status_code, r.text)
                assert r.status_code == 200 or list(r.json()) == ['error'], (case, r.text)
            after = c.post('/v1/predict', content=IMAGES[0].read_bytes())
            assert after.status_code == 200 and after.json()['detections']
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert statuses.get(200, 0) > 20 and statuses.get(415, 0) > 20, statuses   # both paths were reached
    assert 'Traceback' not in proc.stderr.read()


CHROMIUM = '/usr/bin/chromium'   # Debian's package (`make browser`)
# what Chromium must not do in a closed network: reach Google's services at start-up
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']


def browser_or_skip():
    """Playwright driving Debian's Chromium; a skip where either is missing, unless
    MRCNN_REQUIRE_BROWSER=1 (CI sets it) turns that into a failure."""
    missing = [what for what, ok in [('Chromium at ' + CHROMIUM, os.path.exists(CHROMIUM)),
                                     ('playwright', __import__('importlib').util.find_spec('playwright'))] if not ok]
    if missing and os.environ.get('MRCNN_REQUIRE_BROWSER') == '1':
        pytest.fail(f'{" and ".join(missing)} not installed (make browser)')
    if missing:
        pytest.skip(f'{" and ".join(missing)} not installed (make browser)')
    from playwright.sync_api import sync_playwright
    return sync_playwright


def test_the_page_in_a_real_browser_asks_for_the_key_draws_and_tables_the_detections(checkpoint, expected, tmp_path):
    sync_playwright = browser_or_skip()
    proc, base = start_server(checkpoint, '--api-key', 's3cret')
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={'width': 1280, 'height': 1600})
            asked = []
            page.on('request', lambda r: asked.append(r.url))
            page.goto(base + '/')
            page.wait_for_selector('#keyform', state='visible')      # /v1/model answered 401
            page.fill('#key', 's3cret')
            page.click('#keyform button')
            page.wait_for_function("document.getElementById('model').textContent.includes('torch backend')")

            page.set_input_files('#file', str(IMAGES[1]))
            page.wait_for_selector('#status[data-done="yes"]', timeout=120_000)
            rows = page.eval_on_selector_all('#table tbody tr',
                                             'rows => rows.map(r => [...r.cells].map(c => c.textContent))')
            size = page.eval_on_selector('#picture', 'img => [img.naturalWidth, img.naturalHeight]')
            drawn = page.eval_on_selector('#picture', 'img => img.src')
            page.screenshot(path=str(tmp_path / 'page.png'), full_page=True)

            page.set_input_files('#file', {'name': 'notes.txt', 'mimeType': 'text/plain', 'buffer': b'not an image'})
            page.wait_for_selector('#status[data-done="error"]')
            refusal = page.text_content('#status')
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    entries = expected[1]
    assert len(rows) == len(entries) > 0
    for row, entry in zip(rows, entries):
        assert row[1] == entry['category_name'] and float(row[2]) == round(entry['score'], 3)
        assert [float(v) for v in row[3].split(', ')] == [round(v, 1) for v in entry['bbox']]
        assert int(row[4]) == entry['area']
    original = cv2.imread(str(IMAGES[1]))
    assert tuple(size) == original.shape[1::-1]
    picture = cv2.imdecode(np.frombuffer(__import__('base64').b64decode(drawn.split(',', 1)[1]), np.uint8),
                           cv2.IMREAD_COLOR)
    x, y, w, h = map(int, entries[0]['bbox'])   # the surest detection's mask is painted in its box
    assert np.abs(picture[y:y + h, x:x + w].astype(int) - original[y:y + h, x:x + w]).mean() > 10
    shot = cv2.imread(str(tmp_path / 'page.png'))
    assert shot.shape[1] == 1280 and shot.std() > 20
    assert refusal.startswith('error: ') and 'not a readable image' in refusal
    assert asked and all(url.startswith(base) or url.startswith('data:') for url in asked), asked   # works offline
