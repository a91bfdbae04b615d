"""anywidget widgets: the run view and the cache explorer (front ends in ``static/``)."""
