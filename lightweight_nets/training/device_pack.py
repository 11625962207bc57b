"""``python -m lightweight_nets.training.device_pack``: the bundles' training data, small enough to carry to a GPU
machine (a device call carries at most 64 MiB with the working tree), cut into parts of at most ``--part-mib``.

2D datasets are written at the training resolution: each image of the bundle's split through the bundle's own
:class:`~lightweight_nets.transforms.Preprocessing`, stored as 8-bit PNG (``round(255 x)``, within 0.2% of the
input the network is served), and each mask resized as training resizes it, with ``preprocessed.json`` naming the
preprocessing, which :class:`~lightweight_nets.training.device_data.DeviceSegmentationDataModule` checks and then
reads the PNGs as they are. 3D datasets (a few MiB of NIfTI) are copied as they are.

Layout: ``OUT/part<k>/data/<dataset folder>/images|masks|labels/<file>`` and ``OUT/part<k>/wheels/*.whl``, each part
with ``PARTS`` (the count); ``make gpu-train`` merges them on the device.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from lightweight_nets.transforms import Preprocessing, resize_mask

__all__ = ["training_files", "write_training_grid_copy", "split_into_parts", "main"]


def training_files(root: Path) -> tuple[Path, list[str], Preprocessing | object, str]:
    """A bundle's dataset folder, the file names of its split, its preprocessing, and the mask folder's name."""
    from lightweight_nets.bundle import read_bundle_configs
    from lightweight_nets.training.split import read_split

    parser = read_bundle_configs(root, ("inference.json", "train.json"))
    dataset, split = Path(parser.get_parsed_content("dataset_dir")), parser.get_parsed_content("split_file")
    names = read_split(split, "train") + read_split(split, "validation")
    preprocessing = parser.get_parsed_content("preprocessing")
    return dataset, names, preprocessing, "masks" if isinstance(preprocessing, Preprocessing) else "labels"


def write_training_grid_copy(dataset: Path, names: list[str], preprocessing: Preprocessing, out: Path) -> None:
    """Training-resolution PNG copies of ``names`` (images and masks) under ``out``, marked ``preprocessed.json``."""
    from PIL import Image

    from lightweight_nets.io.images import read_image
    from lightweight_nets.training.device_data import PREPROCESSED

    if preprocessing.intensity not in ("minmax", "window"):
        raise ValueError(
            f"{dataset}: 8-bit copies need an intensity scheme onto [0, 1], not {preprocessing.intensity!r}"
        )
    not_png = [n for n in names if not n.lower().endswith(".png")]
    if not_png:
        raise ValueError(f"{dataset / 'images' / not_png[0]}: copies are lossless PNG under the same name; not a .png")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for name in names:
        frame = preprocessing(read_image(dataset / "images" / name).pixels)[0, 0].numpy()
        Image.fromarray(np.round(frame * 255).clip(0, 255).astype(np.uint8)).save(out / "images" / name)
        mask = resize_mask(read_image(dataset / "masks" / name).pixels, preprocessing.spatial_size)[0].numpy()
        Image.fromarray((mask > 0).astype(np.uint8) * 255).save(out / "masks" / name)
    (out / PREPROCESSED).write_text(json.dumps({"preprocessing": repr(preprocessing), "scale": 255}) + "\n")


def split_into_parts(staging: Path, out: Path, part_bytes: int) -> int:
    """Move every file under ``staging`` into ``out/part1``, ``part2``, ... (relative paths kept), none over
    ``part_bytes``, largest files first into the first part with room (few parts: each is one device call); writes
    ``PARTS`` (the count) into each; returns the count."""
    files = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size, reverse=True)
    too_big = [p for p in files if p.stat().st_size > part_bytes]
    if too_big:
        raise ValueError(f"{too_big[0]}: larger than a part ({part_bytes} bytes)")
    used: list[int] = []
    for path in files:
        size = path.stat().st_size
        part = next((k for k, taken in enumerate(used) if taken + size <= part_bytes), len(used))
        if part == len(used):
            used.append(0)
        used[part] += size
        target = out / f"part{part + 1}" / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
    for k in range(1, len(used) + 1):
        (out / f"part{k}" / "PARTS").write_text(f"{len(used)}\n")
    return len(used)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightweight_nets.training.device_pack", description=__doc__.splitlines()[0]
    )
    parser.add_argument("bundles", nargs="*", default=["bundle"], help="bundles or folders of bundles")
    parser.add_argument("-o", "--output", type=Path, required=True, help="an empty folder (e.g. .devdata)")
    parser.add_argument("--wheels", type=Path, help="a folder of wheels to carry too")
    parser.add_argument(
        "--part-mib",
        type=float,
        default=20.0,
        help="size of a part (default 20 MiB: 64 MiB less the working tree, 42 MiB)",
    )
    args = parser.parse_args(argv)
    from lightweight_nets.bundle import find_bundles

    staging = args.output / "staging"
    if args.output.exists() and any(args.output.glob("part*")):
        print(f"device_pack: {args.output}: holds parts already; remove them first", file=sys.stderr)
        return 1
    try:
        for spec in (s for path in args.bundles for s in find_bundles(path)):
            dataset, names, preprocessing, masks = training_files(spec.root)
            target = staging / "data" / dataset.name
            if masks == "masks":
                write_training_grid_copy(dataset, names, preprocessing, target)
                print(f"{spec.id}: {len(names)} images of {dataset} at {list(preprocessing.spatial_size)}")
            else:
                for name in names:
                    for folder in ("images", masks):
                        (target / folder).mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(dataset / folder / name, target / folder / name)
                print(f"{spec.id}: {len(names)} volumes of {dataset} copied")
        if args.wheels:
            shutil.copytree(args.wheels, staging / "wheels", dirs_exist_ok=True)
        count = split_into_parts(staging, args.output, int(args.part_mib * 2**20))
    except (OSError, ValueError) as error:
        print(f"device_pack: {error}", file=sys.stderr)
        return 1
    shutil.rmtree(staging)
    sizes = [
        sum(p.stat().st_size for p in (args.output / f"part{k}").rglob("*") if p.is_file()) / 2**20
        for k in range(1, count + 1)
    ]
    print(f"{count} parts in {args.output}: " + ", ".join(f"part{k} {s:.1f} MiB" for k, s in enumerate(sizes, 1)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
