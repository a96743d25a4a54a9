#!/usr/bin/env python3
"""plot_curves.py OUT.svg LABEL=metrics.csv ...: train and validation loss of several runs in one SVG.

Reads latent-train's metrics.csv files (columns step, loss, val_loss, ...; empty cells between
evaluations) and draws each run's train loss as a thin line and its validation loss as a thick one,
in one colour per run. Standard library only, so it runs wherever the benchmarks do.
"""
import csv
import sys

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 420, 60, 150, 20, 40


def read(path):
    series = {"loss": [], "val_loss": []}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for column in series:
                if row.get(column):
                    series[column].append((int(row["step"]), float(row[column])))
    return series


def main():
    if len(sys.argv) < 3 or any("=" not in a for a in sys.argv[2:]):
        sys.exit(__doc__)
    out, runs = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
    data = [(label, read(path)) for label, path in runs]
    points = [p for _, s in data for column in s.values() for p in column]
    if not points:
        sys.exit(f"plot_curves.py: no loss values in {', '.join(p for _, p in runs)}")
    x0, x1 = 0, max(x for x, _ in points)
    y0, y1 = min(y for _, y in points), max(y for _, y in points)
    y1 += (y1 - y0) * 0.02 or 1
    sx = lambda x: LEFT + (x - x0) / max(x1 - x0, 1) * (W - LEFT - RIGHT)
    sy = lambda y: TOP + (y1 - y) / (y1 - y0) * (H - TOP - BOTTOM)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    for i in range(6):  # horizontal grid with loss labels
        y = y0 + (y1 - y0) * i / 5
        svg.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        svg.append(f'<text x="{sx(x):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{x:.0f}</text>')
    svg.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 6}" text-anchor="middle">step</text>')
    legend_y = TOP + 10
    for (label, series), colour in zip(data, COLOURS):
        for column, width, name in (("loss", 1, "train"), ("val_loss", 2.5, "validation")):
            if not series[column]:
                continue
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in series[column])
            svg.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{width}"/>')
            svg.append(f'<line x1="{W - RIGHT + 10}" x2="{W - RIGHT + 30}" y1="{legend_y}" y2="{legend_y}" '
                       f'stroke="{colour}" stroke-width="{width}"/>')
            svg.append(f'<text x="{W - RIGHT + 36}" y="{legend_y + 4}">{label} {name}</text>')
            legend_y += 18
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
