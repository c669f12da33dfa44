"""The REST API: /api/v1/predict, /api/v1/health and /api/v1/model, with JSON errors.

Every error a client can cause is a 4xx JSON body `{"detail": "<one line>"}`: not an image,
a corrupt image, an upload over the size limit, a missing or wrong field, a bad token.
"""

import hashlib
import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from cxrkit.errors import CxrkitError
from cxrkit.serve.decode import UploadTooLarge, decode_image
from cxrkit.serve.model import ServedModel, finite_json

PREFIX = "/api/v1"
OPEN_PATHS = (f"{PREFIX}/health",)
FIELD = "images"
MAX_IMAGES_PER_REQUEST = 32
DECODE_CHUNK = 2


class ErrorBody(BaseModel):
    detail: str


class Health(BaseModel):
    status: str
    model_id: str


class OutOfDistribution(BaseModel):
    flagged: bool
    score: float | None
    threshold: float
    message: str


class ImagePrediction(BaseModel):
    filename: str
    probabilities: dict[str, float | None]
    decision: str
    threshold: float | None
    positive_class: str | None
    operating_point: str = Field(description="the operating point that decided (argmax, youden, "
                                 "sensitivity>=0.90, site:NAME, ...); see /api/v1/model for where it "
                                 "was chosen")
    out_of_distribution: OutOfDistribution | None = Field(
        description="is the image unlike the training images (Mahalanobis distance in the "
                    "model's feature space above the threshold chosen on validation)? null when "
                    "the model has no reference")
    lung_found: bool | None = Field(None, description="False: no plausible lung found, the whole image "
                                    "was used; null: the model does not use lung_crop")


class PredictResponse(BaseModel):
    model_id: str
    decision_rule: str
    predictions: list[ImagePrediction]


class FhirBundle(BaseModel):
    """`?format=fhir`: a FHIR R4 collection Bundle, one Observation per image."""

    model_config = ConfigDict(extra="allow")
    resourceType: Literal["Bundle"]
    type: str
    entry: list[dict]


class ModelCard(BaseModel):
    model_id: str
    runtime: str
    model_name: str | None
    classes: list[str]
    positive_class: str | None
    single_logit: bool
    input: dict
    decision: dict
    test_metrics: dict | None
    out_of_distribution: dict | None


ERRORS = {status: {"model": ErrorBody, "description": text} for status, text in (
    (400, "not an image, a corrupt image or a malformed body"),
    (401, "missing or wrong bearer token"),
    (413, "upload larger than the server's limit, or an image too many pixels a side"),
    (422, "missing or wrong form field, or more images than allowed"),
)}


def token_matches(authorization: str | None, token: str) -> bool:
    """True when an `Authorization: Bearer <token>` header value carries `token`."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


def build_router(served: ServedModel, token: str | None,
                 max_images: int = MAX_IMAGES_PER_REQUEST) -> APIRouter:
    """The API routes for one served model; `token` turns on bearer-token auth.

    Uploads are decoded a few at a time on the served model's decoder threads, so neither a
    request of many images nor many requests at once hold many full-size images in memory.
    """
    bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>` when "
                        "the server was started with --token or CXRKIT_TOKEN")

    def authorise(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                  ) -> None:
        given = credentials.credentials if credentials else ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token; send 'Authorization: Bearer "
                                     "<token>'", headers={"WWW-Authenticate": "Bearer"})

    router = APIRouter(prefix=PREFIX, tags=["cxrkit"])
    errors = ERRORS if token is not None else {k: v for k, v in ERRORS.items() if k != 401}
    guarded = {"dependencies": [Depends(authorise)] if token is not None else [],
               "responses": errors}

    @router.get("/health", response_model=Health, responses={})
    def health() -> dict:
        """Liveness: the server is up and has a model loaded."""
        return {"status": "ok", "model_id": served.model_id}

    @router.get("/model", response_model=ModelCard, **guarded)
    def model() -> dict:
        """Classes, the input contract, the decision rule and the run's test metrics."""
        return served.card()

    @router.post("/predict", response_model=PredictResponse | FhirBundle, **guarded)
    def predict(images: Annotated[list[UploadFile], File(
            min_length=1, max_length=max_images,
            description=f"1 to {max_images} PNG, JPEG or DICOM files in the multipart "
                        f"field '{FIELD}'")],
                format: Annotated[Literal["json", "fhir"], Query(
                    description="json (default) or fhir: a FHIR R4 Bundle of one Observation "
                                "per image")] = "json"):
        """Class probabilities and the decision at the run's frozen operating point."""
        names = [upload.filename or "upload" for upload in images]
        predictions, hashes = [], []
        for start in range(0, len(images), DECODE_CHUNK):
            chunk = images[start:start + DECODE_CHUNK]
            contents = [upload.file.read() for upload in chunk]
            hashes += [hashlib.sha256(content).hexdigest() for content in contents]

            def decode_and_predict(chunk=chunk, contents=contents):
                return served.predict([_decode(content, upload.filename or "upload", served.max_pixels)
                                       for upload, content in zip(chunk, contents, strict=True)])

            predictions += served.decoding(decode_and_predict)
        served.log_requests(predictions, hashes)
        if format == "fhir":
            return JSONResponse(fhir_response(served, names, hashes, predictions))
        return finite_json({
            "model_id": served.model_id,
            "decision_rule": served.point.describe(),
            "predictions": [{"filename": name, **prediction}
                            for name, prediction in zip(names, predictions, strict=True)],
        })

    return router


def _decode(content: bytes, name: str, max_pixels: int):
    try:
        return decode_image(content, name, max_pixels)
    except UploadTooLarge as error:
        raise HTTPException(413, str(error)) from error
    except CxrkitError as error:
        raise HTTPException(400, str(error)) from error
def fhir_response(served: ServedModel, names: list[str], hashes: list[str],
                  predictions: list[dict]) -> dict:
    """A FHIR Bundle with one Observation per image (needs the cxrkit[fhir] extra)."""
    from cxrkit.deployment.standards import fhir_bundle, fhir_observation

    try:
        observations = [fhir_observation(p, served.model_id, name, digest)
                        for name, digest, p in zip(names, hashes, predictions, strict=True)]
    except CxrkitError as error:
        raise HTTPException(400, f"format=fhir is not available on this server: {error}") from error
    return fhir_bundle(observations)
