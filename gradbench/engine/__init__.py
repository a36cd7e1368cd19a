"""The measurement on device: networks, backward pass, layer statistics, kernels, chunk layout."""
