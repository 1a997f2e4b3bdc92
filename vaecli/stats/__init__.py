"""Statistics of a model's latents over a data set, and the invertible normaliser fitted from them."""
