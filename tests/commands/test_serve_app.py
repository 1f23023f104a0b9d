"""`mrcnn serve`'s app in process (FastAPI's TestClient) around a fake model: routing, the API key,
every refusal as one JSON line, the OpenAPI description, mounting inside another app, and a
refused image stopping its batch's other work.  Fast: part of the quick loop.  What the answers
contain with the real model is test_serve.py's."""
import threading
import time

import cv2
import numpy as np
import pytest

from mrcnn_cli.engine.detections import Detections, MaskWindow

fastapi_testclient = pytest.importorskip('fastapi.testclient')
CLASSES = ('person', 'car', 'cat')


class FakeModel:
    """What create_app asks of a model: a Runner that describes itself.  Each image gets one
    detection per class (scores 0.9, 0.5, 0.2); `gate` (set by default) holds prepare for images
    wider than 100 px, and every image run through the network is counted."""
    classes = CLASSES
    scale = (1333, 800)

    def __init__(self):
        self.predicted, self.prepared, self.entered = [], [], []
        self.gate, self.network_gate = threading.Event(), threading.Event()
        self.gate.set()
        self.network_gate.set()

    def describe(self):
        return 'fake model'

    def identity(self):
        return {'model': 'fake', 'weights_sha256': '0' * 64, 'backend': 'fake', 'precision': 'fp32',
                'scale': list(self.scale), 'classes': list(CLASSES)}

    def prepare(self, image):
        self.entered.append(image.shape)
        if image.shape[1] > 100:
            self.gate.wait(30)
        self.prepared.append(image.shape)
        return image.shape[:2]

    def predict_prepared(self, prepared, stage=None):
        self.network_gate.wait(30)
        self.predicted += prepared
        win = MaskWindow(np.ones((2, 2), bool), 0, 0)
        return [Detections(np.array([[0, 0, 2, 2]] * 3, np.float32), [0.9, 0.5, 0.2], [0, 1, 2], [win] * 3, h, w,
                           CLASSES) for h, w in prepared]


def client(model=None, app=None, **options):
    from mrcnn_cli.serve import ServeOptions, create_app
    return fastapi_testclient.TestClient(app or create_app(model or FakeModel(), ServeOptions(**options)))


def png(width, height):
    return cv2.imencode('.png', np.full((height, width, 3), 80, np.uint8))[1].tobytes()


def test_an_image_gets_the_entries_of_its_detections_above_the_threshold():
    with client() as c:
        r = c.post('/v1/predict', files={'file': ('a.png', png(64, 48), 'image/png')})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body['model'] == 'fake model' and (body['width'], body['height']) == (64, 48)
        assert [(d['category_name'], d['score']) for d in body['detections']] == [('person', pytest.approx(0.9)),
                                                                                  ('car', 0.5)]
        assert body['detections'][0]['bbox'] == [0, 0, 2, 2] and body['detections'][0]['segmentation']['counts']
        everything = c.post('/v1/predict?score_thr=0&mask_format=none', content=png(64, 48)).json()['detections']
        assert len(everything) == 3 and all('segmentation' not in d for d in everything)
        cats = c.post('/v1/predict?classes=cat,0&score_thr=0.1', content=png(64, 48)).json()['detections']
        assert [d['category_name'] for d in cats] == ['person', 'cat']


@pytest.mark.parametrize('request_kwargs,status,message', [
    ({'content': b'not an image at all'}, 415, 'not a readable image'),
    ({'content': b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\xea\x60\x00\x00\xea\x60\x08\x02\x00\x00\x00'},
     413, 'more than the limit'),
    ({'content': b'x' * 2_000_001}, 413, 'larger than the limit of 2000000 bytes'),
    ({'content': b'', 'params': {'score_thr': 2}}, 422, 'score_thr'),
    ({'content': b'', 'params': {'mask_format': 'svg'}}, 422, 'mask_format'),
    ({'content': b'', 'params': {'classes': 'persn'}}, 422, "did you mean 'person'"),
    ({'content': b'', 'params': {'colour': 'red'}}, 422, "unknown option 'colour'"),
    ({'content': b''}, 422, 'send one image (got 0)'),
    ({'files': {'photo': ('a.png', png(8, 8), 'image/png')}}, 422,
     "field 'file' or as the raw body (got fields: photo)"),
])
def test_bad_requests_get_their_status_and_one_line(request_kwargs, status, message):
    with client(max_body=2_000_000) as c:
        r = c.post('/v1/predict', **request_kwargs)
    assert r.status_code == status and list(r.json()) == ['error'] and message in r.json()['error'], r.text


def test_a_chunked_body_over_the_limit_is_413_before_it_is_all_read():
    def chunks():
        for _ in range(10):
            yield b'x' * 1000
    with client(max_body=2500) as c:
        r = c.post('/v1/predict', content=chunks())
    assert r.status_code == 413 and 'larger than the limit of 2500 bytes' in r.json()['error']


def test_unknown_paths_and_methods_answer_one_json_line():
    with client() as c:
        missing, wrong = c.get('/v2/nothing'), c.get('/v1/predict')
    assert missing.status_code == 404 and missing.json() == {'error': 'GET /v2/nothing: Not Found'}
    assert wrong.status_code == 405 and list(wrong.json()) == ['error']


def test_an_api_key_is_required_where_set_and_probes_stay_open():
    with client(api_key='s3cret') as c:
        assert c.get('/healthz').status_code == 200 and c.get('/readyz').json() == {'status': 'ready'}
        assert c.get('/').status_code == 200   # the page asks for the key itself
        assert c.get('/v1/model').status_code == 401 and c.get('/metrics').status_code == 401
        assert c.post('/v1/predict', content=png(8, 8), headers={'X-API-Key': 'wrong'}).status_code == 401
        assert c.get('/v1/model', headers={'Authorization': 'Bearer s3cret'}).json()['backend'] == 'fake'
        assert c.get('/v1/model', headers={'X-API-Key': 's3cret'}).status_code == 200
        assert c.get('/nothing', headers={'X-API-Key': 's3cret'}).status_code == 404


def test_the_openapi_description_shows_every_option_and_answer():
    with client(api_key='k') as c:
        spec = c.get('/openapi.json').json()
    for path in ('/v1/predict', '/v1/predict/batch'):
        post = spec['paths'][path]['post']
        assert {p['name'] for p in post['parameters']} == {'score_thr', 'classes', 'mask_format', 'image'}
        assert 'multipart/form-data' in post['requestBody']['content']
        assert {'200', '413', '415', '422', '503'} <= set(post['responses'])
        assert post['security']   # the key, as the docs page sends it
    answer = spec['components']['schemas']['PredictResponse']['properties']
    assert {'model', 'width', 'height', 'detections', 'timings'} <= set(answer)
    assert 'category_name' in spec['components']['schemas']['Detection']['properties']


def test_a_mounted_app_starts_on_first_use_and_its_parent_closes_it():
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from mrcnn_cli.serve import create_app
    model = FakeModel()
    inner = create_app(model)

    @asynccontextmanager
    async def lifespan(app):
        yield
        await inner.state.service.close()

    parent = FastAPI(lifespan=lifespan)
    parent.mount('/mrcnn', inner)
    with client(app=parent) as c:
        assert c.get('/mrcnn/readyz').status_code == 503           # not started by the parent's lifespan
        r = c.post('/mrcnn/v1/predict', content=png(32, 32))       # the first request starts it
        assert r.status_code == 200 and r.json()['width'] == 32
        assert c.get('/mrcnn/readyz').json() == {'status': 'ready'}
    engine = inner.state.service.engine
    assert engine.closed and not engine.thread.is_alive()


def test_a_refused_image_stops_the_work_on_the_others_of_its_batch():
    model = FakeModel()
    with client(model) as c:
        model.gate.clear()   # images wider than 100 px wait in prepare
        files = [('file', ('good1.png', png(200, 150))), ('file', ('bad.txt', b'not an image')),
                 ('file', ('good2.png', png(200, 150)))]
        r = c.post('/v1/predict/batch', files=files)
        assert r.status_code == 415 and 'bad.txt' in r.json()['error']
        model.gate.set()
        while len(model.prepared) < len(model.entered):   # what began preparing has finished
            time.sleep(0.001)   # polling that state, not timing it
        assert c.post('/v1/predict', content=png(8, 8)).status_code == 200
    assert (150, 200) not in model.predicted and len(model.predicted) == 2   # the warm-up and the last image


def test_a_result_later_than_the_timeout_is_504_and_the_service_goes_on():
    model = FakeModel()
    with client(model, timeout=0.2) as c:
        model.network_gate.clear()   # the model thread is busy until the test says
        r = c.post('/v1/predict', content=png(8, 8))
        assert r.status_code == 504 and 'no result within 0.2 s' in r.json()['error']
        model.network_gate.set()
        assert c.get('/healthz').status_code == 200
        assert c.post('/v1/predict', content=png(8, 8)).status_code == 200


def test_a_full_queue_is_503_with_retry_after():
    model = FakeModel()
    with client(model, queue=1, max_batch=1, timeout=30) as c:
        model.network_gate.clear()
        answers = []
        first = threading.Thread(target=lambda: answers.append(c.post('/v1/predict', content=png(8, 8))))
        first.start()
        while 'mrcnn_images_in_flight 1.0' not in c.get('/metrics').text:   # it is with the model
            time.sleep(0.001)   # polling that state (the gate holds it there), not timing it
        second = threading.Thread(target=lambda: answers.append(c.post('/v1/predict', content=png(8, 8))))
        second.start()
        while 'mrcnn_queue_depth 1.0' not in c.get('/metrics').text:       # it waits in the queue
            time.sleep(0.001)
        third = c.post('/v1/predict', content=png(8, 8))
        model.network_gate.set()
        first.join(30), second.join(30)
    assert third.status_code == 503 and third.headers['retry-after'] == '1' and 'queue is full' in third.json()['error']
    assert sorted(r.status_code for r in answers) == [200, 200]


def test_serve_options_are_one_list_for_the_command_line_the_app_and_ray():
    from dataclasses import fields

    from mrcnn_cli.commands.cli import cli
    from mrcnn_cli.errors import MrcnnError
    from mrcnn_cli.serve import ServeOptions
    names = {f.name for f in fields(ServeOptions)}
    flags = {p.name for p in cli.commands['serve'].params}
    assert names <= flags and 'read_timeout' in names
    assert ServeOptions.from_strings({'read_timeout': '5', 'max_batch': '2'}) == ServeOptions(read_timeout=5.0,
                                                                                            max_batch=2)
    with pytest.raises(MrcnnError, match="unknown serve option 'max_bach'"):
        ServeOptions.from_strings({'max_bach': '2'})
    with pytest.raises(MrcnnError, match='max_batch must be at least 1'):
        ServeOptions(max_batch=0)
