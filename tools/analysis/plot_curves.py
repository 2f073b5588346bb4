"""Plot the loss and evaluation curves of a training run from its JSON-lines log (drawn with OpenCV).

    python tools/analysis/plot_curves.py work_dirs/quickstart/ssd_shapes_simple/20240101_120000.log.json --out curves.png
    python tools/analysis/plot_curves.py run.log.json resumed.log.json --keys loss loss_cls voc/mAP

Left panel: training losses against the global iteration; right panel: evaluation metrics against the epoch.
Several logs (a run and its resumed continuation) are concatenated.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import os.path as osp
import sys
from collections.abc import Sequence

import cv2
import numpy as np

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (40, 40, 40), (120, 120, 120), (225, 225, 225)
FONT = cv2.FONT_HERSHEY_SIMPLEX
PALETTE = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
           (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]  # BGR of the usual tab10 colours
_NOT_METRICS = {'mode', 'epoch', 'iter', 'step', 'lr', 'time', 'data_time', 'memory'}


def load_log(paths: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """Train and val records of one or more JSON-lines logs (lines without a ``mode`` are skipped)."""
    train, val = [], []
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit(f'{path}:{n}: not a JSON line ({e})') from e
                if rec.get('mode') == 'train':
                    train.append(rec)
                elif rec.get('mode') == 'val':
                    val.append(rec)
    train.sort(key=lambda r: r.get('step', 0))
    val.sort(key=lambda r: (r.get('epoch', 0), r.get('step', 0)))
    return train, val


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def collect_series(records: list[dict], keys: Sequence[str], x_key: str) -> dict[str, tuple[list, list]]:
    series: dict[str, tuple[list, list]] = {}
    for i, rec in enumerate(records):
        for k in keys:
            if _is_number(rec.get(k)):
                xs, ys = series.setdefault(k, ([], []))
                xs.append(rec.get(x_key, i + 1))
                ys.append(float(rec[k]))
    return series


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 times a power of ten).

    ``integer``: whole-number steps only (epochs, iterations).
    """
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1, round(step))
    start = math.floor(lo / step) * step
    ticks = [round(start, 10)]
    while ticks[-1] < hi - 1e-9 * step:  # until the last tick reaches hi (multiples of step: no drift)
        ticks.append(round(start + len(ticks) * step, 10))
    return ticks


def _fmt(v: float) -> str:
    return f'{v:.0f}' if abs(v) >= 100 or float(v).is_integer() else f'{v:.3g}'


def draw_panel(img: np.ndarray, box: tuple[int, int, int, int], title: str, xlabel: str,
               series: dict[str, tuple[list, list]]) -> None:
    """Draw a line chart of ``series`` (name -> (xs, ys)) inside ``box`` = (x, y, w, h) of ``img``."""
    bx, by, bw, bh = box
    left, right, top, bottom = 64, 16, 34, 44
    px0, py0, px1, py1 = bx + left, by + top, bx + bw - right, by + bh - bottom
    cv2.putText(img, title, (bx + left, by + 22), FONT, 0.6, BLACK, 1, cv2.LINE_AA)
    if not series:
        cv2.putText(img, 'no data', ((px0 + px1) // 2 - 30, (py0 + py1) // 2), FONT, 0.5, GREY, 1, cv2.LINE_AA)
        cv2.rectangle(img, (px0, py0), (px1, py1), GREY, 1)
        return
    all_x = [x for xs, _ in series.values() for x in xs]
    all_y = [y for _, ys in series.values() for y in ys]
    integer_x = all(float(x).is_integer() for x in all_x)
    xt, yt = nice_ticks(min(all_x), max(all_x), integer=integer_x), nice_ticks(min(all_y), max(all_y))
    x_lo, x_hi, y_lo, y_hi = xt[0], xt[-1], yt[0], yt[-1]

    def to_px(x: float, y: float) -> tuple[int, int]:
        return (int(round(px0 + (x - x_lo) / (x_hi - x_lo or 1) * (px1 - px0))),
                int(round(py1 - (y - y_lo) / (y_hi - y_lo or 1) * (py1 - py0))))

    for t in xt:
        x, _ = to_px(t, y_lo)
        cv2.line(img, (x, py0), (x, py1), LIGHT, 1)
        label = _fmt(t)
        (tw, _), _ = cv2.getTextSize(label, FONT, 0.4, 1)
        cv2.putText(img, label, (x - tw // 2, py1 + 16), FONT, 0.4, GREY, 1, cv2.LINE_AA)
    for t in yt:
        _, y = to_px(x_lo, t)
        cv2.line(img, (px0, y), (px1, y), LIGHT, 1)
        label = _fmt(t)
        (tw, th), _ = cv2.getTextSize(label, FONT, 0.4, 1)
        cv2.putText(img, label, (px0 - tw - 6, y + th // 2), FONT, 0.4, GREY, 1, cv2.LINE_AA)
    cv2.rectangle(img, (px0, py0), (px1, py1), GREY, 1)
    (tw, _), _ = cv2.getTextSize(xlabel, FONT, 0.45, 1)
    cv2.putText(img, xlabel, ((px0 + px1 - tw) // 2, py1 + 36), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
    for i, (name, (xs, ys)) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        pts = np.array([to_px(x, y) for x, y in zip(xs, ys)], np.int32)
        if len(pts) == 1:
            cv2.circle(img, tuple(int(v) for v in pts[0]), 3, color, -1, cv2.LINE_AA)
        else:
            cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, color, 2, cv2.LINE_AA)
            if len(pts) <= 30:  # few points (per-epoch metrics): mark them
                for p in pts:
                    cv2.circle(img, (int(p[0]), int(p[1])), 3, color, -1, cv2.LINE_AA)
        # legend, top right inside the plot
        ly = py0 + 16 + 18 * i
        (tw, _), _ = cv2.getTextSize(name, FONT, 0.42, 1)
        lx = px1 - tw - 34
        cv2.rectangle(img, (lx - 4, ly - 12), (px1 - 4, ly + 5), WHITE, -1)
        cv2.line(img, (lx, ly - 4), (lx + 20, ly - 4), color, 2, cv2.LINE_AA)
        cv2.putText(img, name, (lx + 26, ly), FONT, 0.42, BLACK, 1, cv2.LINE_AA)


def plot_curves(log_paths: Sequence[str], out: str, keys: Sequence[str] | None = None,
                size: tuple[int, int] = (1280, 460)) -> str:
    """Draw the loss panel and the metric panel into the PNG ``out``; returns ``out``."""
    train, val = load_log(log_paths)
    if not train and not val:
        raise SystemExit(f'no train or val records in {", ".join(log_paths)} (is it a detkit .log.json?)')
    train_keys = sorted({k for r in train for k, v in r.items() if k.startswith('loss') and _is_number(v)},
                        key=lambda k: (k != 'loss', k))
    val_keys = sorted({k for r in val for k, v in r.items() if k not in _NOT_METRICS and _is_number(v)})
    map_keys = [k for k in val_keys if 'AP' in k or 'mAP' in k]
    val_keys = map_keys or val_keys
    if keys:
        train_keys = [k for k in keys if any(k in r for r in train)]
        val_keys = [k for k in keys if any(k in r for r in val)]
        missing = [k for k in keys if k not in train_keys and k not in val_keys]
        if missing:
            print(f'warning: keys not in the log: {missing}', file=sys.stderr)
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    draw_panel(img, (0, 0, w // 2, h), 'training loss', 'iteration', collect_series(train, train_keys, 'step'))
    draw_panel(img, (w // 2, 0, w - w // 2, h), 'evaluation', 'epoch', collect_series(val, val_keys, 'epoch'))
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    if not cv2.imwrite(out, img):
        raise SystemExit(f'cannot write {out} (use a .png path)')
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description='Plot loss and mAP curves from detkit JSON-lines logs')
    p.add_argument('logs', nargs='+', help='<work_dir>/<timestamp>.log.json file(s)')
    p.add_argument('--out', help='PNG to write (default: curves.png next to the first log)')
    p.add_argument('--keys', nargs='+', help='plot only these keys (losses and/or metrics)')
    args = p.parse_args(argv)
    out = args.out or osp.join(osp.dirname(osp.abspath(args.logs[0])), 'curves.png')
    print(f'wrote {plot_curves(args.logs, out, args.keys)}')


if __name__ == '__main__':
    main()
