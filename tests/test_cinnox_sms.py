"""SMS segment counting (3GPP TS 23.038 alphabets; 160/153 GSM-7, 70/67 UCS-2)."""

from __future__ import annotations

import pytest

from connectors.cinnox.sms import GSM7_BASIC, GSM7_EXTENSION, SmsCost, segments


@pytest.mark.parametrize(
    ("length", "expected", "per_segment"),
    [(1, 1, 160), (160, 1, 160), (161, 2, 153), (306, 2, 153), (307, 3, 153), (459, 3, 153)],
)
def test_gsm7_segments(length: int, expected: int, per_segment: int) -> None:
    cost = segments("a" * length)
    assert cost == SmsCost("GSM-7", length, expected, per_segment)


@pytest.mark.parametrize(
    ("length", "expected", "per_segment"), [(70, 1, 70), (71, 2, 67), (134, 2, 67), (135, 3, 67)]
)
def test_chinese_is_ucs2(length: int, expected: int, per_segment: int) -> None:
    cost = segments("你" * length)
    assert cost == SmsCost("UCS-2", length, expected, per_segment)


def test_empty_text_costs_nothing() -> None:
    assert segments("").segments == 0
    assert segments("").characters == 0


@pytest.mark.parametrize("char", sorted(GSM7_EXTENSION))
def test_extension_characters_count_two(char: str) -> None:
    cost = segments("a" * 10 + char)
    assert (cost.encoding, cost.characters) == ("GSM-7", 12)


def test_extension_character_can_tip_into_a_second_segment() -> None:
    assert segments("a" * 159).segments == 1
    assert segments("a" * 159 + "[").segments == 2  # 161 septets


def test_euro_stays_gsm7() -> None:
    text = "Total: €120, due 2026-03-05. Thank you!"
    assert segments(text) == SmsCost("GSM-7", len(text) + 1, 1, 160)


def test_a_character_outside_gsm7_forces_ucs2() -> None:
    assert segments("Total: €120 – due today").encoding == "UCS-2"  # en dash


def test_one_emoji_forces_ucs2_and_counts_two_units() -> None:
    text = "Your parcel has arrived 📦"
    cost = segments(text)
    assert cost.encoding == "UCS-2"
    assert cost.characters == len(text) + 1
    assert segments("a" * 69 + "😀") == SmsCost("UCS-2", 71, 2, 67)


def test_accented_letters_of_the_basic_set_stay_gsm7() -> None:
    assert segments("Café über Señor à Zürich, Åse Øyvind").encoding == "GSM-7"
    assert segments("ç").encoding == "UCS-2"  # only capital Ç (0x09) is in the basic set


def test_parts_do_not_split_an_escape_pair() -> None:
    # 306 septets would fit two parts of 153, but the € pair would straddle them.
    text = "a" * 152 + "€" + "a" * 152
    assert segments(text) == SmsCost("GSM-7", 306, 3, 153)
    assert segments("a" * 151 + "€" + "a" * 152).segments == 2


def test_parts_do_not_split_a_surrogate_pair() -> None:
    text = "你" * 66 + "😀" + "你" * 66  # 134 units, but the emoji would straddle parts
    assert segments(text) == SmsCost("UCS-2", 134, 3, 67)
    assert segments("你" * 65 + "😀" + "你" * 67).segments == 2


def test_alphabet_tables_have_the_standard_sizes() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes, less ESC
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert all(segments(c).encoding == "GSM-7" for c in GSM7_BASIC)
