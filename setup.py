"""speechid: one package namespace over the repository's root folders.

The three parts stand at the root (pipelines/, model/, indexing/) but import under ``speechid`` so nothing
with a generic name lands in site-packages. ``--setup_file ./setup.py`` ships this same package to
Dataflow workers.
"""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "speechid" / "__init__.py").read_text()).group(1)

setup(
    name="speechid",
    version=VERSION,
    description="Speaker identity at corpus scale: Beam prep, LSTM triplet embedder, FAISS dedup.",
    license="Apache-2.0",
    license_files=["LICENSE"],
    python_requires=">=3.11,<3.13",
    packages=[
        "speechid",
        "speechid.app",
        "speechid.app.commands",
        "speechid.corpora",
        "speechid.pipelines",
        "speechid.model",
        "speechid.indexing",
    ],
    package_dir={
        "speechid": "speechid",
        "speechid.app": "speechid/app",
        "speechid.app.commands": "speechid/app/commands",
        "speechid.corpora": "speechid/corpora",
        "speechid.pipelines": "pipelines",
        "speechid.model": "model",
        "speechid.indexing": "indexing",
    },
    # Workers on Dataflow install these; the exact pins live in requirements.txt.
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "apache-beam[gcp]>=2.77,<2.78",
        "tensorflow-transform>=1.21,<1.22",
        "tensorflow-hub==0.16.1",
        "faiss-cpu>=1.15,<1.16",
        "pyarrow<26",
        "soundfile>=0.13",
        "soxr>=0.5",
        "rapidgzip>=0.16,<0.17",
        "numpy",
        "scipy",
        "click>=8",
        "matplotlib",
    ],
    # The dask.distributed runner (--runner DaskRunner); requirements.txt pins them with the rest.
    extras_require={"dask": ["dask>=2024.4.2", "distributed>=2024.4.2"]},
    entry_points={"console_scripts": ["speechid=speechid.app.cli:main"]},
)
