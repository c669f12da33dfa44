"""Standard outputs: a FHIR R4 Observation per image, and a DICOM Structured Report (TID 1500)
per DICOM input, each carrying the model id, the operating point, the score and the decision.

Optional extras: `pip install 'cxrkit[fhir]'` (fhir.resources, whose R4B Observation is R4's)
and `pip install 'cxrkit[dicom]'` (pydicom, highdicom). Codes that no public terminology has
(model output, decision, threshold) use the private coding scheme `99CXRKIT` in the SR and
the system `CODE_SYSTEM` in FHIR; the procedure is SNOMED CT 399208008 "Plain chest X-ray".
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from cxrkit.errors import CxrkitError
from cxrkit.version import __version__

CODE_SYSTEM = "urn:cxrkit:codes"
IMAGE_HASH_SYSTEM = "urn:cxrkit:image-sha256"
PRIVATE_SCHEME = "99CXRKIT"
TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                  "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
NOTE = "Research use only; not for clinical use. Produced by cxrkit, not verified by a clinician."


def require_extras(fhir: bool, sr: bool) -> None:
    """Fail before any work when an asked-for output's library is not installed."""
    import importlib.util

    for wanted, module, extra in ((fhir, "fhir.resources", "fhir"), (sr, "highdicom", "dicom")):
        if wanted and importlib.util.find_spec(module.split(".")[0]) is None:
            raise CxrkitError(f"this output needs {module}: pip install 'cxrkit[{extra}]'")


def fhir_observation(prediction: dict, model_id: str, image: str, image_sha256: str,
                     issued: datetime | None = None) -> dict:
    """One Observation (as JSON) for a prediction: probabilities, decision, threshold,
    positive_class and operating_point keys; validated by fhir.resources."""
    issued = (issued or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    positive = prediction.get("positive_class")
    score = prediction["probabilities"][positive] if positive else max(
        prediction["probabilities"].values())
    components = [
        _component("model-id", "Model id (run name @ sha256 of the weights)",
                   valueString=model_id),
        _component("operating-point", "Operating point",
                   valueString=prediction.get("operating_point") or "argmax"),
        _component("score", f"P({positive})" if positive else "top-class probability",
                   valueQuantity=_quantity(score)),
    ]
    if prediction.get("threshold") is not None:
        components.append(_component("threshold", "Decision threshold on the score",
                                     valueQuantity=_quantity(prediction["threshold"])))
    components += [_component(f"probability-{name}", f"P({name})", valueQuantity=_quantity(value))
                   for name, value in prediction["probabilities"].items()]
    resource = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": [{"system": CODE_SYSTEM, "code": "cxr-classification",
                             "display": "Chest X-ray classifier decision"}],
                 "text": "Chest X-ray classifier decision (cxrkit)"},
        "identifier": [{"system": IMAGE_HASH_SYSTEM, "value": image_sha256}],
        "issued": issued,
        "device": {"display": f"cxrkit {__version__} model {model_id}"},
        "method": {"text": f"operating point {prediction.get('operating_point') or 'argmax'}"},
        "valueCodeableConcept": {"coding": [{"system": CODE_SYSTEM,
                                             "code": f"class-{prediction['decision']}",
                                             "display": prediction["decision"]}],
                                 "text": prediction["decision"]},
        "note": [{"text": f"{NOTE} Image: {Path(image).name}"}],
        "component": components,
    }
    return validated(resource)


def _component(code: str, text: str, **value) -> dict:
    return {"code": {"coding": [{"system": CODE_SYSTEM, "code": code, "display": text}],
                     "text": text}, **value}


def _quantity(value: float) -> dict:
    return {"value": round(float(value), 6), "unit": "1", "system": "http://unitsofmeasure.org",
            "code": "1"}


def validated(resource: dict) -> dict:
    """The resource after a round trip through fhir.resources (raises if it is not valid)."""
    try:
        from fhir.resources.R4B import get_fhir_model_class
    except ImportError as error:
        raise CxrkitError("FHIR output needs fhir.resources: pip install 'cxrkit[fhir]'") from error
    model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return model.model_dump(mode="json", exclude_none=True)


def fhir_bundle(observations: list[dict]) -> dict:
    """A FHIR `collection` Bundle of the observations (validated)."""
    return validated({"resourceType": "Bundle", "type": "collection",
                      "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "entry": [{"resource": observation} for observation in observations]})


def dicom_sr(source: str | Path, prediction: dict, model_id: str, out_path: str | Path) -> Path:
    """Write a Comprehensive 3D SR (TID 1500 measurement report) for one DICOM image: the
    score as a measurement and the decision as a qualitative evaluation, by the model (device
    observer, algorithm id and parameters: operating point and threshold)."""
    try:
        import highdicom as hd
        import pydicom
    except ImportError as error:
        raise CxrkitError("DICOM SR output needs highdicom: pip install 'cxrkit[dicom]'") from error

    try:
        image = pydicom.dcmread(source, stop_before_pixels=True)
    except Exception as error:  # pydicom raises several types for a broken file
        raise CxrkitError(f"{source}: not a readable DICOM file ({error})") from error
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                           "SOPClassUID") if k not in image]
    if missing:
        raise CxrkitError(f"{source}: lacks {', '.join(missing)}; a DICOM SR must reference the "
                          "image's study, series and instance")

    for keyword in TYPE2_KEYWORDS:  # may be empty, but an SR must carry them
        if keyword not in image:
            setattr(image, keyword, "")

    def code(value: str, meaning: str) -> hd.sr.CodedConcept:
        return hd.sr.CodedConcept(value=value[:16], scheme_designator=PRIVATE_SCHEME,
                                  meaning=meaning[:64])

    positive = prediction.get("positive_class")
    score = prediction["probabilities"][positive] if positive else max(
        prediction["probabilities"].values())
    parameters = [f"operating_point={prediction.get('operating_point') or 'argmax'}"]
    if prediction.get("threshold") is not None:
        parameters.append(f"threshold={prediction['threshold']:.6g}")
    algorithm = hd.sr.AlgorithmIdentification(name=model_id[:64], version=__version__,
                                              parameters=parameters)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="cxrkit result"),
        algorithm_id=algorithm,
        measurements=[hd.sr.Measurement(
            name=code("score", f"P({positive})" if positive else "top-class probability"),
            value=float(score), unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
            algorithm_id=algorithm)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            name=code("decision", "Classifier decision"),
            value=code(prediction["decision"], prediction["decision"]))],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(image)])
    observer = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=f"cxrkit {model_id}"[:64], manufacturer_name="cxrkit"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("399208008", "SCT", "Plain chest X-ray"),
        imaging_measurements=[group])
    try:
        document = hd.sr.Comprehensive3DSR(
            evidence=[image], content=report[0], series_instance_uid=hd.UID(), series_number=900,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="cxrkit",
            is_complete=True, is_final=False, is_verified=False)
    except (AttributeError, ValueError, TypeError) as error:
        raise CxrkitError(f"{source}: cannot make a DICOM SR for it ({error})") from error
    out_path = Path(out_path)
    document.save_as(out_path, enforce_file_format=True)
    return out_path


def decisions(predictor, probabilities, point) -> tuple[str, list[dict]]:
    """(model id, one prediction dict per row) decided at `point` (an OperatingPoint), as the
    server decides."""
    return predictor.model_id or "model", point.predictions(probabilities)


def write_fhir(out: Path, paths: list[str], model_id: str, predictions: list[dict]) -> Path:
    """Observations into `out`: NDJSON (one per line) for .ndjson, else a collection Bundle."""
    import json

    from cxrkit.run import file_sha256

    observations = [fhir_observation(prediction, model_id, path, file_sha256(Path(path)))
                    for path, prediction in zip(paths, predictions, strict=True)]
    if out.suffix.lower() == ".ndjson":
        out.write_text("".join(json.dumps(o) + "\n" for o in observations))
    else:
        out.write_text(json.dumps(fhir_bundle(observations), indent=2) + "\n")
    return out


def write_srs(folder: Path, paths: list[str], model_id: str, predictions: list[dict],
              overwrite: bool) -> list[Path]:
    """One `<name>.sr.dcm` per DICOM input in `folder` (other inputs have no study to join)."""
    from cxrkit.data.io import DICOM_SUFFIXES

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path, prediction in zip(paths, predictions, strict=True):
        if Path(path).suffix.lower() not in DICOM_SUFFIXES:
            continue
        target = folder / f"{Path(path).stem}.sr.dcm"
        if target.exists() and not overwrite:
            raise CxrkitError(f"`sr_dir`: {target} already exists; pass overwrite=True to replace it")
        written.append(dicom_sr(path, prediction, model_id, target))
    return written
