"""flowbook in Jupyter: the IPython extension, its magics and widgets, and the server extension.

``flowbook.jupyter`` (but for ``server/``) is the only package of flowbook that imports
IPython, ipywidgets or anywidget; it is imported by ``%load_ext flowbook``
(``flowbook.load_ipython_extension``), never by ``import flowbook``. ``flowbook.jupyter.server``
is the Jupyter server extension, loaded by the server; it imports jupyter_server and tornado,
never IPython or ipykernel.
"""
