import math
from pathlib import Path

import pytest

from ledger_ext import ACCOUNTS_MAX, MERCHANTS_MAX
from protocols.limits import HEARTBEAT_INTERVAL_SECONDS_MAX
from switch import ConfigError, SwitchSettings, limits, load_settings

SECRET = "ab" * 32
DSN = "postgresql://a@b/c"
BASE = {"ONECARD_DSN": DSN, "ONECARD_MASTER_SECRET": SECRET}


def test_environment_overrides_the_file_and_types_are_converted(tmp_path: Path) -> None:
    f = tmp_path / "onecard.toml"
    f.write_text(f'[switch]\ndsn = "{DSN}"\nport = 7000\n')
    s = load_settings(f, env={"ONECARD_PORT": "7100", "ONECARD_MASTER_SECRET": SECRET})
    assert isinstance(s, SwitchSettings)
    assert (s.dsn, s.port) == (DSN, 7100)


@pytest.mark.parametrize(
    ("env", "toml", "message"),
    [
        ({}, "", "setting dsn is required"),
        ({**BASE, "ONECARD_MASTER_SECRET": "zz"}, "",
         "setting master_secret .env ONECARD_MASTER_SECRET.: must be 32 to 64 bytes of hex"),
        ({**BASE, "ONECARD_PORT": "seventy"}, "", "setting port .env ONECARD_PORT."),
        (BASE, "[switch]\nprot = 1\n", "unknown setting 'prot' in .switch. of .*onecard.toml"),
        ({**BASE, "ONECARD_PORT": "70000"}, "", "setting port"),
        ({**BASE, "ONECARD_DSN": "db.example/onecard"}, "",
         "setting dsn .env ONECARD_DSN.: must be a postgresql://"),
        ({**BASE, "ONECARD_REDIS_URL": "127.0.0.1:6379"}, "",
         "setting redis_url .env ONECARD_REDIS_URL.: must be a redis://"),
    ],
)
def test_a_wrong_setting_names_the_setting(tmp_path: Path, env: dict[str, str], toml: str,
                                           message: str) -> None:
    f = tmp_path / "onecard.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(f, env=env)
    assert "\n" not in str(caught.value)


# Each bounded setting: its largest value, and where that bound comes from.
ENGINE_BOUNDS = [
    ("accounts_max", ACCOUNTS_MAX),  # the balance cache's (2**21), not a copy of it
    ("merchants_max", MERCHANTS_MAX),
    ("heartbeat_interval_seconds", HEARTBEAT_INTERVAL_SECONDS_MAX),  # the wire's SignOnResult
    ("connections_max", limits.CONNECTIONS_MAX),
    ("commit_slow_seconds", limits.COMMIT_DEADLINE_SECONDS),  # slower commits fail anyway
]


@pytest.mark.parametrize(("name", "bound"), ENGINE_BOUNDS)
def test_every_engine_bound_is_the_engine_constant(name: str, bound: int) -> None:
    assert getattr(load_settings(env=BASE, overrides={name: bound}), name) == bound
    with pytest.raises(ConfigError, match=rf"^setting {name} \(--{name.replace('_', '-')}\): "
                       rf"Expected .* <= {bound}$"):
        load_settings(env=BASE, overrides={name: bound + 1})


def test_accounts_max_past_the_ledger_is_refused_before_recovery(tmp_path: Path) -> None:
    # 50,000,000 used to pass here and then fail in recovery with a ledger error.
    f = tmp_path / "onecard.toml"
    f.write_text("[switch]\naccounts_max = 50_000_000\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(f, env=BASE)
    assert str(caught.value) == (
        f"setting accounts_max ([switch] of {f}): Expected `int` <= {ACCOUNTS_MAX}")


@pytest.mark.parametrize("name", ["checkpoint_interval_seconds", "drain_deadline_seconds",
                                  "commit_slow_seconds", "group_commit_window_seconds",
                                  "changefeed_poll_seconds"])
def test_intervals_are_finite(tmp_path: Path, name: str) -> None:
    f = tmp_path / "onecard.toml"
    f.write_text(f"[switch]\n{name} = inf\n")  # TOML has inf; asyncio deadlines do not
    with pytest.raises(ConfigError, match=f"setting {name} "):
        load_settings(f, env=BASE)
    assert not math.isinf(getattr(load_settings(env=BASE), name))


def test_a_wrong_type_in_the_file_names_the_file_not_the_variable(tmp_path: Path) -> None:
    f = tmp_path / "onecard.toml"
    f.write_text('[switch]\nport = "seventy"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(f, env=BASE)
    assert str(caught.value) == f"setting port ([switch] of {f}): Expected `int`, got `str`"


@pytest.mark.parametrize("toml", ['[swtich]\nport = 1\n', 'port = 1\n'])
def test_an_unknown_table_or_top_level_key_is_refused(tmp_path: Path, toml: str) -> None:
    f = tmp_path / "onecard.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=r"unknown table or key '(swtich|port)'"):
        load_settings(f, env=BASE)


def test_the_admin_table_may_share_the_file(tmp_path: Path) -> None:
    f = tmp_path / "onecard.toml"
    f.write_text('[switch]\nport = 7000\n\n[admin]\nport = 8080\n')
    assert load_settings(f, env=BASE).port == 7000


def test_the_master_secret_is_never_shown() -> None:
    s = load_settings(env=BASE)
    assert SECRET not in repr(s) and SECRET not in str(s)
    with pytest.raises(ConfigError) as caught:
        load_settings(env={**BASE, "ONECARD_MASTER_SECRET": SECRET[:-2] + "zz"})
    assert SECRET[:-2] not in str(caught.value)


def test_the_bank_link_is_off_by_default_and_needs_its_kek() -> None:
    s = load_settings(env=BASE)
    assert s.bank_host == "" and s.bank_kek is None
    with pytest.raises(ConfigError, match="bank_kek"):
        load_settings(env={**BASE, "ONECARD_BANK_HOST": "10.0.0.9"})
    kek = "ab" * 32
    s = load_settings(env={**BASE, "ONECARD_BANK_HOST": "10.0.0.9", "ONECARD_BANK_KEK": kek,
                           "ONECARD_BANK_PORT": "9000", "ONECARD_BANK_CONNECTIONS": "2"})
    assert (s.bank_host, s.bank_port, s.bank_connections) == ("10.0.0.9", 9000, 2)
    assert kek not in repr(s)
    with pytest.raises(ConfigError) as caught:
        load_settings(env={**BASE, "ONECARD_BANK_HOST": "h", "ONECARD_BANK_KEK": kek[:-2]})
    assert "bank_kek" in str(caught.value) and kek[:-2] not in str(caught.value)
    with pytest.raises(ConfigError, match="bank_connections"):
        load_settings(env={**BASE, "ONECARD_BANK_CONNECTIONS": "9"})
