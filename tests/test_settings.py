from pathlib import Path

import pytest

from switch import ConfigError, SwitchSettings, load_settings

SECRET = "ab" * 32


def test_environment_overrides_the_file_and_types_are_converted(tmp_path: Path) -> None:
    f = tmp_path / "onecard.toml"
    f.write_text('[switch]\ndsn = "postgresql://a@b/c"\nport = 7000\n')
    s = load_settings(f, env={"ONECARD_PORT": "7100", "ONECARD_MASTER_SECRET": SECRET})
    assert isinstance(s, SwitchSettings)
    assert (s.dsn, s.port) == ("postgresql://a@b/c", 7100)


@pytest.mark.parametrize(
    ("env", "toml", "message"),
    [
        ({}, "", "setting dsn is required"),
        ({"ONECARD_DSN": "x", "ONECARD_MASTER_SECRET": "zz"}, "", "setting master_secret"),
        ({"ONECARD_DSN": "x", "ONECARD_MASTER_SECRET": SECRET, "ONECARD_PORT": "seventy"}, "",
         "setting port"),
        ({"ONECARD_DSN": "x", "ONECARD_MASTER_SECRET": SECRET}, "[switch]\nprot = 1\n",
         "unknown setting 'prot'"),
        ({"ONECARD_DSN": "x", "ONECARD_MASTER_SECRET": SECRET, "ONECARD_PORT": "70000"}, "",
         "setting port"),
    ],
)
def test_a_wrong_setting_names_the_setting(tmp_path: Path, env: dict[str, str], toml: str,
                                           message: str) -> None:
    f = tmp_path / "onecard.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(f, env=env)


def test_the_master_secret_is_never_shown() -> None:
    s = load_settings(env={"ONECARD_DSN": "x", "ONECARD_MASTER_SECRET": SECRET})
    assert SECRET not in repr(s) and SECRET not in str(s)
