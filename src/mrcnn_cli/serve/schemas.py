"""The service's answers as Pydantic models: what `/docs` shows and what responses are checked
against.  A detection is the COCO result entry `mrcnn predict` writes, with its class's name."""
from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, Field

MaskFormat = Literal['rle', 'polygon', 'none']
PictureFormat = Literal['none', 'jpeg', 'png']


class RLE(BaseModel):
    size: list[int] = Field(description='[height, width]')
    counts: str = Field(description="COCO compressed RLE (pycocotools' counts string)")


class Detection(BaseModel):
    category_id: int = Field(description="COCO's category id (1..90 for COCO's classes), else 1..N")
    category_name: str
    bbox: list[float] = Field(description='[x, y, width, height] in pixels')
    score: float
    area: float = Field(description="the mask's pixel count")
    segmentation: Union[RLE, list[list[float]], None] = Field(  # noqa: UP007 - read by pydantic on 3.10 too
        default=None, description='RLE or polygons, as mask_format asks; absent with mask_format=none')


class Picture(BaseModel):
    format: Literal['jpeg', 'png']
    base64: str


class Timings(BaseModel):
    decode_ms: float
    infer_ms: float
    encode_ms: float


class ImageResult(BaseModel):
    width: int
    height: int
    detections: list[Detection]
    image: Picture | None = Field(default=None, description='the annotated picture, when image= asks for it')
    timings: Timings


class PredictResponse(ImageResult):
    model: str = Field(description='the model line: architecture, backend, device, precision, weights')


class BatchResponse(BaseModel):
    model: str
    results: list[ImageResult] = Field(description='one per image, in the order sent')


class ErrorResponse(BaseModel):
    error: str = Field(description='one line')


class Status(BaseModel):
    status: str


class ModelInfo(BaseModel):
    model: str
    weights_sha256: str
    backend: str
    precision: str
    scale: list[int]
    classes: list[str]
    describe: str
    max_batch: int
