"""Embed clips with the pretrained peer, Resemblyzer (a GE2E LSTM whose weights ship in its PyPI wheel).

    python benchmarks/peer_resemblyzer.py IN.npz OUT.npy

IN.npz holds ``rate`` and ``clip_<i>`` float32 mono waveforms; OUT.npy gets their unit embeddings [n, 256]
in the same order. Run by ``bench_quality.py`` in the interpreter that has the peer installed
(``pip install -r benchmarks/requirements-bench.txt`` in a separate venv): torch never enters speechid's
own environment.
"""

import sys

import numpy as np


def main(src: str, dst: str) -> None:
    from resemblyzer import VoiceEncoder, preprocess_wav

    data = np.load(src)
    rate = int(data["rate"])
    n = sum(1 for k in data.files if k.startswith("clip_"))
    encoder = VoiceEncoder("cpu", verbose=False)
    out = np.zeros((n, 256), np.float32)
    for i in range(n):
        wav = preprocess_wav(data[f"clip_{i}"].astype(np.float32), source_sr=rate)
        if len(wav) < 1600:  # its VAD removed (almost) everything: use the clip as it is
            wav = data[f"clip_{i}"].astype(np.float32)
        out[i] = encoder.embed_utterance(wav)
    np.save(dst, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
