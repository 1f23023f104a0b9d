"""`mrcnn predict` on images: pictures with masks drawn and one predictions.json."""
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mrcnn_cli import MrcnnError
from mrcnn_cli.preprocess import read_image
from mrcnn_cli.results import CocoDocument, atomic_path
from mrcnn_cli.sources import collect_images, output_names
from mrcnn_cli.visualize import draw_detections


@dataclass
class PredictSummary:
    images: int = 0
    instances: int = 0
    failed: list = field(default_factory=list)
    json_path: Path = None
    out_dir: Path = None


def class_mask(det, classes, score_thr, class_filter):
    keep = det.scores >= score_thr
    if class_filter:
        wanted = np.isin(det.labels, [classes.index(c) for c in class_filter])
        keep &= wanted
    return keep


def parse_class_filter(text, classes):
    if not text:
        return None
    names = [c.strip() for c in text.split(',') if c.strip()]
    unknown = [c for c in names if c not in classes]
    if unknown:
        raise MrcnnError(f"unknown class {unknown[0]!r} in --classes (known: {', '.join(classes[:5])}, ...)")
    return names


def write_image(path, img):
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), img):
            raise MrcnnError(f'cannot write {path}')


def predict_images(predictor, sources, out_dir='runs/predict', score_thr=0.3, vis=True,
                   class_filter=None, progress=True, warn=print):
    out_dir = Path(out_dir)
    paths, missing = collect_images(sources, exclude_dir=out_dir, warn=warn)
    summary = PredictSummary(failed=list(missing), out_dir=out_dir, json_path=out_dir / 'predictions.json')
    doc = CocoDocument(predictor.classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for path, name in tqdm(list(zip(paths, output_names(paths))), desc='predict', unit='img',
                               disable=not progress):
            try:
                img = read_image(path)
            except MrcnnError as e:
                warn(f'warning: skipped {e}')
                summary.failed.append(str(path))
                continue
            det = predictor.predict(img)
            keep = class_mask(det, predictor.classes, score_thr, class_filter)
            doc.add(str(path), det, keep)
            summary.images += 1
            summary.instances += int(keep.sum())
            if vis:
                write_image(out_dir / name, draw_detections(img, det, predictor.classes, keep))
    finally:
        # Also on Ctrl-C: the JSON holds every image finished so far.
        doc.write(summary.json_path)
    return summary
