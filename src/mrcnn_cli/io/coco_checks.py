"""The numbers in COCO annotation and results files checked before pycocotools sees them: one
MrcnnError naming the first offending entry and how many there are, instead of a NaN score
evaluated without a word or a KeyError from deep inside COCOeval."""
import math

from mrcnn_cli.errors import MrcnnError


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def box_problem(box):
    if not (isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box)):
        return f'bbox {_short(box)} is not four finite numbers'
    if box[2] < 0 or box[3] < 0:
        return f'bbox {box} has a negative width or height'
    return None


def segmentation_problem(seg, size=None):
    """Why a segmentation is not one pycocotools can use safely, or None.  With its image's
    (height, width), also its geometry: an RLE of that size whose runs cover the image exactly
    (pycocotools' C decoder writes past its buffer otherwise), polygon points no further than one
    image size outside it (the rasteriser walks every edge pixel by pixel)."""
    if isinstance(seg, dict):
        rle_size, counts = seg.get('size'), seg.get('counts')
        if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(is_int(v) and v >= 0 for v in rle_size)):
            return f'RLE size {_short(rle_size)} is not [height, width]'
        if isinstance(counts, str):
            runs = rle_string_counts(counts)
            if runs is None:
                return 'RLE counts are not a compressed COCO RLE string'
        elif isinstance(counts, list) and all(is_int(v) for v in counts):
            runs = counts
        else:
            return 'RLE counts are neither a string nor a list of run lengths'
        if size is not None and tuple(rle_size) != tuple(size):
            return f'RLE size {rle_size} is not its image\'s [height, width] {list(size)}'
        if min(runs, default=0) < 0 or sum(runs) != rle_size[0] * rle_size[1]:
            return f'RLE runs do not cover its {rle_size[0]}x{rle_size[1]} pixels exactly'
        return None
    if not (isinstance(seg, list) and seg and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                                                  and all(is_number(v) for v in p) for p in seg)):
        return f'segmentation {_short(seg)} is neither an RLE nor a list of polygons (x, y, ... pairs)'
    if size is not None:
        h, w = size
        for poly in seg:
            if not (all(-w <= x <= 2 * w for x in poly[0::2]) and all(-h <= y <= 2 * h for y in poly[1::2])):
                return f'a polygon reaches far outside its {w}x{h} image'
    return None


def rle_string_counts(text):
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString, vectorised), or
    None when it is not one: 6-bit digits from '0', 5 value bits each, the 0x20 bit continuing a
    number, the last digit's 0x10 bit its sign; from the third run on, each is a delta from the run
    two before."""
    import numpy as np
    digits = np.frombuffer(text.encode('latin-1', 'replace'), np.uint8).astype(np.int64) - 48
    if not len(digits):
        return []
    if digits.min() < 0 or digits.max() > 63 or digits[-1] & 0x20:
        return None
    ends = np.flatnonzero((digits & 0x20) == 0)           # the last digit of each number
    starts = np.concatenate([[0], ends[:-1] + 1])
    position = np.arange(len(digits)) - np.repeat(starts, ends - starts + 1)
    if position.max() > 11:                                # wider than 64 bits: not from pycocotools
        return None
    values = np.add.reduceat((digits & 0x1F) << (5 * position), starts)
    negative = (digits[ends] & 0x10) != 0
    values = np.where(negative, values - (1 << (5 * (ends - starts + 1))), values)
    runs = values.copy()
    for parity in (0, 1):                                  # runs[m] = values[m] + runs[m - 2], m > 2
        first = 2 if parity == 0 else 1
        runs[first::2] = np.cumsum(values[first::2])
    return runs.tolist()


def _short(value, limit=40):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def raise_first(path, what, problems):
    """One MrcnnError for a list of (entry label, reason), or nothing when it is empty."""
    if problems:
        label, reason = problems[0]
        more = f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''
        count = f'{len(problems)} {what} entries are' if len(problems) > 1 else f'1 {what} entry is'
        raise MrcnnError(f'{path}: {count} not valid; the first, {label}: {reason}{more}')


def check_annotations(data, path):
    """A COCO instances file as COCOeval needs it: images with ids and positive sizes, categories
    with ids, annotations on known images and categories with a box, an area and a segmentation."""
    problems = []
    for key in ('images', 'annotations', 'categories'):
        items = data[key]
        bad = [i for i, item in enumerate(items) if not isinstance(item, dict)]
        problems += [(f'{key}[{i}]', f'{_short(items[i])} is not an object') for i in bad]
    raise_first(path, 'annotation file', problems)
    for i, img in enumerate(data['images']):
        if not is_int(img.get('id')):
            problems.append((f'images[{i}]', f'id {_short(img.get("id"))} is not an integer'))
        for side in ('width', 'height'):
            if not (is_int(img.get(side)) and img[side] > 0):
                problems.append((f'images[{i}] (id {img.get("id")})', f'{side} {_short(img.get(side))} is not a '
                                 'positive integer' if side in img else f'no {side}'))
    for i, cat in enumerate(data['categories']):
        if not is_int(cat.get('id')):
            problems.append((f'categories[{i}]', f'id {_short(cat.get("id"))} is not an integer'))
        elif not isinstance(cat.get('name'), str):
            problems.append((f'categories[{i}] (id {cat["id"]})', f'name {_short(cat.get("name"))} is not a string'))
    raise_first(path, 'annotation file', problems)
    sizes = {img['id']: (img['height'], img['width']) for img in data['images']}
    images = set(sizes)
    cats = {cat['id'] for cat in data['categories']}
    for i, ann in enumerate(data['annotations']):
        label = f'annotations[{i}] (id {_short(ann.get("id"))})'
        reason = (None if is_int(ann.get('id')) else 'no integer id') \
            or (None if is_int(ann.get('image_id')) and ann['image_id'] in images
                else f'image_id {_short(ann.get("image_id"))} is not an image') \
            or (None if is_int(ann.get('category_id')) and ann['category_id'] in cats
                else f'category_id {_short(ann.get("category_id"))} is not a category') \
            or box_problem(ann.get('bbox')) \
            or (None if is_number(ann.get('area')) and ann['area'] >= 0 else f'area {_short(ann.get("area"))} is '
                                                                             'not a finite number >= 0') \
            or (None if ann.get('iscrowd', 0) in (0, 1) else f'iscrowd {_short(ann.get("iscrowd"))} is not 0 or 1') \
            or (segmentation_problem(ann['segmentation'], sizes.get(ann['image_id'])) if 'segmentation' in ann
                else 'no segmentation')
        if reason:
            problems.append((label, reason))
    raise_first(path, 'annotation file', problems)


def check_results(entries, path, sizes=None):
    """A COCO results list: integer ids, finite scores >= 0, boxes of four finite numbers with
    width and height >= 0, segmentations pycocotools can decode (on the images of `sizes`,
    {image id: (height, width)}, when given)."""
    sizes = sizes or {}
    problems = []
    for i, e in enumerate(entries):
        reason = (None if is_int(e.get('image_id')) else f'image_id {_short(e.get("image_id"))} is not an integer') \
            or (None if is_int(e.get('category_id')) else f'category_id {_short(e.get("category_id"))} is not an '
                                                           'integer') \
            or (None if is_number(e.get('score')) and e['score'] >= 0 else f'score {_short(e.get("score"))} is NaN, '
                                                                          'infinite, negative or not a number') \
            or (box_problem(e['bbox']) if 'bbox' in e else None) \
            or (segmentation_problem(e['segmentation'], sizes.get(e['image_id'])) if 'segmentation' in e else None) \
            or (None if 'bbox' in e or 'segmentation' in e else 'neither a bbox nor a segmentation')
        if reason:
            problems.append((f'entry {i} (image_id {_short(e.get("image_id"))})', reason))
    raise_first(path, 'results', problems)
