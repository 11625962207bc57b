"""``python apps/lightweight_seg -i DICOM_DIR -o OUT_DIR [-m BUNDLE] [--rules RULES.json] [--all-components]``.

The SDK's own flags (-i, -o, -m, -l, -w) and variables (HOLOSCAN_INPUT_PATH, HOLOSCAN_OUTPUT_PATH,
HOLOSCAN_MODEL_PATH) work as in any MONAI Deploy app; ``-m`` defaults to the repository's bundle. Prints one
line per SEG and per problem; exits 1 when nothing could be segmented.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python apps/lightweight_seg`: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lightweight_seg  # noqa: E402,F401  (preloads the CUDA runtime before monai pulls in Holoscan)
from lightweight_seg.dicom_io import DEFAULT_RULES, InputError, find_files  # noqa: E402
from lightweight_seg.pipeline import DEFAULT_BUNDLE  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="series selection rules (JSON)")
    ours.add_argument("--all-components", action="store_true", help="keep every connected component")
    options, sdk_argv = ours.parse_known_args(argv[1:])
    if "-m" not in sdk_argv and "--model" not in sdk_argv and not os.environ.get("HOLOSCAN_MODEL_PATH"):
        sdk_argv += ["-m", str(DEFAULT_BUNDLE)]

    from lightweight_seg.app import LightweightSegApp

    app = LightweightSegApp([argv[0], *sdk_argv], rules=options.rules, keep_largest=not options.all_components)
    try:
        app.run()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    result = app.segmenter.result
    for output in result.outputs:
        print(f"segmented series {output.series_uid}: {output.seg_path} (overlay {output.overlay_path.name}, "
              f"report {output.report_path.name})")
    for _, message in result.errors:
        print(f"error: {message}", file=sys.stderr)
    if not result.outputs:
        if result.errors:
            reason = "nothing segmented"
        elif find_files(app.input_folder):
            reason = "no series matches the selection rules"
        else:
            reason = "no files"
        print(f"error: {app.input_folder}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
