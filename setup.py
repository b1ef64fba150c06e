"""Build script: the Cython extensions and the package layout.

The repository keeps the four layers in their own top-level folders (``winhv/``, ``drivers/``,
``plugins/``, ``vsp_vsc_pairs/``) but installs them as one import package, ``winhv``, so that
nothing generic like ``drivers`` or ``plugins`` lands at the top of ``site-packages``:

==================  =========================
folder              import name
==================  =========================
``winhv/``          ``winhv``
``drivers/``        ``winhv.drivers``
``plugins/``        ``winhv.plugins``
``vsp_vsc_pairs/``  ``winhv.vsp_vsc_pairs``
==================  =========================

Every ``*.pyx`` under those folders is compiled; generated C is never committed.
"""

from __future__ import annotations

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

HERE = Path(__file__).resolve().parent
LAYOUT = {
    "winhv": "winhv",
    "winhv.drivers": "drivers",
    "winhv.plugins": "plugins",
    "winhv.vsp_vsc_pairs": "vsp_vsc_pairs",
}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for name, folder in LAYOUT.items():
        packages.append(name)
        package_dir[name] = folder
        for sub in find_packages(where=folder):
            packages.append(f"{name}.{sub}")
            package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"
    return packages, package_dir


def _extensions() -> list[Extension]:
    extensions = []
    for name, folder in LAYOUT.items():
        for pyx in sorted((HERE / folder).rglob("*.pyx")):
            rel = pyx.relative_to(HERE / folder).with_suffix("")
            module = ".".join((name, *rel.parts))
            extensions.append(
                Extension(
                    module,
                    [str(pyx.relative_to(HERE))],
                    include_dirs=[str(HERE / "winhv" / "include")],
                    extra_compile_args=["-O2"],
                )
            )
    return extensions


packages, package_dir = _packages()
setup(
    packages=packages,
    package_dir=package_dir,
    ext_modules=cythonize(
        _extensions(),
        # cimports use the installed names (``winhv.drivers...``); map them to the folders.
        include_path=[str(HERE)],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
        annotate=bool(os.environ.get("WINHV_CYTHON_ANNOTATE")),
    ),
)
