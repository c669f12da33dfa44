"""Write a dataset audit to a folder: audit.json, images.csv, audit.html and its figures."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from cxrkit.data.io import read_gray
from cxrkit.errors import CxrkitError

SAMPLES_PER_CLASS = 8
LUNG_OVERLAYS_PER_CLASS = 4
THUMBNAIL = 160
CAPTION_LINE = 13
IMAGE_COLUMNS = ["path", "label", "split", "group", "near_duplicate_group", "error", "reason",
                 "bytes", "sha256", "phash", "format", "mode", "bit_depth", "width", "height",
                 "mean", "std", "border_mean"]


def check_output_folder(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder unless overwrite is set."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CxrkitError(f"out_dir={out_dir}: is a file; give a folder for the audit report")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise CxrkitError(f"out_dir={out_dir}: folder exists and is not empty; choose another "
                          "folder or pass overwrite=True")


def _thumbnail(path: str) -> Image.Image:
    """A THUMBNAIL-square tile of the image (aspect kept), or a grey tile saying unreadable."""
    tile = Image.new("L", (THUMBNAIL, THUMBNAIL), 40)
    try:
        gray = read_gray(path)
    except CxrkitError:
        ImageDraw.Draw(tile).text((10, THUMBNAIL // 2), "unreadable", fill=255, font=_font())
        return tile
    image = Image.fromarray(gray)
    image.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX)
    tile.paste(image, ((THUMBNAIL - image.width) // 2, (THUMBNAIL - image.height) // 2))
    return tile


def _font():
    return ImageFont.load_default(size=11)


def _grid(cells: list[tuple[str, list[str]]], columns: int, title: str, path: Path) -> None:
    """Tile thumbnails (path, caption lines; empty path = blank cell) under a title as PNG."""
    caption_height, title_height, gap = 3 * CAPTION_LINE, 24, 6
    cell_width, cell_height = THUMBNAIL + gap, THUMBNAIL + caption_height + gap
    rows = max(1, -(-len(cells) // columns))
    sheet = Image.new("L", (columns * cell_width + gap, rows * cell_height + title_height),
                      255)
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 5), title, fill=0, font=ImageFont.load_default(size=14))
    for index, (image_path, caption) in enumerate(cells):
        if not image_path:
            continue
        left = gap + (index % columns) * cell_width
        top = title_height + (index // columns) * cell_height
        for line_number, line in enumerate(caption[:3]):
            draw.text((left, top + line_number * CAPTION_LINE), line[:28], fill=0, font=_font())
        sheet.paste(_thumbnail(image_path), (left, top + caption_height))
    sheet.save(path)


def _class_chart(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    classes = list(report["classes"])
    figure = Figure(figsize=(max(4.0, 1.3 * len(classes) + 2), 3.2), layout="constrained")
    axis = figure.add_subplot()
    splits = report["splits"] or {"all": report["classes"]}
    width = 0.8 / len(splits)
    for offset, (split, counts) in enumerate(splits.items()):
        heights = [counts.get(c, 0) for c in classes]
        bars = axis.bar(np.arange(len(classes)) + offset * width, heights, width, label=split)
        axis.bar_label(bars, fontsize=7)
    axis.set_xticks(np.arange(len(classes)) + width * (len(splits) - 1) / 2, classes)
    axis.set_ylabel("images")
    axis.set_title(f"Class distribution (imbalance {report['imbalance_ratio']}:1)")
    if report["splits"]:
        axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def _sample_grid(table: pd.DataFrame, path: Path) -> None:
    readable = table[table["error"].isna()]
    rng = np.random.default_rng(0)
    cells = []
    for label, rows in sorted(readable.groupby("label"), key=lambda item: str(item[0])):
        chosen = rng.choice(len(rows), size=min(SAMPLES_PER_CLASS, len(rows)), replace=False)
        cells += [(rows["path"].iat[i], [str(label), Path(rows["path"].iat[i]).name])
                  for i in sorted(chosen)]
        cells += [("", [])] * (-len(cells) % SAMPLES_PER_CLASS)
    _grid(cells, SAMPLES_PER_CLASS, "Random samples, one row per class", path)


def _lung_overlays(table: pd.DataFrame, path: Path) -> dict:
    """Lung overlays of a few images per class with the shipped segmenter (what preprocess.lung_crop sees).

    Returns a summary for audit.json; `{"error": ...}` (and no figure) when the weights are missing.
    """
    from cxrkit.segment.predict import overlay_grid
    from cxrkit.segment.weights import torch_segmenter

    try:
        segmenter = torch_segmenter()
    except CxrkitError as error:
        return {"error": str(error)}
    readable = table[table["error"].isna()]
    rng = np.random.default_rng(1)
    chosen = []
    for _, rows in sorted(readable.groupby("label"), key=lambda item: str(item[0])):
        picks = rng.choice(len(rows), size=min(LUNG_OVERLAYS_PER_CLASS, len(rows)), replace=False)
        chosen += [rows["path"].iat[i] for i in sorted(picks)]
    found = overlay_grid(segmenter, chosen, path, columns=LUNG_OVERLAYS_PER_CLASS)
    if not found:
        return {"error": "no readable images"}
    return {"segmenter": segmenter.digest, "shown": len(chosen), "no_lung_found": int(sum(not f for f in found)),
            "figure": path.name}


def _pair_montage(pairs: list[dict], threshold: float, title: str, path: Path) -> None:
    cells = []
    for pair in pairs:
        verdict = "duplicate" if pair["distance"] <= threshold else "distinct"
        for side, key in enumerate(("", "other_")):
            where = " / ".join(str(x) for x in (pair[f"{key}label"], pair[f"{key}split"]) if x)
            heading = f"d={pair['distance']:g} {verdict}" if side == 0 else ""
            cells.append((pair[f"{key}path"], [heading, Path(pair[f"{key}path"]).name, where]))
    _grid(cells, 4, f"{title} (threshold {threshold})", path)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _group_rows(groups: list[dict], limit: int = 50) -> list[list]:
    return [[g["id"], len(g["paths"]), ", ".join(sorted(set(map(str, g["labels"])))),
             ", ".join(sorted({str(s) for s in g["splits"] if s})) or "-",
             "; ".join(Path(p).name for p in g["paths"][:6])] for g in groups[:limit]]


def _html(report: dict, outputs: dict) -> str:
    leakage = report["leakage"]
    duplicates = report["duplicates"]
    verdict = ("LEAKAGE FOUND" if leakage["found"] else "no leakage found")
    parts = [f"<h1>Dataset audit: {html.escape(report['source'])}</h1>",
             f"<p class='verdict'>{verdict} &middot; {report['images']} images &middot; "
             f"{len(report['classes'])} classes &middot; imbalance "
             f"{report['imbalance_ratio']}:1</p>"]
    parts.append("<h2>Leakage</h2>")
    patients = leakage["patients_across_splits"]
    grouping = report["grouping"]
    if grouping["source"]:
        described = grouping["description"] or grouping["pattern"] or "manifest column"
        parts.append(f"<p>Patient groups ({grouping['source']}): {html.escape(described)}; "
                     f"{grouping['groups']} groups.</p>")
    if patients:
        parts.append(f"<p>{patients['shared_groups']} of {patients['groups']} patient groups "
                     f"({patients['shared_images']} images) appear in more than one split: "
                     f"{html.escape(json.dumps(patients['by_splits']))}</p>")
    elif not report["splits"]:
        parts.append("<p>No splits given: nothing can leak yet.</p>")
    parts.append(f"<p>{len(leakage['duplicates_across_splits'])} duplicate groups cross "
                 "splits.</p>")
    if leakage["duplicates_across_splits"]:
        parts.append(_table(_group_rows(leakage["duplicates_across_splits"]),
                            ["group", "images", "labels", "splits", "files"]))
    if leakage["against"]:
        other = leakage["against"]
        parts.append(f"<p>Against {html.escape(other['source'])} ({other['images']} images): "
                     f"{other['exact_duplicates']} exact and {other['near_duplicate_pairs']} "
                     f"near-duplicate pairs, {other['images_shared']} images shared.</p>")
    parts.append("<h2>Duplicates</h2>")
    parts.append(f"<p>{len(duplicates['exact_groups'])} exact-duplicate groups; "
                 f"{len(duplicates['near_groups'])} near-duplicate groups holding "
                 f"{duplicates['images_in_near_groups']} images ({html.escape(duplicates['hash'])}"
                 f", threshold {duplicates['max_distance']}); "
                 f"{len(duplicates['label_conflicts'])} groups with conflicting labels.</p>")
    if duplicates["near_groups"]:
        parts.append(_table(_group_rows(duplicates["near_groups"]),
                            ["group", "images", "labels", "splits", "files"]))
    parts.append("<h2>Shortcut hints</h2>")
    hints = report["shortcuts"]
    parts.append("<ul>" + "".join(f"<li>{html.escape(h['message'])}</li>" for h in hints)
                 + "</ul>" if hints else "<p>None found.</p>")
    parts.append("<h2>Classes</h2>")
    rows = []
    for label, props in report["properties"].items():
        rows.append([label, report["classes"].get(label, 0), props["readable"],
                     json.dumps(props["formats"]), json.dumps(props["modes"]),
                     json.dumps(props["bit_depths"]), json.dumps(props["sizes"]),
                     props["mean"].get("mean", "-"), props["bytes"].get("median", "-")])
    parts.append(_table(rows, ["class", "images", "readable", "formats", "modes", "bit depths",
                               "sizes", "mean intensity", "median bytes"]))
    problems = [[kind, p["path"], p["reason"]] for kind, items in report["problems"].items()
                for p in items]
    parts.append("<h2>Unreadable files</h2>")
    parts.append(_table(problems[:200], ["kind", "path", "reason"]) if problems
                 else "<p>None.</p>")
    parts.append("<h2>Figures</h2>")
    for key in ("class_chart", "samples", "closest_pairs", "against_pairs"):
        if key in outputs:
            parts.append(f"<p><img src='{html.escape(outputs[key])}' alt='{key}'></p>")
    lungs = report.get("lungs") or {}
    parts.append("<h2>Lung fields</h2>")
    if "figure" in lungs:
        parts.append(f"<p>What <code>preprocess.lung_crop</code> would use: lung mask (green) and crop box "
                     f"(yellow) from the shipped segmenter ({lungs['segmenter']}), {LUNG_OVERLAYS_PER_CLASS} "
                     f"images per class; no plausible lung in {lungs['no_lung_found']} of {lungs['shown']} "
                     f"(NO LUNG).</p><p><img src='{html.escape(outputs['lung_overlays'])}' alt='lung_overlays'></p>")
    else:
        parts.append(f"<p>Not shown: {html.escape(lungs.get('error', 'no images'))}</p>")
    parts.append(f"<p>Full data: <a href='{outputs['json']}'>{outputs['json']}</a>, "
                 f"<a href='{outputs['images']}'>{outputs['images']}</a>. "
                 f"Audit took {report['seconds']} s.</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
             "padding:3px 6px;text-align:left}img{max-width:100%}.verdict{font-size:18px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>cxrkit audit</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_audit(report: dict, table: pd.DataFrame, out_dir: Path) -> dict:
    """Write every audit file into out_dir; returns {kind: file name}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {"json": "audit.json", "html": "audit.html", "images": "images.csv",
               "class_chart": "class_distribution.png", "samples": "samples.png",
               "closest_pairs": "closest_pairs.png"}
    table.reindex(columns=IMAGE_COLUMNS).to_csv(out_dir / outputs["images"], index=False)
    _class_chart(report, out_dir / outputs["class_chart"])
    _sample_grid(table, out_dir / outputs["samples"])
    threshold = report["duplicates"]["max_distance"]
    _pair_montage(report["duplicates"]["closest_pairs"], threshold,
                  "Closest pairs within the data", out_dir / outputs["closest_pairs"])
    lungs = _lung_overlays(table, out_dir / "lung_overlays.png")
    if "figure" in lungs:
        outputs["lung_overlays"] = lungs["figure"]
    against = report["leakage"]["against"]
    if against:
        outputs["against_pairs"] = "against_pairs.png"
        _pair_montage(against["closest_pairs"], threshold,
                      f"Closest pairs against {against['source']}",
                      out_dir / outputs["against_pairs"])
    report = {**report, "lungs": lungs, "outputs": outputs}
    (out_dir / outputs["json"]).write_text(json.dumps(report, indent=2, default=_json_default))
    (out_dir / outputs["html"]).write_text(_html(report, outputs))
    return outputs
