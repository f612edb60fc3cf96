"""The interactive explorer (``python -m forensics app``): a thin Gradio page over the library.

- :mod:`.sources`: what can be chosen (detectors, methods and their options, data-set images) and the upload
  checks; no Gradio.
- :mod:`.session`: one ``Explain`` click through the library (verdicts, maps, figures, downloads); no Gradio.
- :mod:`.ui`: the page itself (imports Gradio: the ``app`` extra).
"""
