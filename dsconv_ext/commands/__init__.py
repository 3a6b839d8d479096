"""Sub-commands of ``dsconv-ext``: every module here defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; ``dsconv_ext.cli`` discovers them."""
