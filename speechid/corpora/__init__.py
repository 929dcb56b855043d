"""Corpus makers: speaker-labelled audio -> releases in Common Voice layout (see ``release``).

``fotaq``, ``bass`` and ``drascula`` read the voice acting of freeware games packaged by Debian,
``asterisk`` and ``kdeedu`` the recorded voices of other Debian packages (``recipes`` names them all);
``folder`` reads any folder of audio with a path/speaker TSV. Each recipe's docstring says where its format
was documented. The synthetic corpus is ``synth`` (its voices: ``voices``).
"""
