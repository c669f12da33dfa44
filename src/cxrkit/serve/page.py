"""The Gradio page: upload an X-ray, see a probability per class, the decision and a Grad-CAM."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np

from cxrkit.errors import CxrkitError
from cxrkit.serve.decode import decode_image
from cxrkit.serve.model import ServedModel

logger = logging.getLogger(__name__)
IMAGE_HEIGHT = 360
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom"]
NOTICE = ("**Not for clinical use.** Research software: the output is a model's estimate, "
          "not a diagnosis, and must not guide the care of a patient.")
NO_LUNG = ("\n\n**No plausible lung found in this image: the whole image was used** "
           "(the model was trained on lung crops, so this result is less reliable).")
NO_GRADCAM_ONNX = ("Grad-CAM needs the PyTorch model, and this server runs an exported ONNX "
                   "graph: serve the run folder (`cxrkit serve RUN`) to see heatmaps.")


def build_page(served: ServedModel):
    """A gr.Blocks page for the served model (no flagging: Blocks never stores inputs)."""
    import gradio as gr

    point = served.point
    binary = point.positive_class is not None
    explainer = copy.deepcopy(served.predictor) if served.can_explain else None

    def analyse(file_path: str | None, threshold: float):
        if not file_path:
            return None, "", None, None, "", None, gr.update(value="", visible=False)
        try:
            gray = served.decoding(lambda: decode_image(
                Path(file_path).read_bytes(), Path(file_path).name, served.max_pixels))
            prediction = served.predict([gray])[0]
        except CxrkitError as error:
            raise gr.Error(str(error)) from error
        probabilities = np.array([prediction["probabilities"][name] for name in served.classes])
        model_input = served.predictor.prepare(gray)
        heatmap, note = _gradcam(explainer, gray)
        ood = _ood_text(prediction["out_of_distribution"])
        return (dict(zip(served.classes, map(float, probabilities), strict=True)),
                _decision_text(served, probabilities, threshold if binary else None)
                + (NO_LUNG if prediction["lung_found"] is False else ""),
                model_input, heatmap, note, probabilities, gr.update(value=ood, visible=bool(ood)))

    def redecide(probabilities: np.ndarray | None, threshold: float) -> str:
        return "" if probabilities is None else _decision_text(served, probabilities, threshold)

    with gr.Blocks(title=f"cxrkit · {served.model_id}", analytics_enabled=False) as page:
        gr.Markdown(f"# Chest X-ray classifier\nModel `{served.model_id}` "
                    f"({served.predictor.info.get('model_name', 'model')}, {served.runtime}); "
                    f"classes: {', '.join(served.classes)}.")
        gr.Markdown(NOTICE, elem_id="clinical-notice")
        probabilities_state = gr.State(None)
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Chest X-ray (PNG, JPEG or DICOM)", file_types=UPLOAD_TYPES,
                                 type="filepath", elem_id="upload")
                if served.examples:
                    gr.Examples([[str(path)] for path in served.examples], inputs=[upload],
                                label="Example images (test split)")
                else:
                    gr.Markdown("No example images: pass `--examples DIR` to show some.")
            with gr.Column():
                label = gr.Label(label="Probability per class", show_heading=False,
                                 elem_id="probabilities")
                frozen = point.threshold if point.threshold is not None else 0.5
                threshold = gr.Slider(0.0, 1.0, value=frozen, step=0.001, visible=binary,
                                      label=f"Threshold on P({point.positive_class})",
                                      elem_id="threshold")
                ood_notice = gr.Markdown(visible=False, elem_id="ood-notice")
                decision = gr.Markdown(elem_id="decision")
                gr.Markdown(f"Decision rule: {point.describe()}.")
        with gr.Row():
            model_input = gr.Image(label="Model input", image_mode="L", elem_id="model-input",
                                   interactive=False, height=IMAGE_HEIGHT)
            heatmap = gr.Image(label="Grad-CAM overlay", elem_id="gradcam", interactive=False,
                               height=IMAGE_HEIGHT, visible=served.can_explain)
        note = gr.Markdown("" if served.can_explain else NO_GRADCAM_ONNX, elem_id="explain-note")
        upload.change(analyse, [upload, threshold],
                      [label, decision, model_input, heatmap, note, probabilities_state,
                       ood_notice])
        threshold.change(redecide, [probabilities_state, threshold], [decision])
    return page


def _ood_text(check: dict | None) -> str:
    """A loud notice when the image is out of distribution; nothing otherwise."""
    if check is None or not check["flagged"]:
        return ""
    return (f"## ⚠ Out of distribution\n**This image is unlike the images the model was trained "
            f"on** (score {check['score']:.2f} > threshold {check['threshold']:.2f}): another kind "
            "of image, view, population or site. Do not trust the output below.")


def _gradcam(explainer, gray: np.ndarray):
    """The Grad-CAM overlay and a note; for ONNX models only the note saying why there is none."""
    if explainer is None:
        return None, NO_GRADCAM_ONNX
    try:
        from cxrkit.explain import explain, overlay

        return overlay(explain(explainer, gray, method="gradcam")), ""
    except (ImportError, CxrkitError) as error:
        return None, f"Grad-CAM unavailable: {error}"
    except Exception as error:  # the heatmap is secondary: keep showing the prediction
        logger.exception("Grad-CAM failed")
        return None, f"Grad-CAM failed ({type(error).__name__}: {error}); see the server log"


def _decision_text(served: ServedModel, probabilities: np.ndarray, threshold: float | None) -> str:
    """The decision at the frozen point, or at the slider's threshold when it was moved."""
    frozen = served.point
    if frozen.positive_class is None or threshold is None:
        return f"**Decision: {frozen.labels(probabilities)[0]}** (most probable class)"
    moved = frozen.threshold is None or abs(threshold - frozen.threshold) > 1e-9
    point = frozen.with_threshold(threshold, "this page's slider") if moved else frozen
    positive = float(probabilities[frozen.positive_index])
    sign = ">=" if positive >= threshold else "<"
    text = (f"**Decision: {point.labels(probabilities)[0]}**: P({frozen.positive_class}) = "
            f"{positive:.3f} {sign} threshold {threshold:.3f}")
    if frozen.threshold is None:
        return text + " (no frozen operating point; 0.5 is the most-probable-class rule)"
    if moved:
        return text + f" (adjusted here; the frozen operating point is {frozen.threshold:.3f})"
    return text + f" (frozen operating point '{frozen.name}', chosen on {frozen.source})"
