"""Spike-train equivalence checks between back ends of one SNU network.

* :mod:`snubridge.validation.metrics`: van Rossum, Victor-Purpura, the
  coincidence factor Gamma and the similarity of mean activity, on the grid;
* :mod:`snubridge.validation.compare`: raster identity per layer, spike-count
  differences and the first divergence with its margin to threshold;
* :mod:`snubridge.validation.suites`: suite files in TOML and their runner,
  behind ``snubridge validate``;
* :mod:`snubridge.validation.plots`: raster and membrane pictures;
* :mod:`snubridge.validation.pytest_plugin`: ``assert_equivalent`` and the
  ``snu_equivalence`` fixture for users' own tests.

Submodules are imported on first use, so ``import snubridge.validation`` loads
neither TensorFlow nor Brian2.
"""

from __future__ import annotations
