"""How many SMS segments a text costs (CINNOX charges per SMS segment).

A text that fits the GSM 7-bit default alphabet is sent as GSM-7: 160 septets in one SMS, 153
per part once it has to be split (the user data header takes 7). Any other character forces the
whole text to UCS-2 (UTF-16 on today's networks): 70 code units in one SMS, 67 per part. This is
the seed's "English: 160 characters; Chinese: 70 characters".

Counting follows the standard, not ``len(text)``:

- GSM-7 characters of the extension table are sent as ESC + character, so count 2 septets;
- UTF-16 characters outside the Basic Multilingual Plane (most emoji) are a surrogate pair,
  so count 2 units;
- a part never ends in the middle of an ESC pair or a surrogate pair (encoders move the whole
  character to the next part), so a long text may need one part more than
  ``ceil(characters / per_segment)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# 3GPP TS 23.038 (formerly GSM 03.38) §6.2.1, "GSM 7 bit Default Alphabet", in code order
# 0x00-0x7F. 0x1B is the escape to the extension table, not a character, so it is left out.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"  # 0x00-0x0F
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"  # 0x10-0x1F, less 0x1B (ESC) between Ξ and Æ
    " !\"#¤%&'()*+,-./"  # 0x20-0x2F
    "0123456789:;<=>?"  # 0x30-0x3F
    "¡ABCDEFGHIJKLMNO"  # 0x40-0x4F
    "PQRSTUVWXYZÄÖÑÜ§"  # 0x50-0x5F
    "¿abcdefghijklmno"  # 0x60-0x6F
    "pqrstuvwxyzäöñüà"  # 0x70-0x7F
)
# 3GPP TS 23.038 §6.2.1.1, "GSM 7 bit default alphabet extension table": each is sent as
# ESC (0x1B) + code, i.e. two septets. Form feed 0x0A, ^ 0x14, { 0x28, } 0x29, \ 0x2F,
# [ 0x3C, ~ 0x3D, ] 0x3E, | 0x40, € 0x65.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class SmsCost:
    """What a text costs as SMS."""

    encoding: Literal["GSM-7", "UCS-2"]
    characters: int
    """Length in the encoding's units: GSM-7 septets (extension characters count 2) or UTF-16
    code units (characters beyond the BMP, such as emoji, count 2)."""
    segments: int
    """SMS messages charged; 0 for an empty text."""
    per_segment: int
    """Units that fit in each segment: 160 / 70 for a single SMS, 153 / 67 for a split one."""


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM-7 default alphabet or its extension."""
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def _units(char: str, encoding: str) -> int:
    if encoding == "GSM-7":
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def segments(text: str) -> SmsCost:
    """The encoding, length, number of SMS segments and segment size of ``text``."""
    encoding: Literal["GSM-7", "UCS-2"] = "GSM-7" if is_gsm7(text) else "UCS-2"
    single, part = (GSM7_SINGLE, GSM7_PART) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_PART)
    units = [_units(c, encoding) for c in text]
    total = sum(units)
    if total == 0:
        return SmsCost(encoding, 0, 0, single)
    if total <= single:
        return SmsCost(encoding, total, 1, single)
    count, used = 1, 0
    for size in units:
        if used + size > part:  # the character does not fit whole: it starts the next part
            count, used = count + 1, 0
        used += size
    return SmsCost(encoding, total, count, part)
