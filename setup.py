"""Build of the optional C accelerator; everything else is in pyproject.toml.

``optional=True``: without a C compiler or Python headers the build warns and the
package installs without it (the blocking sockets then use pure pyzmq calls). The wheel
is still tagged for the platform and interpreter it was built on.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class _BuildExt(build_ext):
    """Optimise with the flag the compiler understands (``-O2``, or ``/O2`` for MSVC)."""

    def build_extensions(self) -> None:
        flag = "/O2" if self.compiler.compiler_type == "msvc" else "-O2"
        for extension in self.extensions:
            extension.extra_compile_args = [flag]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "transportkit.zmq_backend._accel_c",
            ["src/transportkit/zmq_backend/_accel_c.c"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": _BuildExt},
)
