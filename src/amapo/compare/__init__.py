"""``amapo compare``: train several methods on the same data and budget, evaluate each, write one report.

``config``  its options and each run's measurements; ``run`` the runs; ``report`` the Markdown report and figures.
"""
