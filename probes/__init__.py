"""probe-future: do language models prepare information for future tokens?"""

__version__ = "0.1.0"
