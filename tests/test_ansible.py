"""The Ansible playbook: lint, syntax, the roles' shape, what their files render to, and
idempotence on the image's own root file system."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from appliance.net.plan import DNS_DIR
from support.ports import free_port
from support.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
ROLES = REPO / "ansible" / "roles"
VENV_BIN = Path(sys.executable).parent
ENV = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible/ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
           ANSIBLE_NOCOLOR="1", NO_COLOR="1")


def test_syntax_check():
    done = subprocess.run([str(VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,",
                           "ansible/site.yml"], cwd=REPO, env=ENV, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_ansible_lint_passes_with_the_production_profile():
    done = subprocess.run([str(VENV_BIN / "ansible-lint"), "--profile", "production", "ansible/"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def role_file(role: str, kind: str) -> dict:
    path = ROLES / role / kind / "main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def test_every_package_a_role_installs_is_in_the_cached_base():
    """image/build.py reads the roles' *_packages (vars and defaults) into the base rootfs; in the
    image build the roles' apt tasks are skipped, so a list it missed would be missing on the card."""
    sys.path.insert(0, str(REPO / "image"))
    import build

    packages = set(build.role_packages())
    installed = []
    for tasks in ROLES.glob("*/tasks/main.yml"):
        for name in re.findall(r"name: \"\{\{ (\w+_packages) \}\}\"", tasks.read_text()):
            role = tasks.parent.parent.name
            listed = {**role_file(role, "defaults"), **role_file(role, "vars")}
            assert name in listed, f"{role}: {name} is not in the role's vars or defaults"
            assert set(listed[name]) <= packages, name
            installed.append(name)
    assert len(installed) >= 8, installed  # base, clock, network, ssh, solargw, mosquitto, access point, firstboot
    for expected in ("hostapd", "dnsmasq-base", "mosquitto", "python3-venv", "avahi-daemon",
                     "systemd-timesyncd", "fake-hwclock", "wpasupplicant"):
        assert expected in packages


def test_roles_have_the_usual_shape():
    """meta/main.yml everywhere; defaults (what a user may change) each documented by a comment;
    no role variable in the playbook's group_vars, which would outrank the user's inventory."""
    roles = sorted(p.name for p in ROLES.iterdir() if p.is_dir())
    assert "solargw" in roles and "base" in roles
    for role in roles:
        meta = role_file(role, "meta")
        assert meta["galaxy_info"]["description"] and "dependencies" in meta, role
        defaults = ROLES / role / "defaults/main.yml"
        if defaults.exists():
            lines = defaults.read_text().splitlines()
            for number, line in enumerate(lines):
                if re.match(r"^\w+:", line):
                    assert lines[number - 1].startswith("#"), f"{role} default undocumented: {line}"
    services = {"web", "zigbee", "access_point", "firstboot"}
    for role in services:
        assert {"role": "solargw"} in role_file(role, "meta")["dependencies"], role
    group_vars = yaml.safe_load((REPO / "ansible/group_vars/all.yml").read_text())
    assert set(group_vars) == {"solargw_start_services", "solargw_image_build"}
    base_tasks = (ROLES / "base/tasks/main.yml").read_text()
    assert "wheelhouse" not in base_tasks and "networkd" not in base_tasks


def render(tmp_path: Path, role: str, template: str, roles: tuple[str, ...] = (), **extra) -> str:
    """``template`` of ``role`` rendered by Ansible with the roles' own defaults and vars
    (and those of ``roles``), ``extra`` as extra vars (a user's overrides)."""
    files = [ROLES / r / kind / "main.yml" for r in (*roles, role) for kind in ("defaults", "vars")]
    out = tmp_path / f"{role}-{template}".removesuffix(".j2")
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render", "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(f) for f in files if f.exists()],
        "tasks": [{"name": "Render", "ansible.builtin.template": {
            "src": str(ROLES / role / "templates" / template), "dest": str(out), "mode": "0644"}}],
    }]))
    done = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", json.dumps(extra), str(playbook)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return out.read_text()


# What Debian's /etc/mosquitto/mosquitto.conf says (trixie, as on the card), in a directory of
# its own: the role's file goes in its include_dir and must win.
DEBIAN_MOSQUITTO_CONF = """persistence true
persistence_location {dir}/lib/
log_dest file {dir}/log/mosquitto.log
include_dir {dir}/conf.d
"""


def run_mosquitto_with(config: str) -> tuple[Path, str]:
    """Debian's broker config plus ``config`` as conf.d/solargw.conf, on a free loopback port:
    a retained message published, the broker stopped; its directory and its stderr."""
    directory = Path(tempfile.mkdtemp(prefix="solargw-mosquitto-"))
    for sub in ("lib", "log", "conf.d"):
        (directory / sub).mkdir()
    for path in (directory, *directory.iterdir()):
        path.chmod(0o777)  # as root mosquitto drops to user mosquitto
    port = free_port()
    config = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", config, flags=re.MULTILINE)
    assert f"listener {port}" in config
    (directory / "conf.d/solargw.conf").write_text(config)
    (directory / "mosquitto.conf").write_text(DEBIAN_MOSQUITTO_CONF.format(dir=directory))
    broker = subprocess.Popen(["mosquitto", "-c", str(directory / "mosquitto.conf")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: subprocess.run(["mosquitto_pub", "-p", str(port), "-t", "t/x", "-m", "1", "-r"],
                                        capture_output=True, check=False).returncode == 0, 10, "mosquitto")
    finally:
        broker.terminate()  # a clean stop: with persistence on, the database is saved now
        output = broker.communicate(timeout=10)[0]
    return directory, output


def test_mosquitto_writes_nothing_to_the_card(tmp_path):
    """The role's broker config turns Debian's persistence and log file off (the appliance
    republishes its retained messages itself); the broker logs to stderr, i.e. the journal."""
    config = render(tmp_path, "mosquitto", "solargw.conf.j2")
    assert re.search(r"^persistence false$", config, re.MULTILINE)
    directory, output = run_mosquitto_with(config)
    try:
        assert list((directory / "lib").iterdir()) == [] and list((directory / "log").iterdir()) == []
        assert "running" in output and "New client connected" in output
    finally:
        subprocess.run(["rm", "-rf", str(directory)], check=True)
    # The role default turns it back on, with one save a day instead of Debian's every 30 minutes.
    config = render(tmp_path, "mosquitto", "solargw.conf.j2", mosquitto_persistence=True)
    assert re.search(r"^autosave_interval 86400$", config, re.MULTILINE)
    directory, _output = run_mosquitto_with(config)
    try:
        assert [p.name for p in (directory / "lib").iterdir()] == ["mosquitto.db"]
    finally:
        subprocess.run(["rm", "-rf", str(directory)], check=True)


def test_journal_stays_in_ram_bounded_and_rate_limited(tmp_path):
    conf = render(tmp_path, "sdcard", "journald.conf.j2")
    settings = dict(line.split("=", 1) for line in conf.splitlines() if "=" in line and not line.startswith("#"))
    assert settings == {"Storage": "volatile", "RuntimeMaxUse": "32M", "RuntimeMaxFileSize": "4M",
                        "RateLimitIntervalSec": "30s", "RateLimitBurst": "1000",
                        "ForwardToSyslog": "no", "MaxLevelStore": "info"}
    persistent = render(tmp_path, "sdcard", "journald.conf.j2", sdcard_journal_storage="persistent",
                        sdcard_journal_max_use="64M")
    assert "Storage=persistent\nSystemMaxUse=64M\n" in persistent and "Runtime" not in persistent


def test_runtime_directory_is_shared_by_the_services(tmp_path):
    """/run/solargw: created at boot by systemd-tmpfiles, before any service, for all of them;
    /run/solargw-dns beside it, for dnsmasq's servers file (dnsmasq reads it as nobody)."""
    lines = [line.split() for line in render(tmp_path, "solargw", "tmpfiles.conf.j2").splitlines()
             if not line.startswith("#")]
    assert lines == [["d", "/run/solargw", "2770", "root", "solargw", "-"],
                     ["d", str(DNS_DIR), "0755", "root", "root", "-"]]
    units = {template: render(tmp_path, role, template, roles=("solargw",))  # (by template: a role has two)
             for role, template in (("web", "solargw-web.service.j2"), ("zigbee", "solargw-zigbee.service.j2"),
                                    ("access_point", "solargw-net.service.j2"),
                                    ("access_point", "hostapd-solargw.conf.j2"))}
    sandboxed = []
    for template, unit in units.items():
        # A RuntimeDirectory=solargw would chown and chmod the shared directory to one unit's liking.
        assert "RuntimeDirectory=" not in unit, template
        if "ProtectSystem=strict" in unit:
            sandboxed.append(template)
            paths = re.search(r"^ReadWritePaths=(.*)$", unit, re.MULTILINE).group(1).split()
            assert "/run/solargw" in paths, template
            # only solargw-net writes dnsmasq's servers file
            assert (str(DNS_DIR) in paths) == (template == "solargw-net.service.j2"), template
    assert "solargw-net.service.j2" in sandboxed


def test_the_benches_run_the_services_with_the_units_environment(tmp_path):
    """The benches measure the services as systemd starts them: the environment each unit sets
    (besides the settings file's path) is the benches' ``SERVICE_ENVIRONMENT``."""
    from bench._web import SERVICE_ENVIRONMENT

    for role, template in (("web", "solargw-web.service.j2"), ("zigbee", "solargw-zigbee.service.j2"),
                           ("access_point", "solargw-net.service.j2")):
        unit = render(tmp_path, role, template, roles=("solargw",))
        environment = dict(line.split("=", 1) for line in re.findall(r"^Environment=(.*)$", unit, re.MULTILINE))
        environment.pop("SOLARGW_SETTINGS")
        assert environment == SERVICE_ENVIRONMENT, template


def test_root_file_system_mount_options():
    sys.path.insert(0, str(REPO / "image"))
    import build

    assert build.ROOT_MOUNT_OPTIONS.split(",") == ["noatime", "commit=600", "errors=remount-ro"]


def test_wheelhouse_bundle_is_reproducible(tmp_path):
    """Same sources, same bytes: the copy task is what keeps a second run at changed=0."""
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    for out in (first, second):
        subprocess.run([sys.executable, str(REPO / "ansible/wheelhouse.py"), str(out)], check=True,
                       capture_output=True, text=True)
    assert first.read_bytes() == second.read_bytes()
    names = subprocess.run(["tar", "-tf", str(first)], capture_output=True, text=True,
                           check=True).stdout.split()
    assert any(n.startswith("solargw-") for n in names)
    assert any(re.match(r"cryptography-.*aarch64.*\.whl$", n) for n in names)


@pytest.fixture
def image_rootfs(image) -> Path:
    """The root file system the image build provisioned (kept in build/work)."""
    if os.geteuid() != 0:
        pytest.fail("needs root (chroot)")
    root = REPO / "build" / "work" / "rootfs"
    assert (root / "opt/solargw/venv/bin/solargw").exists(), f"no provisioned root file system in {root}"
    return root


def run_playbook(root: Path) -> list[str]:
    """Apply the playbook to ``root`` as the image build does; the tasks that reported a change."""
    sys.path.insert(0, str(REPO / "image"))
    import build

    build.register_binfmt()
    done = build.provision(root, capture=True)
    assert done.returncode == 0, done.stdout[-4000:]
    recap = re.search(r"^\S+\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                      done.stdout, re.MULTILINE)
    assert recap and int(recap.group(4)) == 0, done.stdout[-3000:]
    changed, task = [], None
    for line in done.stdout.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.rstrip("* ")
        elif line.startswith("changed:"):
            changed.append(task)
    assert len(changed) == int(recap.group(2)), done.stdout[-3000:]
    return changed


@pytest.mark.image
def test_second_run_on_the_image_rootfs_changes_nothing(image_rootfs):
    assert run_playbook(image_rootfs) == []


@pytest.mark.image
def test_the_playbook_repairs_a_database_only_root_could_write(image_rootfs):
    """Live Pis provisioned before the store created its database 0660 may hold a root-owned
    0640 one; the playbook gives it back to group solargw, and touches nothing else."""
    database = image_rootfs / "var/lib/solargw/solargw.db"
    database.write_bytes(b"")
    os.chown(database, 0, 0)
    database.chmod(0o640)
    try:
        changed = run_playbook(image_rootfs)
        group = (image_rootfs / "etc/group").read_text()
        gid = int(re.search(r"^solargw:x:(\d+):", group, re.MULTILINE).group(1))
        assert (database.stat().st_mode & 0o777, database.stat().st_gid) == (0o660, gid)
        assert changed == ["TASK [solargw : Let every service (group solargw) write the shared database]"]
    finally:
        database.unlink()


def _vagrant_validate(directory: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"))
    return subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_vagrantfile_is_valid_and_uses_the_same_playbook(tmp_path):
    """`vagrant validate` works offline with --ignore-provider (no box, no VirtualBox needed)."""
    done = _vagrant_validate(REPO, tmp_path)
    assert done.returncode == 0 and "validated successfully" in done.stdout, done.stdout + done.stderr
    text = (REPO / "Vagrantfile").read_text()
    playbook = re.search(r'ansible\.playbook = "([^"]+)"', text).group(1)
    config = re.search(r'ansible\.config_file = "([^"]+)"', text).group(1)
    assert (REPO / playbook).is_file() and (REPO / config).is_file()
    assert re.search(r'forwarded_port", guest: 80,', text)
    # The check can fail: a misspelt setting is refused.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Vagrantfile").write_text(text.replace("config.vm.hostname", "config.vm.hostnme"))
    refused = _vagrant_validate(broken, tmp_path)
    assert refused.returncode != 0 and "hostnme" in refused.stdout + refused.stderr
