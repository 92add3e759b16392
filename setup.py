"""Builds the engine's compiled twins (``streaming/_*_compiled.pyx``); all other metadata is in pyproject.toml.

The extensions are optional: without a C compiler the install still succeeds, and the engine runs
the pure-Python code they mirror (``streaming.windows``, ``streaming.online_native``), which gives
the same results.
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # a build without its build requirements (--no-build-isolation): the Python code only
    cythonize = None


def extension(source: Path) -> Extension:
    # The build records its source's hash; streaming.compiled refuses a build older than the source beside it.
    sha1 = hashlib.sha1(source.read_bytes()).hexdigest()
    return Extension(f"streaming.{source.stem}", [str(source)], define_macros=[("RTML_SOURCE_SHA1", f'"{sha1}"')],
                     extra_compile_args=["-O2"], optional=True)


SOURCES = sorted(Path("streaming").glob("_*_compiled.pyx"))
setup(ext_modules=cythonize([extension(p) for p in SOURCES], compiler_directives={"language_level": 3}, quiet=True)
      if cythonize is not None else [])
