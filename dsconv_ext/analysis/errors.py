"""The one exception type the analysis raises for bad input (missing or corrupt files, sources
with no depthwise filters, non-finite filters). The CLI turns it into one line on stderr and
exit code 2; anything else escaping the analysis is a bug and keeps its traceback."""


class AnalysisInputError(ValueError):
    """The source cannot be analysed; the message says why in one line, for a user."""
