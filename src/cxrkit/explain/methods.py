"""Attribution maps for one image: Grad-CAM(++), LIME, SHAP, occlusion, integrated gradients.

Every method runs on the image exactly as the model sees it (`predictor.prepare`) and
returns an `Explanation` whose heatmap is the evidence *for* the target class, scaled to
[0, 1]. The attribution maths comes from captum (and pytorch-grad-cam for Grad-CAM++).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from cxrkit.data.normalise import model_input as normalised_input
from cxrkit.errors import CxrkitError

METHODS = ("gradcam", "gradcam++", "lime", "shap", "occlusion", "integrated-gradients")
CAM_METHODS = ("gradcam", "gradcam++")


@dataclass
class Explanation:
    """One attribution map and what it explains."""

    heatmap: np.ndarray  # float32 HxW in [0, 1]: evidence for target_class
    prepared: np.ndarray  # uint8 HxW: the image the model saw
    target_class: str
    target_index: int
    probability: float  # the model's probability of target_class
    method: str
    attribution: np.ndarray  # float32 HxW: the method's raw signed map before scaling
    layer: str | None = None  # the layer Grad-CAM looked at


class ClassScores(nn.Module):
    """A model's per-class logits (or probabilities); a single-logit head becomes two columns.

    For one logit z the columns are [-z/2, z/2], whose softmax is [1 - sigmoid(z), sigmoid(z)],
    so class 0 ("normal") gets its own gradient instead of none.
    """

    def __init__(self, model: nn.Module, single_logit: bool, probabilities: bool = False):
        super().__init__()
        self.model = model
        self.single_logit = single_logit
        self.probabilities = probabilities

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x).float()
        if self.single_logit:
            half = out.reshape(-1, 1) / 2
            out = torch.cat([-half, half], dim=1)
        return torch.softmax(out, dim=1) if self.probabilities else out


def torch_model(predictor) -> nn.Module:
    """The predictor's PyTorch model, or a clear error for an ONNX predictor."""
    model = getattr(predictor, "model", None)
    if not isinstance(model, nn.Module):
        raise CxrkitError("explanations need the PyTorch run folder (model.ckpt), not an ONNX file")
    return model.eval()


def model_input(predictor, prepared: np.ndarray) -> torch.Tensor:
    """Normalised (N, C, H, W) model input for prepared uint8 image(s) (HxW or NxHxW)."""
    return normalised_input(prepared, predictor.preprocessing)


def class_probabilities(predictor, prepared: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(N, n_classes) probabilities for prepared uint8 images (NxHxW)."""
    scores = ClassScores(torch_model(predictor), predictor.single_logit, probabilities=True)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(prepared), batch_size):
            outputs.append(scores(model_input(predictor, prepared[start : start + batch_size])).numpy())
    return np.concatenate(outputs).astype(np.float32)


def resolve_target(predictor, target: str | int | None, probabilities: np.ndarray) -> int:
    """Class index to explain: a name, an index, or None for the class the predictor decides
    (at the run's frozen operating point; the most probable class before evaluation)."""
    classes = predictor.classes
    if target is None:
        return int(predictor.decide(probabilities)[0])
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if not 0 <= target < len(classes):
            raise CxrkitError(f"class index {target} is out of range; the model has {len(classes)} classes")
        return int(target)
    names = {name.lower(): index for index, name in enumerate(classes)}
    if str(target).lower() not in names:
        raise CxrkitError(f"target={target!r}: not a class of this model; choose one of {', '.join(classes)}")
    return names[str(target).lower()]


def resolve_layer(predictor, layer: str | None) -> tuple[str, nn.Module]:
    """The layer Grad-CAM looks at: `layer`, else the registry's CAM layer, else the last Conv2d."""
    from cxrkit.models import MODELS, cam_layer_name

    model = torch_model(predictor)
    if layer is None:
        name = predictor.info.get("model_name")
        if name in MODELS:
            layer = cam_layer_name(name)
        else:
            convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
            if not convs:
                raise CxrkitError("the model has no Conv2d layer for Grad-CAM; pass layer=NAME")
            layer = convs[-1]
    try:
        return layer, model.get_submodule(layer)
    except AttributeError as error:
        tops = ", ".join(n for n, _ in model.named_children())
        raise CxrkitError(f"layer={layer!r}: the model has no such layer; top-level layers are {tops}") from error


def training_background(predictor, n: int = 16, seed: int = 0) -> np.ndarray:
    """Prepared uint8 images (NxHxW) drawn from the run's training split, for SHAP's background."""
    run = getattr(predictor, "run", None)
    if run is None or not run.file("split.csv").is_file():
        where = run.path if run is not None else "this predictor"
        raise CxrkitError(
            f"shap needs background images from the run's training split, but {where} has no "
            "split.csv; pass background=[images]"
        )
    train = run.split_rows("train")
    if train.empty:
        raise CxrkitError(f"{run.path}/split.csv: no rows with split=train to draw a SHAP background from")
    chosen = train.sample(n=min(n, len(train)), random_state=seed)["path"]
    return np.stack([predictor.prepare(path) for path in chosen])


def _black(predictor, like: torch.Tensor) -> torch.Tensor:
    """Model input of an all-black image, the reference for occlusion, LIME and IG."""
    size = like.shape[-1]
    return model_input(predictor, np.zeros((size, size), dtype=np.uint8)).expand_as(like)


def _gradcam(context: dict) -> np.ndarray:
    from captum.attr import LayerAttribution, LayerGradCam

    x, size = context["x"], context["x"].shape[-2:]
    cam = LayerGradCam(context["logits"], context["layer"]).attribute(
        x, target=context["target"], relu_attributions=True
    )
    return LayerAttribution.interpolate(cam.detach(), tuple(size), "bilinear")[0, 0].numpy()


def _gradcam_plus_plus(context: dict) -> np.ndarray:
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = context["logits"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    cam = GradCAMPlusPlus(model, [context["layer"]])
    try:
        # gradients flow from the input instead: backward skips weight gradients (twice as fast)
        model.requires_grad_(False)
        x = context["x"].clone().requires_grad_(True)
        return cam(x, [ClassifierOutputTarget(context["target"])])[0]
    finally:
        cam.activations_and_grads.release()
        for parameter in trainable:
            parameter.requires_grad_(True)


def _lime(
    context: dict,
    n_samples: int = 300,
    n_segments: int = 60,
    compactness: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime
    from skimage.segmentation import slic

    x = context["x"]
    segments = slic(
        context["prepared"],
        n_segments=n_segments,
        compactness=compactness,
        channel_axis=None,
        start_label=0,
    )
    mask = torch.from_numpy(segments).long()[None, None].expand_as(x)
    lime = Lime(context["probabilities"], interpretable_model=SkLearnRidge(alpha=1.0))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        attribution = lime.attribute(
            x,
            baselines=_black(context["predictor"], x),
            target=context["target"],
            feature_mask=mask,
            n_samples=n_samples,
            perturbations_per_eval=16,
        )
    return attribution[0, 0].detach().numpy()


def _shap(
    context: dict,
    n_samples: int = 32,
    n_background: int = 16,
    background=None,
    stdevs: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    from captum.attr import GradientShap

    predictor = context["predictor"]
    if background is None:
        prepared = training_background(predictor, n_background, seed)
    else:
        prepared = np.stack([predictor.prepare(image) for image in background])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        attribution = GradientShap(context["logits"]).attribute(
            context["x"],
            baselines=model_input(predictor, prepared),
            n_samples=n_samples,
            stdevs=stdevs,
            target=context["target"],
        )
    return attribution[0].sum(dim=0).detach().numpy()


def _occlusion(context: dict, window: int | None = None, stride: int | None = None) -> np.ndarray:
    from captum.attr import Occlusion

    x = context["x"]
    window = window or max(x.shape[-1] // 8, 1)
    stride = stride or max(window // 2, 1)
    attribution = Occlusion(context["probabilities"]).attribute(
        x,
        sliding_window_shapes=(x.shape[1], window, window),
        strides=(x.shape[1], stride, stride),
        baselines=_black(context["predictor"], x),
        target=context["target"],
        perturbations_per_eval=16,
    )
    return attribution[0].mean(dim=0).detach().numpy()


def _integrated_gradients(context: dict, n_steps: int = 32) -> np.ndarray:
    from captum.attr import IntegratedGradients

    x = context["x"]
    attribution = IntegratedGradients(context["logits"]).attribute(
        x,
        baselines=_black(context["predictor"], x),
        target=context["target"],
        n_steps=n_steps,
        internal_batch_size=16,
    )
    return attribution[0].sum(dim=0).detach().numpy()


ATTRIBUTORS = {
    "gradcam": _gradcam,
    "gradcam++": _gradcam_plus_plus,
    "lime": _lime,
    "shap": _shap,
    "occlusion": _occlusion,
    "integrated-gradients": _integrated_gradients,
}
PIXEL_METHODS = ("shap", "integrated-gradients")


def method_options(method: str) -> list[str]:
    """The keyword options a method accepts (besides smooth)."""
    return [name for name in inspect.signature(ATTRIBUTORS[method]).parameters if name != "context"]


def to_heatmap(attribution: np.ndarray, smooth: float = 0.0) -> np.ndarray:
    """Positive evidence scaled to [0, 1] by its 99th percentile (robust to a few hot pixels)."""
    positive = np.maximum(np.nan_to_num(attribution.astype(np.float32)), 0)
    if smooth > 0:
        positive = cv2.GaussianBlur(positive, (0, 0), smooth)
    scale = float(np.percentile(positive, 99))
    if scale <= 0:
        scale = float(positive.max())
    if scale <= 0:
        return np.zeros_like(positive)
    return np.clip(positive / scale, 0, 1).astype(np.float32)


def explain(
    predictor,
    image,
    method: str = "gradcam",
    target: str | int | None = None,
    layer: str | None = None,
    smooth: float | None = None,
    **options,
) -> Explanation:
    """Explain one image (path, PIL image or array) with one method.

    `target` is a class name or index (default: the decided class, see `Predictor.predict`); `layer` overrides
    Grad-CAM's layer; `smooth` is a Gaussian sigma in pixels applied before scaling (default:
    image_size/112 for the pixel-level methods shap and integrated-gradients, else none);
    other options go to the method (e.g. lime: n_samples, n_segments; shap: n_samples,
    background; occlusion: window, stride; integrated-gradients: n_steps).
    """
    method = method.lower()
    if method not in ATTRIBUTORS:
        raise CxrkitError(f"method={method!r}: choose one of {', '.join(METHODS)}")
    unknown = sorted(set(options) - set(method_options(method)))
    if unknown:
        raise CxrkitError(
            f"{method} has no option(s) {', '.join(unknown)}; it takes {', '.join(method_options(method)) or 'none'}"
        )
    if layer is not None and method not in CAM_METHODS:
        raise CxrkitError(f"`layer` applies to {' and '.join(CAM_METHODS)} only, not {method}")
    model = torch_model(predictor)
    prepared = predictor.prepare(image)
    x = model_input(predictor, prepared)
    probabilities = class_probabilities(predictor, prepared[None])[0]
    index = resolve_target(predictor, target, probabilities)
    layer_name, layer_module = resolve_layer(predictor, layer) if method in CAM_METHODS else (None, None)
    context = {
        "predictor": predictor,
        "prepared": prepared,
        "x": x,
        "target": index,
        "layer": layer_module,
        "logits": ClassScores(model, predictor.single_logit),
        "probabilities": ClassScores(model, predictor.single_logit, probabilities=True),
    }
    with torch.enable_grad():
        attribution = np.asarray(ATTRIBUTORS[method](context, **options), dtype=np.float32)
    if smooth is None:
        smooth = prepared.shape[0] / 112 if method in PIXEL_METHODS else 0.0
    return Explanation(
        heatmap=to_heatmap(attribution, smooth),
        prepared=prepared,
        target_class=predictor.classes[index],
        target_index=index,
        probability=float(probabilities[index]),
        method=method,
        attribution=attribution,
        layer=layer_name,
    )
