"""Corpus makers: speaker-labelled audio -> releases in Common Voice layout (see ``release``).

``fotaq`` and ``drascula`` read the voice acting of two freeware games packaged by Debian; ``folder``
reads any folder of audio with a path/speaker TSV. The synthetic corpus lives in ``speechid.corpora.synth``.
"""
