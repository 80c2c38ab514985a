"""No traceback reaches a user: every ``solargw`` command, run for real, with bad input.

Each case must exit non-zero with one clear line on stderr (the last one; argparse
prints its usage above it) and never a traceback. A bad settings file is the exception
for the services and what their units run (issue 14): they start on the last good
settings and say what is wrong in one line, so the web UI stays reachable to fix it.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support.ports import free_port
from support.processes import clean_env

SOLARGW = str(Path(sys.executable).with_name("solargw"))

BAD_SETTINGS = {
    "not_toml": ("[web\nport = 8080\n", "not valid TOML"),
    "unknown_key": ("[web]\nprot = 8080\n", "[web] unknown key 'prot'"),
    "bad_value": ('[web]\nport = "x"\n', "[web] port: expected a whole number, got 'x'"),
    "broken_rule": ('[mqtt]\nhost = "bad host!"\n', "[mqtt] host: not a valid host name"),  # settings.validate
}

# A command a person runs that reads the settings file, with arguments that would otherwise be fine.
SETTINGS_READERS = {
    "firmware verify": ["firmware", "verify", "--device", "socket://127.0.0.1:9", "--timeout", "1"],
}
SERVICE_ARGS = {"web": ["web", "--bind", "127.0.0.1:0"], "zigbee": ["zigbee", "--device", "socket://127.0.0.1:9"]}
# The services (``net run``: in tests/test_net_netns.py, it needs a namespace of its own).
SERVICES = {"web": "listening on", "zigbee": "cannot talk to the stick"}


def solargw_env(tmp_path: Path, settings: Path) -> dict[str, str]:
    """This environment without the variables solargw reads, pointed at ``settings`` and a data
    directory in ``tmp_path``."""
    return clean_env(SOLARGW_SETTINGS=str(settings), SOLARGW_DATA_DIR=str(tmp_path / "data"))


def solargw(*args: str, tmp_path: Path, settings: Path | None = None, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run([SOLARGW, *args], capture_output=True, text=True, timeout=timeout,
                          env=solargw_env(tmp_path, settings or tmp_path / "absent.toml"),
                          cwd=tmp_path, stdin=subprocess.DEVNULL)


def assert_refused(result: subprocess.CompletedProcess, message: str) -> None:
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything
    assert result.returncode != 0, everything
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, f"nothing on stderr; stdout: {result.stdout}"
    last = lines[-1]
    assert last.startswith("solargw"), last
    assert message in last, f"{message!r} not in {last!r}"


@pytest.mark.parametrize("kind", BAD_SETTINGS)
@pytest.mark.parametrize("command", SETTINGS_READERS)
def test_bad_settings_file_is_refused_in_one_line(tmp_path, command, kind):
    text, message = BAD_SETTINGS[kind]
    settings = tmp_path / "solargw.toml"
    settings.write_text(text)
    result = solargw(*SETTINGS_READERS[command], tmp_path=tmp_path, settings=settings)
    assert_refused(result, message)
    assert f"solargw {command.split()[0]}: " in result.stderr


def run_until(argv: list[str], ready: str, tmp_path: Path, settings: Path, timeout: float = 45) -> str:
    """Start ``solargw *argv``, wait until ``ready`` appears in its output, stop it (SIGTERM);
    everything it wrote."""
    service = subprocess.Popen([SOLARGW, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, env=solargw_env(tmp_path, settings),
                               start_new_session=True)
    seen = ""
    try:
        while ready not in seen:
            assert select.select([service.stdout], [], [], timeout)[0], f"{ready!r} not within {timeout} s:\n{seen}"
            line = service.stdout.readline()
            assert line, f"it exited ({service.wait()}):\n{seen}"
            seen += line
        assert service.poll() is None, seen
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        rest, _ = service.communicate(timeout=20)
    return seen + rest


@pytest.mark.parametrize("kind", BAD_SETTINGS)
@pytest.mark.parametrize("service", SERVICES)
def test_a_service_starts_on_a_bad_settings_file_and_says_why_once(tmp_path, service, kind):
    text, message = BAD_SETTINGS[kind]
    settings = tmp_path / "solargw.toml"
    settings.write_text(text)
    output = run_until(SERVICE_ARGS[service], SERVICES[service], tmp_path, settings)
    assert "Traceback" not in output, output
    said = [line for line in output.splitlines() if message in line]
    assert len(said) == 1 and "until the file is fixed" in said[0], output


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_starts_on_a_settings_file_that_is_not_utf8(tmp_path, service):
    settings = tmp_path / "solargw.toml"
    settings.write_bytes(b'[access_point]\nssid = "caf\xe9"\n')
    output = run_until(SERVICE_ARGS[service], SERVICES[service], tmp_path, settings)
    assert "Traceback" not in output and len([x for x in output.splitlines() if "not UTF-8" in x]) == 1, output


@pytest.mark.parametrize("kind", ["not_toml", "broken_rule"])
def test_net_render_and_enabled_answer_from_the_last_good_settings(tmp_path, kind):
    """What hostapd's unit runs before it starts: a broken file must not take the access point down."""
    settings = tmp_path / "solargw.toml"
    settings.write_text('[access_point]\nssid = "RoofNet"\npassphrase = "roof-net-passphrase"\n')
    assert solargw("net", "render", "hostapd", tmp_path=tmp_path, settings=settings).returncode == 0  # accepted
    settings.write_text(BAD_SETTINGS[kind][0])
    result = solargw("net", "render", "hostapd", tmp_path=tmp_path, settings=settings)
    assert result.returncode == 0 and "ssid=RoofNet" in result.stdout, result.stderr
    assert "Traceback" not in result.stderr and BAD_SETTINGS[kind][1] in result.stderr
    assert solargw("net", "enabled", tmp_path=tmp_path, settings=settings).returncode == 0


@pytest.mark.parametrize("command", ["web", "zigbee"])
def test_data_dir_that_is_a_file(tmp_path, command):
    (tmp_path / "data").write_text("not a directory")
    result = solargw(*SERVICE_ARGS[command], tmp_path=tmp_path)
    assert_refused(result, f"cannot create the data directory {tmp_path / 'data'}")


@pytest.mark.parametrize("command", ["web", "zigbee"])
def test_data_dir_with_a_corrupt_database(tmp_path, command):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "solargw.db").write_bytes(b"this is not an SQLite database\n" * 100)
    result = solargw(*SERVICE_ARGS[command], tmp_path=tmp_path)
    assert_refused(result, "file is not a database")
    assert (tmp_path / "data" / "solargw.db").read_bytes() == b"this is not an SQLite database\n" * 100


def test_a_bad_zigbee_setting_runs_the_service_on_the_last_good_zigbee_section(tmp_path):
    settings = tmp_path / "solargw.toml"
    settings.write_text("[zigbee]\nchannel = 40\n")
    output = run_until(["zigbee", "--device", "socket://127.0.0.1:9"], "cannot talk to the stick", tmp_path, settings)
    assert "[zigbee] channel: 40 is not a Zigbee channel" in output and "Traceback" not in output


NONSENSE = {
    "unknown command": (["frobnicate"], "invalid choice: 'frobnicate'"),
    "decode not hex": (["decode", "zz"], "not hex"),
    "decode wrong length": (["decode", "7926"], "solargw decode:"),
    "web bind": (["web", "--bind", "nonsense"], "'nonsense' is not HOST:PORT"),
    "web port": (["web", "--bind", "127.0.0.1:99999"], "99999 is not a port number"),
    "web host": (["web", "--bind", "no-such-host.invalid:8080"], "cannot listen on no-such-host.invalid:8080"),
    "net render what": (["net", "render", "apache"], "invalid choice: 'apache'"),
    "firmware action": (["firmware", "burn"], "invalid choice: 'burn'"),
    "firmware timeout": (["firmware", "verify", "--device", "/dev/null", "--timeout", "0"], "--timeout 0"),
    "simulate family": (["simulate", "sma"], "invalid choice: 'sma'"),
    "simulate nep model": (["simulate", "nep", "--models", "bdm999", "--rounds", "1"], "unknown model 'bdm999'"),
    "simulate nep url": (["simulate", "nep", "--url", "ftp://x/", "--rounds", "1"], "expected http://HOST[:PORT]"),
    "simulate nep start": (["simulate", "nep", "--start", "25:00"], "'25:00' is not HH:MM"),
    "simulate nep interval": (["simulate", "nep", "--interval", "-1"], "must be above 0"),
    "simulate nep inverters": (["simulate", "nep", "--inverters", "0"], "--inverters must be at least 1"),
    "simulate enecsys port": (["simulate", "enecsys", "--port", "70000"], "70000 is not a port number"),
    "simulate enecsys host": (["simulate", "enecsys", "--host", "no-such-host.invalid"], "cannot listen on"),
    "simulate enecsys replay": (["simulate", "enecsys", "--replay", "/no/such/capture.json"],
                                "cannot read /no/such/capture.json"),
    "simulate enecsys radio": (["simulate", "enecsys", "--radio", "perfect"], "invalid choice: 'perfect'"),
    "demo port": (["demo", "--port", "-5"], "-5 is not a port number"),
    "firstboot unknown option": (["firstboot", "--bootdir", "/boot"], "unrecognized arguments"),
}


@pytest.mark.parametrize("case", NONSENSE)
def test_nonsense_arguments(tmp_path, case):
    args, message = NONSENSE[case]
    assert_refused(solargw(*args, tmp_path=tmp_path), message)


def test_demo_with_an_unusable_directory(tmp_path):
    (tmp_path / "file").write_text("")
    assert_refused(solargw("demo", "--dir", str(tmp_path / "file" / "demo"), tmp_path=tmp_path),
                   f"cannot use {tmp_path / 'file' / 'demo'}")


def test_a_file_that_is_not_a_capture(tmp_path):
    (tmp_path / "capture.json").write_text('{"frames": [{"t": 0, "from": "gateway", "nwk": "0x1234", "hex": "57"}]}')
    assert_refused(solargw("simulate", "enecsys", "--replay", str(tmp_path / "capture.json"), tmp_path=tmp_path),
                   "goes to 0x1234, which sent nothing before")
    (tmp_path / "capture.json").write_text("[1, 2]")
    assert_refused(solargw("simulate", "enecsys", "--replay", str(tmp_path / "capture.json"), tmp_path=tmp_path),
                   "is not a capture")


def test_missing_files_and_devices(tmp_path):
    missing = tmp_path / "missing.hex"
    assert_refused(solargw("firmware", "check", str(missing), tmp_path=tmp_path), "No such file")
    assert_refused(solargw("firmware", "flash", str(missing), "--device", "/dev/ttyUSB9", "--dry-run",
                           tmp_path=tmp_path), "refusing to flash")
    not_hex = tmp_path / "notes.hex"
    not_hex.write_text("hello\n")
    assert_refused(solargw("firmware", "check", str(not_hex), tmp_path=tmp_path), "not a valid Intel HEX")
    assert_refused(solargw("firmware", "verify", "--device", str(tmp_path / "ttyUSB9"), "--timeout", "2",
                           tmp_path=tmp_path), str(tmp_path / "ttyUSB9"))
    assert_refused(solargw("firmware", "verify", "--device", f"socket://127.0.0.1:{free_port()}",
                           "--timeout", "2", tmp_path=tmp_path), "socket://127.0.0.1:")
    (tmp_path / "leases").mkdir()
    assert_refused(solargw("net", "clients", "--leases", str(tmp_path / "leases"), tmp_path=tmp_path),
                   f"cannot read the leases {tmp_path / 'leases'}")
    assert_refused(solargw("net", "render", "dnsmasq", "--output", str(not_hex / "dnsmasq.conf"),
                           tmp_path=tmp_path), "cannot write")


def test_simulator_whose_collector_is_not_there(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/"
    result = solargw("simulate", "nep", "--url", url, "--rounds", "1", "--start", "12:00", "--quiet",
                     tmp_path=tmp_path)
    assert_refused(result, f"3 of 3 posts failed (is the collector listening at {url}?)")


def test_firstboot_with_a_boot_file_that_is_not_toml(tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "root" / "etc").mkdir(parents=True)
    (tmp_path / "boot" / "solargw.toml").write_text("[access_point\nssid = 'x'\n")
    result = solargw("firstboot", "--boot-dir", str(tmp_path / "boot"), "--root", str(tmp_path / "root"),
                     tmp_path=tmp_path)
    assert_refused(result, "solargw.toml: not valid TOML")
    assert (tmp_path / "boot" / "solargw.toml").read_text() == "[access_point\nssid = 'x'\n"  # kept as it was


def test_firstboot_with_a_root_that_does_not_exist(tmp_path):
    result = solargw("firstboot", "--boot-dir", str(tmp_path / "no-boot"), "--root", str(tmp_path / "no-root"),
                     tmp_path=tmp_path)
    assert_refused(result, str(tmp_path / "no-root"))


def test_zigbee_service_with_a_missing_stick_says_so_and_keeps_retrying(tmp_path):
    """Not an exit: a stick unplugged at boot is retried with backoff (issue 5), in one clear line each time."""
    env = clean_env(SOLARGW_SETTINGS=str(tmp_path / "absent.toml"), SOLARGW_DATA_DIR=str(tmp_path / "data"))
    stick = tmp_path / "ttyUSB9"
    service = subprocess.Popen([SOLARGW, "zigbee", "--device", str(stick)], stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, env=env)
    try:
        assert select.select([service.stderr], [], [], 15)[0], "the service said nothing within 15 s"
        line = service.stderr.readline()
        assert f"{stick}: cannot talk to the stick" in line and "retrying" in line, line
        assert service.poll() is None
    finally:
        service.send_signal(signal.SIGTERM)
        _, rest = service.communicate(timeout=15)
    assert "Traceback" not in line + rest, rest
    assert service.returncode == 0


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`solargw decode ... | head -1`: the pipe closes under the command."""
    frame = "5700ef55f705009ac63421010000000214300388000034002c034e3100f32002030543000049"
    proc = subprocess.Popen([SOLARGW, "decode", *[frame] * 2000], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"enecsys report\n"
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 141
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
