# setuptools has no pyproject key for cffi_modules; everything else is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["native/build_shim.py:ffibuilder", "native/build_sim.py:ffibuilder"])
