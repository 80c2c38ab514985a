"""The Ansible playbook: lint, syntax, and idempotence on the image's own root file system."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
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


def test_every_role_package_list_is_installed_into_the_cached_base():
    """image/build.py reads the roles' *_packages: a role's apt task then finds them installed."""
    sys.path.insert(0, str(REPO / "image"))
    import build

    packages = build.role_packages()
    for expected in ("hostapd", "dnsmasq-base", "mosquitto", "python3-venv", "avahi-daemon",
                     "systemd-timesyncd", "fake-hwclock", "wpasupplicant"):
        assert expected in packages


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
        assert changed == ["TASK [base : Let every service (group solargw) write the shared database]"]
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
