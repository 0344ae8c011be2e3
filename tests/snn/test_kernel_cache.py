"""The compiled-kernel cache is private and every library is verified before it is loaded."""

import ctypes
import os
import shutil
import stat
import subprocess

import pytest

from es_l2l.snn import kernel

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None,
                                reason="no C compiler")

GOOD = "int answer(void) { return 42; }\n"
EVIL = '#include <stdio.h>\n__attribute__((constructor)) static void boom(void) { FILE *f = fopen("MARKER", "w"); if (f) fclose(f); }\nint answer(void) { return 666; }\n'


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ES_L2L_CACHE", str(root))
    return root / "kernels"


def test_builds_into_a_private_directory_with_a_hash_record(cache):
    dll = kernel.build_and_load("t_good", GOOD, ["-O1", "-fPIC", "-shared"])
    assert dll.answer() == 42
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    libs = list(cache.glob("t_good_*.so"))
    assert len(libs) == 1
    assert (cache / (libs[0].name + ".sha256")).read_text().strip() == kernel._sha256(libs[0])
    assert kernel.build_and_load("t_good", GOOD, ["-O1", "-fPIC", "-shared"]).answer() == 42  # cached, verified


def test_a_planted_library_with_a_wrong_hash_is_refused_not_loaded(cache, tmp_path):
    kernel.build_and_load("t_plant", GOOD, ["-O1", "-fPIC", "-shared"])
    (lib,) = cache.glob("t_plant_*.so")
    evil = tmp_path / "evil.so"
    marker = tmp_path / "MARKER"
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    (tmp_path / "evil.c").write_text(EVIL.replace("MARKER", str(marker)))
    subprocess.run([cc, "-fPIC", "-shared", str(tmp_path / "evil.c"), "-o", str(evil)], check=True)
    shutil.copyfile(evil, lib)  # same name, different content: the sidecar no longer matches
    with pytest.raises(PermissionError, match="sha256"):
        kernel.build_and_load("t_plant", GOOD, ["-O1", "-fPIC", "-shared"])
    assert not marker.exists()  # its constructor never ran: the library was not loaded
    # a planted library with no record at all is refused too
    (cache / (lib.name + ".sha256")).unlink()
    with pytest.raises(PermissionError):
        kernel.build_and_load("t_plant", GOOD, ["-O1", "-fPIC", "-shared"])
    assert not marker.exists()
    ctypes.CDLL(str(evil))  # the check itself: this planted library does leave its mark when loaded
    assert marker.exists()


def test_a_world_writable_cache_directory_is_refused(cache):
    cache.mkdir(parents=True)
    os.chmod(cache, 0o777)
    with pytest.raises(PermissionError, match=str(cache)) as err:
        kernel.build_and_load("t_open", GOOD, ["-O1", "-fPIC", "-shared"])
    assert "chmod 700" in str(err.value)
    assert not list(cache.glob("t_open_*"))  # nothing built there either
    os.chmod(cache.parent, 0o777)
    os.chmod(cache, 0o700)
    with pytest.raises(PermissionError, match=str(cache.parent)):
        kernel.build_and_load("t_open", GOOD, ["-O1", "-fPIC", "-shared"])


def test_the_key_includes_the_compiler_version(cache, monkeypatch):
    kernel.build_and_load("t_key", GOOD, ["-O1", "-fPIC", "-shared"])
    cc, version = kernel._compiler()
    monkeypatch.setitem(kernel._STATE, "cc", (cc, version + " (patched)"))
    kernel.build_and_load("t_key", GOOD, ["-O1", "-fPIC", "-shared"])
    assert len(list(cache.glob("t_key_*.so"))) == 2


def test_the_forward_kernel_falls_back_when_the_cache_is_refused(cache, monkeypatch):
    cache.mkdir(parents=True)
    os.chmod(cache, 0o777)
    monkeypatch.setattr(kernel, "_STATE", {})
    assert kernel.load() is None
    assert str(cache) in kernel.why_not()
