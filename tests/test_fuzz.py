"""Short seeded runs of the fuzz driver (tests/fuzz.py) for each structure; the driver
itself runs for as long as asked: python -m tests.fuzz all --seconds 600."""
import subprocess
import sys

import pytest

from . import fuzz


@pytest.mark.parametrize("structure", sorted(fuzz.FUZZERS))
@pytest.mark.parametrize("seed", [11, 2026])
def test_fuzz_structure_against_its_oracle(structure, seed):
    # (on failure the seed, episode, operations and reproducer are printed to stderr)
    assert fuzz.run(structure, 2.0, seed, quiet=True) >= 1


def test_fuzz_episode_is_deterministic():
    a = fuzz.Episode("hashmap", 5, 3, 50)
    fuzz.fuzz_hashmap(a)
    b = fuzz.Episode("hashmap", 5, 3, 50)
    fuzz.fuzz_hashmap(b)
    assert a.log == b.log and len(a.log) == 50


def test_fuzz_reports_a_failure_with_a_reproducer(monkeypatch, capsys):
    def broken(m, k, v):            # an oracle mismatch: the map gets another value
        m[k] = v if isinstance(m, dict) else "wrong"

    monkeypatch.setattr(fuzz, "op_set", broken)
    with pytest.raises(fuzz.FuzzFailure):
        fuzz.run("hashmap", 0, 7, episode=0)
    err = capsys.readouterr().err
    assert "FAIL hashmap seed=7 episode=0" in err
    assert "reproduce: python -m tests.fuzz hashmap --seed 7 --episode 0" in err


def test_fuzz_command_line():
    r = subprocess.run([sys.executable, "-m", "tests.fuzz", "all", "--seconds", "0.2",
                        "--seed", "3", "--ops", "40"], capture_output=True, text=True,
                       timeout=300, cwd=fuzz.__file__.rsplit("/tests/", 1)[0])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "seed 3"
    for s in fuzz.FUZZERS:
        assert f"{s}: seed 3," in r.stdout
