import math

import pytest

from bytecache import format_size, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [
        ("512MiB", 512 * 2**20),
        ("2GB", 2 * 10**9),
        ("1.5 GiB", 3 * 2**29),
        ("800kB", 800_000),
        ("4096", 4096),
        ("4096b", 4096),
        ("1 kib", 1024),
        ("  3 TiB ", 3 * 2**40),
        ("2g", 2 * 10**9),
        (".5KiB", 512),
        (123, 123),
    ],
)
def test_parse_size_accepts_binary_and_si_units_case_insensitively(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["12 parsecs", "", "-5MiB", "MiB", "1.2.3", "0.3 B", 0, -1, "0"])
def test_parse_size_rejects_with_the_setting_name_and_value(bad):
    with pytest.raises(ValueError) as info:
        parse_size(bad, name="[scheduler] dag_cache_max_bytes")
    assert "[scheduler] dag_cache_max_bytes" in str(info.value)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", [True, False, None, [], 1.5j])
def test_parse_size_rejects_non_numbers_with_type_error(bad):
    with pytest.raises(TypeError, match="maxsize"):
        parse_size(bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1.5])
def test_parse_size_rejects_non_whole_floats(bad):
    with pytest.raises(ValueError, match="maxsize"):
        parse_size(bad)


def test_zero_is_allowed_only_when_asked_for():
    assert parse_size("0", allow_zero=True) == 0
    assert parse_size(0, allow_zero=True) == 0
    with pytest.raises(ValueError, match=">= 0"):
        parse_size(-1, allow_zero=True)


def test_format_size_is_readable_and_parses_back_within_rounding():
    assert format_size(512 * 2**20) == "512.0 MiB"
    assert format_size(100) == "100 B"
    for n in (1, 1023, 1024, 1536, 512 * 2**20, 3 * 2**40, 123_456_789):
        number, unit = format_size(n).split()
        approx = float(number) * {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[unit]
        assert abs(approx - n) <= 0.0005 * n + 1
