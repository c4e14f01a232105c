"""lightnas: hardware-aware search for small, fast language models.

Importing :mod:`nas` is cheap: torch, TVM, Ray and MLflow load only where they are used.
"""

from __future__ import annotations

import warnings

__version__ = "0.1.0"

# torch.export's pytree pickling warns about its own deprecated LeafSpec on every export (torch 2.13): noise.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
