"""Loader of the engine's compiled twins (``streaming/_*_compiled.pyx``, built by setup.py where a C compiler is).

Each twin mirrors pure-Python code that stays the reference (``streaming.windows``,
``streaming.online_native``) and gives the same results; tests compare the two.
"""

from __future__ import annotations

import hashlib
import importlib
import warnings
from pathlib import Path
from types import ModuleType


def load(name: str) -> ModuleType | None:
    """``streaming.<name>`` if it was built, from the ``.pyx`` beside it as that file is now; else None."""
    try:
        module = importlib.import_module(f"streaming.{name}")
    except ImportError:
        return None
    source = Path(__file__).with_name(f"{name}.pyx")
    # In a source checkout, a build older than its source would run old rules: refuse it.
    if source.exists() and hashlib.sha1(source.read_bytes()).hexdigest() != module.SOURCE_SHA1:
        how = "from an older" if module.SOURCE_SHA1 else "without the hash setup.py records of"
        warnings.warn(f"{module.__file__} was built {how} {source.name}; using the Python code until it "
                      "is rebuilt (pip install -e . or make install)", RuntimeWarning, stacklevel=2)
        return None
    return module
