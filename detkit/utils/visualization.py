"""Drawing detections on BGR images with OpenCV (boxes, class names, scores)."""
from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

__all__ = ['class_color', 'draw_detections']


def class_color(label: int) -> tuple[int, int, int]:
    """A bright BGR colour for class ``label``, stable across runs and well spread over the hue circle."""
    hue = (label * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbouring labels far apart
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def _as_numpy(x: Any, dtype: Any) -> np.ndarray:
    if hasattr(x, 'detach'):
        x = x.detach().float().cpu().numpy() if dtype == np.float32 else x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def draw_detections(img: np.ndarray, boxes: Any, labels: Any, scores: Any | None = None,
                    class_names: Sequence[str] | None = None, score_thr: float = 0.3, thickness: int | None = None,
                    font_scale: float | None = None) -> np.ndarray:
    """Draw boxes with ``name score`` captions on a copy of ``img``.

    Args:
        img: ``(H, W, 3)`` BGR uint8 image.
        boxes: ``(K, 4)`` x1, y1, x2, y2 in ``img``'s pixels (array or tensor).
        labels: ``(K,)`` class indices.
        scores: ``(K,)`` scores, or ``None`` for ground truth (nothing is filtered, no score shown).
        class_names: names indexed by label; the label number is shown when missing.
        score_thr: boxes scoring below this are not drawn.
        thickness, font_scale: default to values that scale with the image size.

    Returns:
        The annotated copy.
    """
    out = np.ascontiguousarray(img.copy())
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    if out.dtype != np.uint8:
        out = np.clip(out, 0, 255).astype(np.uint8)
    h, w = out.shape[:2]
    boxes = _as_numpy(boxes, np.float32).reshape(-1, 4)
    labels = _as_numpy(labels, np.int64).reshape(-1)
    scores_np = _as_numpy(scores, np.float32).reshape(-1) if scores is not None else None
    if thickness is None:
        thickness = max(1, round(min(h, w) / 300))
    if font_scale is None:
        font_scale = max(0.35, min(h, w) / 900)
    order = np.argsort(scores_np) if scores_np is not None else np.arange(len(boxes))  # best drawn last, on top
    for i in order:
        if scores_np is not None and scores_np[i] < score_thr:
            continue
        label = int(labels[i])
        color = class_color(label)
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)  # crisp: antialiasing only blurs axis-aligned lines
        name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)
        caption = f'{name} {scores_np[i]:.2f}' if scores_np is not None else name
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        # caption above the box, or inside it when the box touches the top edge
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
        tx = min(max(x1, 0), max(w - tw - 2, 0))
        cv2.rectangle(out, (tx, ty - th - base), (tx + tw + 2, ty + 1), color, -1)
        text_color = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)  # readable on light and dark fills
        cv2.putText(out, caption, (tx + 1, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_color, 1,
                    cv2.LINE_AA)
    return out
