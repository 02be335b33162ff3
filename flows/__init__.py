"""The zapflow engine, in the order an event travels: zap model and loading (``model``,
``loader``), templates (``templating``), running a zap (``runtime``), compiling it into a
Prefect flow (``compiler``), run history (``history``) and the command line (``cli``).

Importing this package does not import Prefect, so validating zaps stays fast.
"""
