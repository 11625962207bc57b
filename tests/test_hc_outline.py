"""``python -m benchmarks.hc_outline`` on the HC18 validation masks: the fetal-head bundle's outline inset is what
the reference masks show, and with it their ellipses give the sonographer's head circumference."""

import numpy as np

from benchmarks.hc_outline import markdown, measure


def test_the_bundles_outline_inset_is_what_the_validation_masks_show():
    inset, results = measure(parts=("validation",))
    masks = results["validation"]
    assert len(masks["bias_mm"]) == 164 and (masks["bias_mm"] > 0).all()  # every mask's edge lies outside
    low, high = np.percentile(masks["inset_px"], [5, 95])
    assert low <= inset <= high
    assert np.abs(masks["error_mm"]).mean() < 0.1 < np.abs(masks["bias_mm"]).mean()
    assert markdown(inset, results).splitlines()[2].startswith("| validation | 164 |")
