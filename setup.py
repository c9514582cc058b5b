"""Thin build driver. The native core (csrc/, built by CMakeLists.txt) is added by the native-core
issue; until then this installs the pure-Python package and the Triton kernels."""
from setuptools import find_packages, setup

setup(
    package_dir={"": "python", "fusedopt.triton_kernels": "triton_kernels"},
    packages=find_packages("python") + ["fusedopt.triton_kernels"],
    package_data={"fusedopt.bench": ["*.json"]},
)
