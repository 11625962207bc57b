"""CPU benchmarks of the network zoo across inference backends: ``python -m benchmarks`` (``make bench``)."""
