"""Formatter: text, number and date/time conversions, like Zapier's Formatter.

Three actions, each told what to do by its ``transform`` field. The other fields depend on the
transform, and a zap file is checked against exactly that transform's fields::

    - id: name
      action: builtin.format_text
      input: {transform: titlecase, value: "{{ trigger.name }}"}

``format_text`` works on text (any value is turned into text first, nothing into ""),
``format_number`` on numbers, money and phone numbers, ``format_date`` on dates and times.
Results keep their natural type: lengths, counts and arithmetic give numbers, formatting gives
text. Extractions give null when nothing is found. Data that cannot be converted (a date that
is no date, an invalid phone number, a division by zero) fails the step with a PermanentError,
since a retry would not help.

The package holds one module per action: ``text``, ``numbers``, ``dates``; ``_common`` is how
a ``transform`` picks its input model, and the helpers all three use.
"""

# The actions register as their modules are imported, in the order the docs list them.
# isort: off
from connectors.builtin.formatter import text, numbers, dates  # noqa: F401

# isort: on
from connectors.builtin.formatter.dates import TimeZone

__all__ = ["TimeZone"]
