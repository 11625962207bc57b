"""Where a model runs: ``predictors`` (the backends behind ``predict(batch) -> logits``, the one weights loader),
``segment`` (image or volume -> label map with a bundle's pre- and post-processing), ``folders`` (the bundle's
folder workflows that its ``run`` calls)."""
