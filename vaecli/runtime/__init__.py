"""Running models on a device: device and dtype choice, the memory policy, exact tiling, the batch runner."""
