"""Marker options ("ttl=1h30m refresh nocode") and the duration grammar."""
import pytest

from devstash import _core

DURATION_HELP = (
    "expected one or more <integer><unit> groups such as 30m or 1h30m, "
    "with units s, m, h, d, w"
)
ALLOWED = "ttl=DURATION, refresh, nocode, nofiles, ignore=NAME[,NAME...]"
MAX_SECONDS = 36525 * 86400  # 100 years


def options(ttl=0.0, refresh=False, nocode=False, nofiles=False, ignore=()):
    return {"ttl": ttl, "flags": (1 if refresh else 0) | (2 if nocode else 0) | (4 if nofiles else 0),
            "refresh": refresh, "nocode": nocode, "nofiles": nofiles, "ignore": ignore}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", options()),
        ("   \t ", options()),
        ("refresh", options(refresh=True)),
        ("nocode", options(nocode=True)),
        ("refresh nocode", options(refresh=True, nocode=True)),
        ("nofiles", options(nofiles=True)),
        ("ignore=self", options(ignore=("self",))),
        ("ignore=session,verbose ttl=1d", options(ttl=86400.0, ignore=("session", "verbose"))),
        ("ignore=_x1", options(ignore=("_x1",))),
        ("nocode\trefresh", options(refresh=True, nocode=True)),
        ("ttl=30m", options(ttl=1800.0)),
        ("ttl=1h30m", options(ttl=5400.0)),
        ("ttl=2d", options(ttl=172800.0)),
        ("ttl=1w", options(ttl=604800.0)),
        ("ttl=45s", options(ttl=45.0)),
        ("ttl=1w2d3h4m5s", options(ttl=604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5.0)),
        ("ttl=30m1h", options(ttl=5400.0)),  # groups add up in any order
        ("ttl=1h1h", options(ttl=7200.0)),
        ("ttl=007m", options(ttl=420.0)),
        ("ttl=0h5m", options(ttl=300.0)),  # a zero group is fine when the total is not
        ("ttl=36525d", options(ttl=float(MAX_SECONDS))),  # exactly the limit
        ("  ttl=1d   refresh   nocode  ", options(ttl=86400.0, refresh=True, nocode=True)),
        ("nocode ttl=10s", options(ttl=10.0, nocode=True)),
    ],
)
def test_valid_options(text, expected):
    result = _core.parse_options(text)
    assert result == expected
    assert type(result["ttl"]) is float and type(result["flags"]) is int
    assert type(result["refresh"]) is bool and type(result["nocode"]) is bool


def invalid_ttl(value):
    return f"invalid ttl '{value}': {DURATION_HELP}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("fast", f"unknown option 'fast': allowed options are {ALLOWED}"),
        ("ttl=1d fast", f"unknown option 'fast': allowed options are {ALLOWED}"),
        ("TTL=1d", f"unknown option 'TTL=1d': allowed options are {ALLOWED}"),
        ("Refresh", f"unknown option 'Refresh': allowed options are {ALLOWED}"),
        ("ttl:1d", f"unknown option 'ttl:1d': allowed options are {ALLOWED}"),
        ("=", f"unknown option '=': allowed options are {ALLOWED}"),
        ("#", f"unknown option '#': allowed options are {ALLOWED}"),
        ("refresh refresh", f"duplicate option 'refresh': give each of {ALLOWED} at most once"),
        ("nocode ttl=1d nocode", f"duplicate option 'nocode': give each of {ALLOWED} at most once"),
        ("ttl=1d ttl=2d", f"duplicate option 'ttl=2d': give each of {ALLOWED} at most once"),
        ("ttl=1d ttl=soon", f"duplicate option 'ttl=soon': give each of {ALLOWED} at most once"),
        ("ttl", "option 'ttl' needs a value: write ttl=DURATION such as ttl=30m or ttl=1h30m, with units s, m, h, d, w"),
        ("ttl=", "option 'ttl=' needs a value: write ttl=DURATION such as ttl=30m or ttl=1h30m, with units s, m, h, d, w"),
        ("ttl = 1d", "option 'ttl' needs a value: write ttl=DURATION such as ttl=30m or ttl=1h30m, with units s, m, h, d, w"),
        ("refresh=yes", "option 'refresh=yes' takes no value: write refresh alone"),
        ("nocode=1", "option 'nocode=1' takes no value: write nocode alone"),
        ("ttl=soon", invalid_ttl("soon")),
        ("ttl=5x", invalid_ttl("5x")),
        ("ttl=1.5h", invalid_ttl("1.5h")),
        ("ttl=-1m", invalid_ttl("-1m")),
        ("ttl=+1m", invalid_ttl("+1m")),
        ("ttl=h", invalid_ttl("h")),
        ("ttl=10", invalid_ttl("10")),
        ("ttl=1h30", invalid_ttl("1h30")),
        ("ttl=1H", invalid_ttl("1H")),
        ("ttl=1hh", invalid_ttl("1hh")),
        ("ttl==1h", invalid_ttl("=1h")),
        ("ttl=1d,refresh", invalid_ttl("1d,refresh")),
        ("ttl=１h", invalid_ttl("１h")),  # a full-width digit is not a digit here
        ("ttl=0s", "invalid ttl '0s': a duration must be longer than zero, such as 30m or 1h30m"),
        ("ttl=0h0m", "invalid ttl '0h0m': a duration must be longer than zero, such as 30m or 1h30m"),
        ("ignore", "option 'ignore' needs a value: write ignore=NAME[,NAME...] with the argument names (or self) to leave out of the key"),
        ("ignore=a,,b", "option 'ignore=a,,b': ignore= takes argument names (identifiers, or self) separated by commas, such as ignore=session or ignore=self,verbose"),
        ("ignore=1x", "option 'ignore=1x': ignore= takes argument names (identifiers, or self) separated by commas, such as ignore=session or ignore=self,verbose"),
        ("ignore=a ignore=b", f"duplicate option 'ignore=b': give each of {ALLOWED} at most once"),
        ("nofiles=1", "option 'nofiles=1' takes no value: write nofiles alone"),
        ("ttl=36525d1s", "invalid ttl '36525d1s': the longest allowed duration is 100 years (36525d)"),
        ("ttl=5300w", "invalid ttl '5300w': the longest allowed duration is 100 years (36525d)"),
        ("ttl=99999999999999999999999999w",
         "invalid ttl '99999999999999999999999999w': the longest allowed duration is 100 years (36525d)"),
        ("ttl=18446744073709551617s",  # 2**64 + 1: must not wrap around
         "invalid ttl '18446744073709551617s': the longest allowed duration is 100 years (36525d)"),
    ],
)
def test_invalid_options(text, message):
    with pytest.raises(ValueError) as info:
        _core.parse_options(text)
    assert str(info.value) == message


def test_error_quotes_odd_words_safely():
    with pytest.raises(ValueError) as info:
        _core.parse_options("bad\x00\x1bword")
    assert str(info.value) == f"unknown option 'bad\\x00\\x1bword': allowed options are {ALLOWED}"
    with pytest.raises(ValueError) as info:
        _core.parse_options("x" * 500)
    assert str(info.value) == f"unknown option '{'x' * 40}...': allowed options are {ALLOWED}"
    with pytest.raises(ValueError) as info:
        _core.parse_options("é" * 50)
    assert str(info.value) == f"unknown option '{'é' * 40}...': allowed options are {ALLOWED}"
    with pytest.raises(ValueError) as info:
        _core.parse_options("ttl=\ufffd")
    assert str(info.value) == invalid_ttl("\ufffd")


def test_options_types():
    with pytest.raises(TypeError):
        _core.parse_options(b"refresh")
    with pytest.raises(TypeError):
        _core.parse_options(None)
    with pytest.raises(ValueError):  # UnicodeEncodeError is a ValueError
        _core.parse_options("\ud800")


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("1s", 1.0),
        ("30m", 1800.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("3w", 3 * 604800.0),
        ("1d12h", 129600.0),
        ("90s", 90.0),
        ("36525d", float(MAX_SECONDS)),
    ],
)
def test_parse_duration(text, seconds):
    result = _core.parse_duration(text)
    assert result == seconds and type(result) is float


def invalid_duration(value):
    return f"invalid duration '{value}': {DURATION_HELP}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", invalid_duration("")),
        ("soon", invalid_duration("soon")),
        ("5x", invalid_duration("5x")),
        ("1.5h", invalid_duration("1.5h")),
        ("-1m", invalid_duration("-1m")),
        ("h", invalid_duration("h")),
        ("10", invalid_duration("10")),
        (" 2d", invalid_duration(" 2d")),  # no white space anywhere
        ("1h 30m", invalid_duration("1h 30m")),
        ("ttl=2d", invalid_duration("ttl=2d")),
        ("0m", "invalid duration '0m': a duration must be longer than zero, such as 30m or 1h30m"),
        ("36526d", "invalid duration '36526d': the longest allowed duration is 100 years (36525d)"),
    ],
)
def test_parse_duration_errors(text, message):
    with pytest.raises(ValueError) as info:
        _core.parse_duration(text)
    assert str(info.value) == message


def test_parse_duration_types():
    with pytest.raises(TypeError):
        _core.parse_duration(b"2d")
    with pytest.raises(TypeError):
        _core.parse_duration(3600)


def test_no_leak():
    import tracemalloc

    def work():
        for _ in range(5000):
            _core.parse_options("ttl=1h refresh nocode")
            _core.parse_duration("2d")
            for bad in ("ttl=soon", "fast", 12):
                try:
                    _core.parse_options(bad)
                except (ValueError, TypeError):
                    pass

    work()  # warm up caches
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 20_000  # 20000 calls: a leak of even one object each shows
