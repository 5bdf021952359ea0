"""Build the Cython balance cache (ledger_ext).

Environment switches (all off by default):
  ONECARD_CYTHON_ANNOTATE=1   write an HTML annotation next to each .pyx
  ONECARD_CYTHON_TRACE=1      compile with line tracing (for profilers and coverage)
  ONECARD_CYTHON_ASSERTS=1    keep C asserts (boundscheck on, no -DNDEBUG)
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "no")


annotate = _flag("ONECARD_CYTHON_ANNOTATE")
trace = _flag("ONECARD_CYTHON_TRACE")
asserts = _flag("ONECARD_CYTHON_ASSERTS")

macros: list[tuple[str, str]] = []
if trace:
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
if not asserts:
    macros.append(("NDEBUG", "1"))

extensions = [
    Extension(
        "ledger_ext._ledger",
        ["ledger_ext/_ledger.pyx"],
        define_macros=macros,
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function", "-Wno-unreachable-code"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        annotate=annotate,
        language_level=3,
        compiler_directives={
            "boundscheck": asserts,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": asserts,
            "linetrace": trace,
            "profile": trace,
            "embedsignature": True,
        },
    )
)
