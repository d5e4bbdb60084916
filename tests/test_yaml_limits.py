"""Config files are read within limits: no alias bombs, no duplicate keys, no huge or deeply nested files,
UTF-8 only; every refusal is one ConfigError naming the file, and no error prints a whole value."""

from __future__ import annotations

import pytest

from recfound.config import ConfigError, load_config


def _config(tmp_path, text: str | bytes):
    path = tmp_path / "run.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_an_alias_bomb_is_refused_before_it_is_walked(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]  # 9^10 values expanded
    path = _config(tmp_path, "\n".join(lines) + "\nrun: *a9\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: refused: its aliases expand to more than 100,000 values"):
        load_config(path, check_paths=False)
    # Aliases that stay small are fine (and a list value in the wrong place is shown cut short).
    small = _config(tmp_path, "run:\n  name: &twelve [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]\n  seed: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(small, check_paths=False)
    assert caught.value.key == "run.name" and "..." in caught.value.reason and "12" not in caught.value.reason


def test_a_recursive_alias_and_deep_nesting_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"refused: an alias refers to a value that contains it"):
        load_config(_config(tmp_path, "run: &r [*r]\n"), check_paths=False)
    for depth in (40, 50_000):  # past the limit, and past Python's recursion limit
        with pytest.raises(ConfigError, match=r"run\.yaml: refused: nested deeper than 32 levels"):
            load_config(_config(tmp_path, "run: " + "[" * depth + "]" * depth + "\n"), check_paths=False)


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    path = _config(tmp_path, "train:\n  lr: 0.001\n  steps: 3\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: line 4, column 3: invalid YAML: duplicate key 'lr' "
                                          r"\(first on line 2\)"):
        load_config(path, check_paths=False)
    with pytest.raises(ConfigError, match=r"--set: train\.steps: the value"):
        load_config(None, ["train.steps={a: 1, a: 2}"], check_paths=False)


def test_a_huge_or_non_utf8_file_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"run\.yaml: refused: larger than 1024 KiB"):
        load_config(_config(tmp_path, "# " + "x" * (1 << 20) + "\n"), check_paths=False)
    with pytest.raises(ConfigError, match=r"run\.yaml: not UTF-8 text \(byte 12\); save the config as UTF-8"):
        load_config(_config(tmp_path, b"run: {name: \xff\xfe}\n"), check_paths=False)
