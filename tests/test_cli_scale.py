"""The commands that walk the cache do it in C, a page at a time: list
streams, show PREFIX reads a key range, stats totals and prune run over the
cursor. These tests check that what they say is right, across pages and
batches; their speed at a million entries is in `make bench`."""
import json
import random
import time

import pytest

from devstash import __main__ as cli_main
from devstash import _cli_common, _cli_entries, _core

NOW = time.time()


def fill(folder, n, seed=1):
    """n entries: sizes 10..109, a third with a 1 h ttl (some created in the
    future), every fifth hit; sites spread over 7 files and 13 lines."""
    rng = random.Random(seed)
    made = []
    with _core.Store(str(folder)) as store:
        for i in range(n):
            key = rng.randbytes(16)
            created = NOW + 7200 if i % 97 == 0 else NOW - rng.random() * 7200
            ttl = 3600.0 if i % 3 == 0 else 0.0
            size = 10 + i % 100
            site = f"/p/script_{i % 7}.py:{i % 13 + 1}"
            store.put(key, b"v" * size, created=created, ttl=ttl, compute=0.25,
                      callee=f"m.f{i % 5}", site=site)
            hits = 2 if i % 5 == 0 else 0
            for _ in range(hits):
                store.note_hit(key, NOW - i)
            made.append({"key": key, "size": size, "created": created, "ttl": ttl, "site": site,
                         "hits": hits, "last_hit": NOW - i if hits else 0.0})
    return made


def run_cli(capsys, monkeypatch, folder, *args):
    monkeypatch.setenv("DEVSTASH_CACHE_DIR", str(folder))
    code = cli_main.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def expired(e, now):
    return e["ttl"] > 0 and (now >= e["created"] + e["ttl"] or e["created"] > now)


def test_scan_pages_prefixes_and_totals_agree_with_the_entries(tmp_path):
    made = fill(tmp_path / "c", 2500)
    keys = sorted(e["key"] for e in made)
    with _core.Store(str(tmp_path / "c"), readonly=True) as store:
        assert [m["key"] for m in store.entries()] == keys
        page = store.scan(after=keys[99], limit=50)
        assert [m["key"] for m in page] == keys[100:150]
        assert store.scan(after=keys[-1]) == [] and store.scan(limit=0) == []
        for prefix in ("", "0", "a7", "e3f", keys[5].hex()[:9], keys[5].hex()):
            want = [k for k in keys if k.hex().startswith(prefix)]
            assert [m["key"] for m in store.scan(prefix=prefix)] == want, prefix
            assert [m["key"] for m in store.scan(prefix=prefix.upper(), limit=2)] == want[:2]
        with pytest.raises(ValueError, match="hex key prefix"):
            store.scan(prefix="0x")
        with pytest.raises(ValueError, match="16-byte"):
            store.scan(after=b"short")
        now = time.time()
        assert store.totals(now) == {
            "entries": 2500, "size": sum(e["size"] for e in made),
            "hits": sum(e["hits"] for e in made),
            "saved": pytest.approx(sum(0.25 * e["hits"] for e in made)),
            "expired": sum(expired(e, now) for e in made),
            "sites": len({e["site"] for e in made}),
        }


def test_list_streams_every_entry_across_pages_in_key_order(tmp_path, capsys, monkeypatch):
    made = fill(tmp_path / "c", 2500)
    monkeypatch.setattr(_cli_entries, "SORTED_LIMIT", 100)   # stream, as a big cache does
    monkeypatch.setattr(_cli_entries, "WIDTH_ROWS", 10)
    monkeypatch.setattr(_cli_common, "PAGE", 300)
    code, out, _ = run_cli(capsys, monkeypatch, tmp_path / "c", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["KEY", "CALLEE", "SITE"]
    assert [line.split()[0] for line in lines[1:-1]] == [k.hex()[:12] for k in sorted(e["key"] for e in made)]
    assert lines[-1].startswith("2500 entries")
    code, out, _ = run_cli(capsys, monkeypatch, tmp_path / "c", "list", "--json")
    listed = json.loads(out)
    assert [e["key"] for e in listed] == sorted(e["key"].hex() for e in made)
    assert sum(e["hits"] for e in listed) == sum(e["hits"] for e in made)
    code, out, _ = run_cli(capsys, monkeypatch, tmp_path / "c", "list", "--json", "--site", "/p/script_3.py:4")
    assert len(json.loads(out)) == sum(e["site"] == "/p/script_3.py:4" for e in made) > 0


def test_list_of_a_small_cache_sorts_by_site_and_json_matches_json_dumps(tmp_path, capsys, monkeypatch):
    fill(tmp_path / "c", 60)
    code, out, _ = run_cli(capsys, monkeypatch, tmp_path / "c", "list", "--json")
    listed = json.loads(out)
    assert out == json.dumps(listed, indent=2) + "\n"
    assert [(e["file"], e["line"]) for e in listed] == sorted((e["file"], e["line"]) for e in listed)
    (tmp_path / "empty").mkdir()
    _core.Store(str(tmp_path / "empty")).close()
    code, out, _ = run_cli(capsys, monkeypatch, tmp_path / "empty", "list", "--json")
    assert out == "[]\n"


def test_show_takes_a_prefix_of_any_length(tmp_path, capsys, monkeypatch):
    made = fill(tmp_path / "c", 500)
    key = made[7]["key"].hex()
    for n in (5, 11, 32):
        code, out, _ = run_cli(capsys, monkeypatch, tmp_path / "c", "show", key[:n])
        assert code == 0 and out.splitlines()[0] == f"key      {key}"
    shared = key[:1]
    many = sum(e["key"].hex().startswith(shared) for e in made)
    code, _, err = run_cli(capsys, monkeypatch, tmp_path / "c", "show", shared)
    assert code == 1 and f"key prefix {shared} matches {many} entries" in err
    absent = next(p for p in (f"{i:03x}" for i in range(4096)) if not any(e["key"].hex().startswith(p) for e in made))
    code, _, err = run_cli(capsys, monkeypatch, tmp_path / "c", "show", absent)
    assert code == 1 and f"no entry with key {absent}" in err


def test_stats_totals(tmp_path, capsys, monkeypatch):
    made = fill(tmp_path / "c", 700)
    code, out, _ = run_cli(capsys, monkeypatch, tmp_path / "c", "stats", "--json")
    stats = json.loads(out)
    now = time.time()
    assert (stats["entries"], stats["size"], stats["hits"], stats["sites"]) == (
        700, sum(e["size"] for e in made), sum(e["hits"] for e in made), len({e["site"] for e in made}))
    assert stats["expired"] == sum(expired(e, now) for e in made)


def test_prune_removes_least_recently_hit_first_across_batches(tmp_path, capsys, monkeypatch):
    made = fill(tmp_path / "c", 45_000)   # more than one write batch of deletes (20,000)
    total = sum(e["size"] for e in made)
    limit = total // 3
    order = sorted(made, key=lambda e: (e["last_hit"], e["created"], e["key"]))
    left, cut = total, 0
    while left > limit:
        left -= order[cut]["size"]
        cut += 1
    code, out, _ = run_cli(capsys, monkeypatch, tmp_path / "c", "prune", "--max-size", str(limit))
    assert code == 0 and out.startswith(f"removed {cut} entries")
    with _core.Store(str(tmp_path / "c"), readonly=True) as store:
        assert {m["key"] for m in store.entries()} == {e["key"] for e in order[cut:]}
        assert store.count() == len(made) - cut
    code, out, _ = run_cli(capsys, monkeypatch, tmp_path / "c", "prune", "--max-size", str(limit))
    assert out.startswith("nothing to prune")
