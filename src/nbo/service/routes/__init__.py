"""One router per resource.

A handler's docstring is its operation's description in ``/openapi.json`` and the API
docs, up to a form feed (``\\f``, FastAPI's cut): what a client needs comes first, how
the handler runs and what was measured (notes for the code's readers) after the cut.
"""
