"""flowbook in Jupyter: the IPython extension, its magics and widgets.

The only package of flowbook that imports IPython, ipywidgets or anywidget; it is imported by
``%load_ext flowbook`` (``flowbook.load_ipython_extension``), never by ``import flowbook``.
"""
