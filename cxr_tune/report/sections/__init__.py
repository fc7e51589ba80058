"""The report's sections, one module per part of the report, in the order ``build.py`` puts
them."""
