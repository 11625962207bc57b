"""``python apps/lightweight_seg -i DICOM_DIR -o OUT_DIR [-m BUNDLES] [--model NAME] [--rules RULES.json]
[--all-components]``.

The SDK's own flags (-i, -o, -m, -l, -w) and variables (HOLOSCAN_INPUT_PATH, HOLOSCAN_OUTPUT_PATH,
HOLOSCAN_MODEL_PATH) work as in any MONAI Deploy app; ``-m`` takes one model bundle or a folder of bundles and
defaults to every bundle the package ships. Each series goes to the bundle whose series rules claim it;
``--model NAME`` sends every series to the bundle of that folder name instead. Prints one line per SEG, per
skipped series and per problem; exits 1 when nothing could be segmented.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

import lightweight_seg  # noqa: F401  (preloads the CUDA runtime before monai pulls in Holoscan)
from lightweight_seg.dicom_io import DEFAULT_RULES, InputError, one_line
from lightweight_seg.pipeline import SeriesResult
from lightweight_seg.routing import DEFAULT_BUNDLES


def _summary(output: SeriesResult) -> str:
    """What was found in a series and where its SEG, SR, overlay and report went, from its report."""
    report = json.loads(output.report_path.read_text())
    facts = []
    for segment in report["segments"]:
        fact = f"{segment['label']} on {segment['frames_with_segment']} of {report['frames']} frames"
        if "volume_mm3" in segment:
            fact += f", volume {segment['volume_mm3']:.0f} mm3"
        areas = [a for a in segment.get("area_mm2_per_frame", []) if a]
        if areas:
            fact += f", area {np.median(areas):.0f} mm2" + (" (median of frames)" if len(areas) > 1 else "")
        for key, what, unit in (
            ("head_circumference_mm_per_frame", "head circumference", "mm"),
            ("gestational_age_weeks_per_frame", "gestational age", "weeks"),
            ("largest_diameter_mm_per_frame", "largest diameter", "mm"),
        ):
            values = [v for v in segment.get(key, []) if v is not None]
            if values:
                median = " (median of frames)" if len(values) > 1 else ""
                fact += f", {what} {np.median(values):.1f} {unit}{median}"
        not_given = [why for why in segment.get("gestational_age_not_given", []) if why]
        if not_given and not any(v is not None for v in segment.get("gestational_age_weeks_per_frame", [])):
            fact += f", no gestational age ({not_given[0]})"
        for name, why in segment.get("not_measured", {}).items():
            fact += f", {name.replace('_', ' ')} not measured ({why})"
        facts.append(fact)
    return (
        one_line(f"{report['modality']} series {output.series_uid} -> {output.model}: {'; '.join(facts)}") + "\n"
        f"  SEG     {one_line(output.seg_path)}\n"
        + (f"  SR      {one_line(output.sr_path)}\n" if output.sr_path is not None else "")
        + f"  overlay {one_line(output.overlay_path)}\n  report  {one_line(output.report_path)}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    ours = argparse.ArgumentParser(
        prog="lightweight-seg",
        add_help=False,
        description=__doc__.split("\n\n", 1)[1].strip(),
        usage="lightweight-seg -i DICOM_DIR -o OUT_DIR [-m BUNDLES] [--model NAME] [--rules RULES.json] "
        "[--all-components]",
    )
    ours.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="which series to consider at all (JSON)")
    ours.add_argument(
        "--model",
        dest="force",
        metavar="NAME",
        help="segment every selected series with this bundle (its folder name), whatever its rules",
    )
    ours.add_argument(
        "--all-components",
        action="store_true",
        help="keep every connected component (default: as each bundle's postprocessing says)",
    )
    options, sdk_argv = ours.parse_known_args(argv[1:])
    if {"-h", "--help"} & set(sdk_argv):  # ours first, then the SDK prints its own flags and exits
        print(ours.format_help() + "\nMONAI Deploy app options:")
    if "-m" not in sdk_argv and not os.environ.get("HOLOSCAN_MODEL_PATH"):
        sdk_argv += ["-m", str(DEFAULT_BUNDLES)]

    from lightweight_seg.app import LightweightSegApp

    app = LightweightSegApp(
        [argv[0], *sdk_argv], rules=options.rules, force=options.force, keep_all_components=options.all_components
    )
    try:
        app.run()
    except InputError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    finally:
        app.close()
    result = app.segmenter.result
    # Every file the app read before the SDK loader and found it cannot segment (not a regular file, not DICOM, cut
    # short, a bad header), then what failed while segmenting: each once, one line each.
    unreadable = app.input_problems
    unselected = [
        (uid, f"series {uid}: not selected by the selection rules ({options.rules.name})")
        for uid in app.segmenter.expected
        if uid not in app.segmenter.selected
    ]
    for output in result.outputs:
        print(_summary(output))
    for message in dict.fromkeys(message for _, message in unselected + result.skipped):
        print(f"skipped: {one_line(message)}", file=sys.stderr)
    for message in dict.fromkeys(message for _, message in unreadable + result.errors):
        print(f"error: {one_line(message)}", file=sys.stderr)
    if not result.outputs:
        if result.errors or unreadable:
            reason = "nothing segmented"
        elif result.skipped:
            reason = "no model for any series"
        elif unselected:
            reason = "no series matches the selection rules"
        elif app.input_files:
            reason = "no series matches the selection rules"
        else:
            reason = "no files"
        print(f"error: {one_line(app.input_folder)}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
