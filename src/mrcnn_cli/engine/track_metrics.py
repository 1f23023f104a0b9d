"""`mrcnn eval track`: HOTA, IDF1 and MOTA (with DetA, AssA, IDSW) through TrackEval.

Ground truth and results are MOTS txt files (KITTI MOTS / MOTSChallenge layout: `frame id class_id
height width rle`) or MOTChallenge box files (`frame,id,left,top,width,height,conf,class,visibility`),
one per sequence, paired by file name.  They are checked line by line first (TrackEval's own
errors name no line), then laid out as TrackEval's KITTI MOTS or MOTChallenge 2D box dataset reads
them and scored by TrackEval itself: car (1) and pedestrian (2) masks, or pedestrian boxes."""
from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.tracks import KITTI_CLASS_IDS, mot_frame_problem, mots_frame_problem, read_mot, read_mots

MOTS_CLASSES = {'car': KITTI_CLASS_IDS['car'], 'pedestrian': KITTI_CLASS_IDS['pedestrian']}
TRACKER_NAME = 'mrcnn'
# what each row reports: (name, TrackEval metric family, its field); HOTA's are averaged over its alphas
COLUMNS = (('HOTA', 'HOTA', 'HOTA'), ('DetA', 'HOTA', 'DetA'), ('AssA', 'HOTA', 'AssA'), ('IDF1', 'Identity', 'IDF1'),
           ('MOTA', 'CLEAR', 'MOTA'), ('IDSW', 'CLEAR', 'IDSW'), ('GT', 'Count', 'GT_Dets'),
           ('found', 'Count', 'Dets'))


def require_trackeval() -> Any:
    try:
        import trackeval
    except ImportError:
        raise MrcnnError('mrcnn eval track needs TrackEval: pip install --no-deps trackeval (its other needs, numpy, '
                         'scipy and pycocotools, are mrcnn\'s)') from None
    return trackeval


@dataclass
class TrackScores:
    """Per sequence ('COMBINED_SEQ' for all of them) and class: each COLUMNS name's value."""
    sequences: list[str]
    classes: list[str]
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def table(self) -> list[str]:
        """The combined scores, one row per class, as `mrcnn eval track` prints them."""
        names = [name for name, _, _ in COLUMNS]
        rows = [f'{"class":<12}' + ''.join(f'{n:>8}' for n in names)]
        for cls in self.classes:
            values = self.scores['COMBINED_SEQ'][cls]
            rows.append(f'{cls:<12}' + ''.join(_cell(n, values[n]) for n in names))
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {'sequences': self.sequences, 'classes': self.classes, 'scores': self.scores}


def _cell(name: str, value: float) -> str:
    return f'{int(value):>8d}' if name in ('IDSW', 'GT', 'found') else f'{value:>8.3f}'


def sequence_files(path: str | Path, what: str, folder_name: str = 'mots') -> dict[str, Path]:
    """{sequence name: file}: a .txt file, or the .txt files of a folder (or of its `folder_name`/,
    as `mrcnn track` writes them)."""
    path = Path(path)
    if path.is_file():
        return {path.stem: path}
    if path.is_dir():
        folder = path / folder_name if (path / folder_name).is_dir() else path
        files = {p.stem: p for p in sorted(folder.glob('*.txt'))}
        if files:
            return files
        raise MrcnnError(f'no .txt files in {folder} ({what})')
    raise MrcnnError(f'no such file or directory: {path} ({what})')


def is_mot_box_file(path: Path) -> bool:
    """MOTChallenge box files are comma-separated; MOTS txt is not."""
    try:
        with open(path, 'rb') as f:
            return b',' in f.readline()
    except OSError as e:
        raise MrcnnError(f'cannot read {path}: {e.strerror or e}') from None


def evaluate_tracks(gt: str | Path, results: str | Path) -> TrackScores:
    """TrackEval's HOTA, CLEAR and Identity metrics of `results` against `gt` (files or folders):
    MOTS txt (masks: car and pedestrian, as KITTI MOTS) or, when the ground truth is
    comma-separated, MOTChallenge boxes (pedestrians, with MOT's distractor classes)."""
    boxes = is_mot_box_file(next(iter(sequence_files(gt, 'ground truth').values())))
    gt_files, result_files = paired(gt, results, 'mot' if boxes else 'mots')
    return _evaluate_boxes(gt_files, result_files) if boxes else _evaluate_masks(gt_files, result_files)


def evaluate_mots(gt: str | Path, results: str | Path) -> TrackScores:
    """`evaluate_tracks` for MOTS txt files."""
    return _evaluate_masks(*paired(gt, results, 'mots'))


def paired(gt: str | Path, results: str | Path, folder_name: str) -> tuple[dict[str, Path], dict[str, Path]]:
    """The ground truth's sequences and each one's results file (paired by name; two files: one sequence)."""
    gt_files = sequence_files(gt, 'ground truth', folder_name)
    result_files = sequence_files(results, 'results', folder_name)
    if len(gt_files) == 1 and len(result_files) == 1:   # two files: one sequence, whatever their names
        result_files = {next(iter(gt_files)): next(iter(result_files.values()))}
    missing = sorted(set(gt_files) - set(result_files))
    if missing:
        raise MrcnnError(f'no results for the ground truth sequence {missing[0]} (results are paired with ground '
                         f'truth by file name; found {", ".join(sorted(result_files)) or "none"})')
    return gt_files, {seq: result_files[seq] for seq in gt_files}


def read_checked(path: Path, read: Callable[[Path], list[Any]],
                 problem_of: Callable[[list[Any]], str | None]) -> list[Any]:
    """A file's lines, each checked by `read`, then all of them by `problem_of` (one MrcnnError naming the file)."""
    objects = read(path)
    problem = problem_of(objects)
    if problem:
        raise MrcnnError(f'{path}: {problem}')
    return objects


def _evaluate_masks(gt_files: dict[str, Path], result_files: dict[str, Path]) -> TrackScores:
    lengths, present = {}, set()
    for seq in gt_files:
        truth, found = read_checked(gt_files[seq], read_mots, mots_frame_problem), \
            read_checked(result_files[seq], read_mots, mots_frame_problem)
        if truth and found and truth[0].rle['size'] != found[0].rle['size']:
            (h, w), (rh, rw) = truth[0].rle['size'], found[0].rle['size']
            raise MrcnnError(f'{result_files[seq]} is for {rw}x{rh} images, its ground truth {gt_files[seq]} for '
                             f'{w}x{h}')
        lengths[seq] = 1 + max((o.frame for o in truth + found), default=0)
        present |= {o.class_id for o in truth}
    classes = [name for name, class_id in MOTS_CLASSES.items() if class_id in present]
    if not classes:
        raise MrcnnError('the ground truth has no car (class_id 1) or pedestrian (2) objects: the classes TrackEval '
                         'scores MOTS files for')
    return _run_trackeval('KittiMOTS', gt_files, result_files, '{gt_folder}/label_02/{seq}.txt', classes,
                          {'SEQ_INFO': lengths})


def _evaluate_boxes(gt_files: dict[str, Path], result_files: dict[str, Path]) -> TrackScores:
    lengths = {}
    for seq in gt_files:
        truth, found = read_checked(gt_files[seq], read_mot, mot_frame_problem), \
            read_checked(result_files[seq], read_mot, mot_frame_problem)
        lengths[seq] = max((o.frame for o in truth + found), default=1)   # MOTChallenge counts frames from 1
    return _run_trackeval('MotChallenge2DBox', gt_files, result_files, '{gt_folder}/{seq}/gt/gt.txt',
                          ['pedestrian'], {'SEQ_INFO': lengths, 'SKIP_SPLIT_FOL': True})


def _run_trackeval(dataset_name: str, gt_files: dict[str, Path], result_files: dict[str, Path], gt_layout: str,
                   classes: list[str], config: dict[str, Any]) -> TrackScores:
    """TrackEval's own dataset `dataset_name` on the files laid out as it reads them, in a temporary folder."""
    trackeval = require_trackeval()
    with tempfile.TemporaryDirectory(prefix='mrcnn-eval-track-') as tmp:
        root = Path(tmp)
        for seq in gt_files:
            _link(gt_files[seq], Path(gt_layout.format(gt_folder=root / 'gt', seq=seq)))
            _link(result_files[seq], root / 'trackers' / TRACKER_NAME / 'data' / f'{seq}.txt')
        dataset = getattr(trackeval.datasets, dataset_name)({
            'GT_FOLDER': str(root / 'gt'), 'TRACKERS_FOLDER': str(root / 'trackers'), 'GT_LOC_FORMAT': gt_layout,
            'OUTPUT_FOLDER': str(root / 'out'), 'TRACKERS_TO_EVAL': [TRACKER_NAME], 'CLASSES_TO_EVAL': classes,
            'PRINT_CONFIG': False, **config})
        evaluator = trackeval.Evaluator({
            'USE_PARALLEL': False, 'PRINT_RESULTS': False, 'PRINT_CONFIG': False, 'TIME_PROGRESS': False,
            'OUTPUT_SUMMARY': False, 'OUTPUT_DETAILED': False, 'PLOT_CURVES': False, 'BREAK_ON_ERROR': True,
            'RETURN_ON_ERROR': False, 'LOG_ON_ERROR': None, 'DISPLAY_LESS_PROGRESS': True})
        metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({'PRINT_CONFIG': False}),
                   trackeval.metrics.Identity({'PRINT_CONFIG': False})]   # TrackEval adds its Count
        # its progress lines, and the traceback it prints of an error it then raises (one line here)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                results_by_dataset, _ = evaluator.evaluate([dataset], metrics)
            except trackeval.utils.TrackEvalException as e:
                raise MrcnnError(f'TrackEval: {e}') from None
    by_sequence = results_by_dataset[dataset_name][TRACKER_NAME]
    scores = {seq: {cls: _row(by_sequence[seq][cls]) for cls in classes} for seq in [*gt_files, 'COMBINED_SEQ']}
    return TrackScores(list(gt_files), classes, scores)


def _row(result: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {name: float(np.mean(result[family][key])) for name, family, key in COLUMNS}


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
