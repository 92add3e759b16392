"""Builds the compiled window kernels (``streaming/_windows_compiled.pyx``); all other metadata is in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds, and the engine runs
``streaming.windows``' pure-Python kernels, which give the same results.
"""

import hashlib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

SOURCE = Path("streaming/_windows_compiled.pyx")
# The build records its source's hash; streaming.windows refuses a build older than the source beside it.
SOURCE_SHA1 = hashlib.sha1(SOURCE.read_bytes()).hexdigest()

setup(ext_modules=cythonize(
    [Extension("streaming._windows_compiled", [str(SOURCE)], define_macros=[("RTML_SOURCE_SHA1", f'"{SOURCE_SHA1}"')],
               extra_compile_args=["-O2"], optional=True)],
    compiler_directives={"language_level": 3}, quiet=True))
