"""Every code block of the README's "Python API" section runs as written (issue 16)."""
import re
import shutil

import cv2

from conftest import COCO_IMAGES, ROOT, SHARED


def api_blocks():
    text = (ROOT / 'README.md').read_text()
    section = text.split('## Python API', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```python\n(.*?)```', section, flags=re.S)


def test_python_api_section_runs(tmp_path, monkeypatch, checkpoint, zoo_weights_dir, exported):
    blocks = api_blocks()
    assert blocks and 'mrcnn_cli.load(' in blocks[0]
    shutil.copy(COCO_IMAGES / '000000397133.jpg', tmp_path / 'street.jpg')
    shutil.copy(COCO_IMAGES / '000000516916.jpg', tmp_path / 'a.jpg')
    cv2.imwrite(str(tmp_path / 'b.png'), cv2.imread(str(COCO_IMAGES / '000000011813.jpg')))
    (tmp_path / 'ft.pth').symlink_to(checkpoint('r50_caffe'))
    (tmp_path / 'ckpt.pth').symlink_to(checkpoint('r50'))
    (tmp_path / 'r50.onnx').symlink_to(exported('r50'))
    cap = cv2.VideoCapture(str(SHARED / 'data' / 'video' / 'mmaction2_demo.mp4'))   # a 4-frame road.mp4
    writer = cv2.VideoWriter(str(tmp_path / 'road.mp4'), cv2.VideoWriter_fourcc(*'mp4v'), 25, (340, 256))
    for _ in range(4):
        writer.write(cap.read()[1])
    writer.release()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('MRCNN_WEIGHTS_DIR', str(zoo_weights_dir))
    namespace = {}
    for block in blocks:
        exec(compile(block, 'README.md', 'exec'), namespace)   # noqa: S102 - our own documentation
    assert len(namespace['dets']) == 2 and namespace['onnx_model'].classes == namespace['model'].classes
    assert (tmp_path / 'street_masks.jpg').exists()
    det = namespace['det']
    assert len(namespace['polygons']) == len(det) and isinstance(namespace['polygons'][0]['segmentation'], list)
    out = tmp_path / 'out'
    assert (out / 'masks' / 'street.png').exists() and (out / 'labels' / 'street.txt').exists()
    assert len(list((tmp_path / 'out' / 'crops').rglob('street_*.png'))) == len(det)
