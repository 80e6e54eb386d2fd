# setuptools has no pyproject key for cffi_modules; everything else is in pyproject.toml.
from glob import glob

from setuptools import setup

setup(
    cffi_modules=["native/build_shim.py:ffibuilder", "native/build_sim.py:ffibuilder"],
    # policy profiles and the models they name land in <prefix>/share/recmg/policies
    # (recmg.config finds them)
    data_files=[("share/recmg/policies", sorted(glob("policies/*.toml") + glob("policies/*.onnx")
                                                + glob("policies/*.card.json")))],
)
