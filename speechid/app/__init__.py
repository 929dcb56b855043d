"""The application on top of the library: the ``speechid`` command (``cli``, one module per part in
``commands/``), the demo (synthetic and real voices) and its HTML report. Nothing below imports from here."""
