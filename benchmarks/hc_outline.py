"""``python -m benchmarks.hc_outline``: how far inside the HC18 reference masks' edge the sonographer's ellipse
lies, the fact behind the fetal-head bundle's ``outline_inset_px``.

The HC18 masks are the sonographer's drawn ellipses, flood-filled, so their edge is the outer edge of the drawn
line, while the reference head circumference (``pixel_size_and_hc.csv``) is the ellipse the line follows. For each
reference mask of each split part: its own ellipse's perimeter minus the reference HC (mm), that difference in
pixels of inset (divided by the perimeter lost per pixel of inset, measured on the same mask), and the error left
with the bundle's inset. The bundle's value comes from the training part; the validation part checks it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks import checkout
from lightweight_nets.bundle import read_bundle_configs
from lightweight_nets.io.images import read_image
from lightweight_nets.io.tables import read_csv_column, read_pixel_sizes
from lightweight_nets.measure import head_circumference_mm
from lightweight_nets.training.split import read_split

__all__ = ["outline_offsets", "measure", "markdown"]


def outline_offsets(masks_dir: Path, names: list[str], pixel_sizes: dict, reference_hc: dict, inset_px: float) -> dict:
    """Per mask: ``bias_mm`` (its ellipse's perimeter minus the reference HC), ``inset_px`` (the inset that removes
    that bias) and ``error_mm`` (the perimeter with ``inset_px`` applied minus the reference HC), as arrays."""
    bias, inset, error = [], [], []
    for name in names:
        mask, spacing = read_image(masks_dir / name).pixels > 0, pixel_sizes[name]
        perimeter, one_pixel_in = head_circumference_mm(mask, spacing), head_circumference_mm(mask, spacing, 1.0)
        bias.append(perimeter - reference_hc[name])
        inset.append(bias[-1] / (perimeter - one_pixel_in))
        error.append(head_circumference_mm(mask, spacing, inset_px) - reference_hc[name])
    return {"bias_mm": np.array(bias), "inset_px": np.array(inset), "error_mm": np.array(error)}


def measure(bundle: Path | None = None, parts: tuple[str, ...] = ("train", "validation")) -> tuple[float, dict]:
    """The bundle's inset and ``{part: outline_offsets}`` over the reference masks of its evaluation split."""
    config = read_bundle_configs(bundle or checkout("bundle", "fetal_head_us"), ("inference.json", "evaluate.json"))
    dataset = Path(config.get_parsed_content("dataset_dir"))
    csv_path = config.get_parsed_content("pixel_size_csv")
    reference = read_csv_column(csv_path, config.get_parsed_content("reference_hc_column"), float)
    inset_px = config.get_parsed_content("segments")[0].outline_inset_px
    split = config.get_parsed_content("split_file")
    sizes = read_pixel_sizes(csv_path)
    return inset_px, {
        part: outline_offsets(dataset / "masks", read_split(split, part), sizes, reference, inset_px) for part in parts
    }


def markdown(inset_px: float, results: dict) -> str:
    lines = [
        f"| HC18 reference masks | n | ellipse of the mask minus reference HC, mm (mean +- std) | that in pixels of "
        f"inset (mean +- std, 5-95%) | with the bundle's {inset_px:g} px: mean error, mean abs. error (mm) |",
        "|---|---:|---:|---:|---:|",
    ]
    for part, r in results.items():
        low, high = np.percentile(r["inset_px"], [5, 95])
        lines.append(
            f"| {part} | {len(r['bias_mm'])} | {r['bias_mm'].mean():+.2f} +- {r['bias_mm'].std():.2f} | "
            f"{r['inset_px'].mean():.2f} +- {r['inset_px'].std():.2f} ({low:.2f}-{high:.2f}) | "
            f"{r['error_mm'].mean():+.2f}, {np.abs(r['error_mm']).mean():.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hc_outline", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="the fetal-head bundle (default: the checkout's)")
    args = parser.parse_args(argv)
    print(markdown(*measure(args.bundle)))


if __name__ == "__main__":
    main()
