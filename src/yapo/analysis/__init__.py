"""Analysis: activation patching (which layer to steer) and feature inspection of vectors.

* :mod:`yapo.analysis.patching` — patch the localized prompt's last-token state into the
  non-localized run, layer by layer, and watch the culturally correct option's probability.
* :mod:`yapo.analysis.features` — top latents of a sparse vector, the corpus contexts
  where they fire, latent density, and an HTML page to read them.
* :mod:`yapo.analysis.projection` — a dense vector seen in SAE space (encoder direction and
  a non-negative least-squares fit on the decoder), and feature-by-feature comparison of
  two vectors (BiPO vs YaPO).

The submodules are imported on use, so ``import yapo.analysis`` stays cheap.
"""
