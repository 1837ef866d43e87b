"""Build of the optional C accelerator; everything else is in pyproject.toml.

``optional=True``: without a C compiler or Python headers the build warns and the
package installs without it (the blocking sockets then use pure pyzmq calls).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "transportkit.zmq_backend._accel_c",
            ["src/transportkit/zmq_backend/_accel_c.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
