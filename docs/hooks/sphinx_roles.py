"""MkDocs hook: the library's docstrings cross-reference with Sphinx roles (:func:`x`, :class:`~.y`), which
mkdocstrings renders as a literal ``:func:`` before the code span; drop the role and the ``~`` shortening
marker so the API reference reads as plain code names."""
import re

_ROLE = re.compile(r":(?:func|mod|class|meth|data|attr|exc|obj):(?=<code>)")
_TILDE = re.compile(r"<code>~")


def on_page_content(html, **kwargs):
    return _TILDE.sub("<code>", _ROLE.sub("", html))
