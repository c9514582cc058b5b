"""Thin build driver. The native core (csrc/, built by CMakeLists.txt) is added by the native-core
issue; until then this installs the pure-Python package and the Triton kernels."""
from setuptools import setup

setup(
    package_dir={"fusedopt": "python/fusedopt", "fusedopt.triton_kernels": "triton_kernels"},
    packages=[
        "fusedopt", "fusedopt.reference", "fusedopt.optim", "fusedopt.backends",
        "fusedopt.bench", "fusedopt.papers", "fusedopt.triton_kernels",
    ],
    package_data={"fusedopt.bench": ["*.json"]},
)
