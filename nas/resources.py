"""Where the bundled YAML folders are: inside an installed wheel, or at the top of a checkout."""

from __future__ import annotations

from pathlib import Path

import nas


def data_dir(kind: str) -> Path:
    """The folder ``search_spaces`` or ``hardware_profiles``.

    A wheel carries them as ``nas/_data/<kind>`` (hatchling force-include); a checkout or editable install
    has them next to the ``nas`` package.
    """
    package = Path(nas.__file__).parent
    for candidate in (package / "_data" / kind, package.parent / kind):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"bundled folder '{kind}' not found next to {package}; the installation is incomplete")
