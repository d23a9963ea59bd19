"""Open Inference Protocol v2 (KServe / Triton) bodies, as its REST spec names them.

Each model takes exactly one of two inputs per request: `input`, the FP32 tensor [N, C, H, W] the
record's preprocessing produces, or `image`, BYTES [N] whose elements are encoded image files (PNG,
JPEG, TIFF, BMP, DICOM) in base64, decoded and preprocessed by the server. It answers `probabilities`,
FP32 [N, L], in the record's label order.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medcore.record import ONNX_INPUT_NAME, ONNX_OOD_OUTPUT_NAME, ONNX_OUTPUT_NAME

IMAGE_INPUT_NAME = "image"
TENSOR_INPUT_NAME = ONNX_INPUT_NAME
OUTPUT_NAME = ONNX_OUTPUT_NAME
# For a model with an out-of-distribution output: the graph's score and the record's threshold applied to it.
OOD_SCORE_NAME = ONNX_OOD_OUTPUT_NAME
OOD_FLAG_NAME = "out_of_distribution"
# The protocol's tensor types; this service reads FP32 and BYTES inputs and names the others in its 400s.
Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
    "BF16",
]


class OipError(BaseModel):
    """The protocol's error body, `{"error": ...}`, with this service's stable `code` and the request id."""

    error: str = Field(examples=["input 'image' element 0: not an image in a readable format"])
    code: str | None = Field(default=None, examples=["not_an_image"])
    request_id: str | None = Field(default=None, examples=["3f2b8c1e9a7d4e5f8a6b0c1d2e3f4a5b"])


class ServerMetadata(BaseModel):
    name: str = Field(examples=["medimaging-service"])
    version: str = Field(examples=["0.1.0"])
    extensions: list[str] = Field(examples=[["binary_tensor_data"]])


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    version: str | None = None
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int] = Field(description="-1 marks a variable axis (the batch)")
    parameters: dict[str, Any] | None = None


class ModelMetadata(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "pneumoniamnist-convnext_atto",
                    "versions": ["1.0.0"],
                    "platform": "onnxruntime_onnx",
                    "inputs": [
                        {"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]},
                        {"name": "image", "datatype": "BYTES", "shape": [-1]},
                    ],
                    "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 1]}],
                }
            ]
        }
    )

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata] = Field(description="send exactly one of them per request")
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] | None = Field(default=None, description="labels, task, variant, provider")


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(
        default=None, description="row-major values (may be nested); BYTES: base64 strings of image files"
    )


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "study-42",
                    "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["iVBORw0KGgo..."]}],
                }
            ]
        }
    )

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[float] | list[bool]


class InferenceResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_name": "pneumoniamnist-convnext_atto",
                    "model_version": "1.0.0",
                    "id": "study-42",
                    "outputs": [{"name": "probabilities", "shape": [1, 1], "datatype": "FP32", "data": [0.93]}],
                }
            ]
        }
    )

    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="labels and batch sizes")
    outputs: list[ResponseOutput]
