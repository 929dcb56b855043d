"""speechid: does this voice belong to that person? Answered at corpus scale.

Heavy parts (TensorFlow, FAISS) are imported lazily so ``speechid --help`` and the audio helpers stay fast.
"""

import os

# tensorflow-transform's transform layer and Beam's TF model handler are Keras 2: every entry point
# must see this before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_LAZY = {
    "Encoder": "speechid.model.encoder",
    "SpeakerIndex": "speechid.indexing",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'speechid' has no attribute {name!r}")


__all__ = ["Encoder", "SpeakerIndex", "__version__"]
