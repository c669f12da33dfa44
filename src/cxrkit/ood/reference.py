"""Out-of-distribution warning: how far an image lies from the training images in feature space.

Method: Mahalanobis distance on pooled features with class-conditional means and one shared
covariance (Lee et al., NeurIPS 2018, "A simple unified framework for detecting
out-of-distribution samples and adversarial attacks"), taken at several depths of the network:

- layers: the model input itself as a 4x4 thumbnail (coarse layout and intensity: "input
  statistics"), the last activation at each spatial scale of the network averaged over the
  four quadrants of the image (2x2 grid), and the input of the final linear layer (the
  penultimate features). Found generically by tracing the model with torch.fx, so every
  registry model works. The quadrant grid keeps the layout that global average pooling throws
  away: a chest rotated 90 degrees or inverted has much the same features, in other places;
  on the real runs it raised the share of rotated X-rays flagged from about 40% to over 80%.
  The thumbnail and early layers see intensity and texture (photos, an adult's chest for a
  children's model), late layers anatomy;
- reference: per layer, the class means of the training images' features and the inverse of
  their shared (class-centred) covariance, shrunk with Ledoit-Wolf because there are often
  more channels than is safe to estimate from a few thousand images;
- score: per layer the distance to the nearest class mean, divided by that layer's median on
  the validation split (so layers are comparable), averaged over layers. (The maximum over
  layers flagged fewer outliers: with eight layers, the 99th percentile of the maximum on
  validation is set by whichever layer is noisiest);
- flag: score above the `percentile` (99th) of the validation split's scores, so about 1% of
  images like the training data are flagged, and anything beyond is a warning.

Lee et al. combine layers with a regression fitted on known OOD examples; we have none at
training time, so the combination is the validation-normalised mean instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from cxrkit.errors import CxrkitError
from cxrkit.ood.flags import OOD_FORMAT

METHOD = ("Mahalanobis distance (Lee et al. 2018) on a 4x4 thumbnail of the input, the features "
          "of every spatial stage averaged per image quadrant, and the penultimate features; "
          "class means, shared Ledoit-Wolf covariance; score = mean over layers of distance / "
          "validation median")
DEFAULT_PERCENTILE = 99.0
MAX_TRAIN_IMAGES = 5000
INPUT_GRID = 4
STAGE_GRID = 2


def trace_features(model: nn.Module, example: torch.Tensor,
                   layers: Sequence[str] | None = None) -> tuple[nn.Module, list[str]]:
    """The model traced by torch.fx so that it returns (logits, [pooled features per layer]).

    `layers` are fx node names (from a previous call); None picks them: the image itself
    (averaged on an INPUT_GRID x INPUT_GRID grid), the last 4-D output at each spatial size
    above 1x1 (on a STAGE_GRID grid), and the input of the last nn.Linear.
    """
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        graph_module = symbolic_trace(model)
    except Exception as error:
        raise CxrkitError(f"cannot trace {type(model).__name__} for the out-of-distribution "
                          f"reference ({type(error).__name__}: {error})") from error
    nodes = {node.name: node for node in graph_module.graph.nodes}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ShapeProp(graph_module).propagate(example)
    model.train(was_training)
    if layers is None:
        layers = _pick_layers(graph_module)
    missing = [name for name in layers if name not in nodes]
    if missing:
        raise CxrkitError(f"the out-of-distribution reference names layer(s) {missing} that "
                          "this model does not have; recompute it with `cxrkit ood RUN --overwrite`")
    graph = graph_module.graph
    output = next(node for node in graph.nodes if node.op == "output")
    with graph.inserting_before(output):
        pooled = []
        for index, name in enumerate(layers):
            node = nodes[name]
            if _rank(node) == 4:
                height, width = node.meta["tensor_meta"].shape[2:]
                grid = INPUT_GRID if node.op == "placeholder" else STAGE_GRID
                graph_module.add_submodule(f"ood_grid_{index}", GridMean(grid, height, width))
                node = graph.call_module(f"ood_grid_{index}", (node,))
            pooled.append(graph.call_method("flatten", (node, 1)))
    output.args = ((output.args[0], pooled),)
    graph_module.recompile()
    return graph_module, list(layers)


class GridMean(nn.Module):
    """Channel means over a grid x grid partition of the feature map: adaptive average pooling's
    bins. Eager runs use adaptive_avg_pool2d (one pass, fast on channels_last maps); an export
    (torch.export / ONNX) traces the same bins as slices, which export for any map size."""

    def __init__(self, grid: int, height: int, width: int):
        super().__init__()
        self.grid = grid = min(grid, height, width)
        self.rows = [(i * height // grid, -(-(i + 1) * height // grid)) for i in range(grid)]
        self.columns = [(i * width // grid, -(-(i + 1) * width // grid)) for i in range(grid)]

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            return nn.functional.adaptive_avg_pool2d(feature, self.grid).flatten(1)
        return self.by_slices(feature)

    def by_slices(self, feature: torch.Tensor) -> torch.Tensor:
        """The same means, one slice per cell (the form an export traces)."""
        cells = [feature[:, :, top:bottom, left:right].mean(dim=(2, 3))
                 for top, bottom in self.rows for left, right in self.columns]
        return torch.stack(cells, dim=2).flatten(1)


def _rank(node) -> int | None:
    meta = node.meta.get("tensor_meta")
    return len(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _pick_layers(graph_module) -> list[str]:
    last_at_size: dict[tuple[int, int], tuple[int, str]] = {}
    penultimate, image = None, None
    for index, node in enumerate(graph_module.graph.nodes):
        meta = node.meta.get("tensor_meta")
        if node.op == "placeholder":
            image = node.name
        if node.op == "placeholder" or meta is None or not hasattr(meta, "shape"):
            continue
        if len(meta.shape) == 4 and min(meta.shape[2:]) > 1:
            last_at_size[tuple(meta.shape[2:])] = (index, node.name)
        if node.op == "call_module" and isinstance(graph_module.get_submodule(node.target), nn.Linear):
            source = node.args[0]
            if _rank(source) == 2:
                penultimate = source.name
    layers = [name for _, name in sorted(last_at_size.values())]
    if penultimate is not None and penultimate not in layers:
        layers.append(penultimate)
    if not layers:
        raise CxrkitError("found no feature layers for the out-of-distribution reference")
    return [image, *layers]


class OodScorer(nn.Module):
    """Logits and out-of-distribution score in one forward pass (the module that is exported)."""

    def __init__(self, model: nn.Module, reference: dict, example: torch.Tensor):
        super().__init__()
        self.features, _ = trace_features(model, example, reference["layers"])
        self.count = len(reference["layers"])
        for index in range(self.count):
            self.register_buffer(f"means_{index}", reference["means"][index].float())
            self.register_buffer(f"precision_{index}", reference["precisions"][index].float())
        self.register_buffer("scales", torch.as_tensor(reference["scales"], dtype=torch.float32))

    def layer_distances(self, features: list[torch.Tensor]) -> torch.Tensor:
        """(N, layers) squared Mahalanobis distance to the nearest class mean, per layer."""
        distances = []
        for index, feature in enumerate(features):
            means = getattr(self, f"means_{index}")
            precision = getattr(self, f"precision_{index}")
            centred = feature.float()[:, None, :] - means[None]
            squared = ((centred @ precision) * centred).sum(dim=-1)
            distances.append(squared.min(dim=1).values)
        return torch.stack(distances, dim=1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = self.features(image)
        score = (self.layer_distances(features) / self.scales).mean(dim=1)
        return logits, score


def _batches(images: np.ndarray, batch_size: int, to_input: Callable[[np.ndarray], torch.Tensor]):
    for start in range(0, len(images), batch_size):
        yield to_input(images[start:start + batch_size])


@torch.no_grad()
def _features(traced: nn.Module, images: np.ndarray, to_input, batch_size: int,
              device: torch.device) -> list[np.ndarray]:
    collected: list[list[np.ndarray]] = []
    for batch in _batches(images, batch_size, to_input):
        _, features = traced(batch.to(device))
        if not collected:
            collected = [[] for _ in features]
        for store, feature in zip(collected, features, strict=True):
            store.append(feature.float().cpu().numpy().astype(np.float64))
    return [np.concatenate(parts) for parts in collected]


def fit_reference(model: nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
                  val_images: np.ndarray, to_input: Callable[[np.ndarray], torch.Tensor],
                  percentile: float = DEFAULT_PERCENTILE, batch_size: int = 64,
                  seed: int = 0) -> dict:
    """The OOD reference of a trained model: a dict of tensors/lists for model.ckpt.

    `train_images`/`val_images` are prepared uint8 images (N, H, W); `to_input` turns a batch of
    them into normalised model input. At most MAX_TRAIN_IMAGES training images are used.
    """
    from sklearn.covariance import LedoitWolf

    if len(val_images) < 2 or len(np.unique(train_labels)) < 1:
        raise CxrkitError(f"the OOD threshold needs validation images (got {len(val_images)})")
    if len(train_images) > MAX_TRAIN_IMAGES:
        keep = np.sort(np.random.default_rng(seed).choice(len(train_images), MAX_TRAIN_IMAGES,
                                                          replace=False))
        train_images, train_labels = train_images[keep], train_labels[keep]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    example = to_input(train_images[:2]).to(device)
    traced, layers = trace_features(model, example)
    train_features = _features(traced, train_images, to_input, batch_size, device)
    classes = np.unique(train_labels)
    means, precisions = [], []
    for feature in train_features:
        class_means = np.stack([feature[train_labels == c].mean(axis=0) for c in classes])
        centred = feature - class_means[np.searchsorted(classes, train_labels)]
        covariance = LedoitWolf(assume_centered=True).fit(centred).covariance_
        means.append(torch.tensor(class_means, dtype=torch.float32))
        precisions.append(torch.tensor(np.linalg.pinv(covariance, hermitian=True), dtype=torch.float32))
    reference = {"layers": layers, "means": means, "precisions": precisions,
                 "scales": torch.ones(len(layers))}
    scorer = OodScorer(model, reference, example).to(device)
    val_distances = _layer_distances(scorer, val_images, to_input, batch_size, device)
    scales = np.maximum(np.median(val_distances, axis=0), 1e-6)
    val_scores = (val_distances / scales).mean(axis=1)
    threshold = float(np.percentile(val_scores, percentile))
    model.train(was_training)
    return {
        "format": OOD_FORMAT,
        "method": METHOD,
        "layers": layers,
        "feature_sizes": [int(m.shape[1]) for m in means],
        "means": means,
        "precisions": precisions,
        "scales": torch.tensor(scales, dtype=torch.float32),
        "threshold": threshold,
        "percentile": float(percentile),
        "n_train": int(len(train_images)),
        "n_val": int(len(val_images)),
        "val_flagged_share": float((val_scores > threshold).mean()),
    }


@torch.no_grad()
def _layer_distances(scorer: OodScorer, images: np.ndarray, to_input, batch_size: int,
                     device: torch.device) -> np.ndarray:
    parts = []
    for batch in _batches(images, batch_size, to_input):
        _, features = scorer.features(batch.to(device))
        parts.append(scorer.layer_distances(features).cpu().numpy().astype(np.float64))
    return np.concatenate(parts)
