"""Thin build driver. The native core (csrc/, built by CMakeLists.txt) is added by the native-core
issue; until then this installs the pure-Python package and the Triton kernels."""
import os

from setuptools import find_packages, setup

TRITON = ["fusedopt.triton_kernels"] if os.path.isdir("triton_kernels") else []

setup(
    package_dir={"": "python", "fusedopt.triton_kernels": "triton_kernels"},
    packages=find_packages("python") + TRITON,
    package_data={"fusedopt.bench": ["*.json"]},
)
