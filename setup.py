"""Build script: everything is in setup.cfg except the one mapping setup.cfg cannot express.

The shipped configs live once in git, at the repository's top level (``configs/``, where users
look for them); the wheel carries them as the package data ``detector/configs`` so that config
names (``cspdet train --cfg csppelee_efm_sam``) work from any folder after ``pip install .``.
"""
from pathlib import Path

from setuptools import find_packages, setup

CONFIG_PACKAGES = ["detector.configs"] + [
    "detector.configs." + p.name for p in sorted(Path("configs").iterdir()) if p.is_dir()]

setup(
    packages=find_packages(include=["detector", "detector.*"]) + CONFIG_PACKAGES,
    package_dir={pkg: pkg.replace("detector.configs", "configs", 1).replace(".", "/")
                 for pkg in CONFIG_PACKAGES},
    package_data={pkg: ["*.yaml"] for pkg in CONFIG_PACKAGES},
)
