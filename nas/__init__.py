"""lightnas: hardware-aware search for small, fast language models.

Importing :mod:`nas` is cheap: torch, TVM, Ray and MLflow load only where they are used.
"""

from __future__ import annotations

__version__ = "0.1.0"
