"""The ensemble on disk.

Layout::

    DIR/
      manifest.json            written last, by an atomic rename: the one source of truth
      tokenizer/               the base tokenizer with the indicator tokens added at init
      experts/<name>/          PEFT adapter (adapter_config.json + adapter_model.safetensors)
                               plus rehearsal.jsonl and heldout.jsonl
      .staging/<name>/         the add of <name> in progress, and its --resume checkpoint (never read as experts)
      .quarantine/             folders a writer found but did not make (orphans, leftovers), set aside, never deleted
      .lock                    serialises writers

An expert exists only when the manifest lists it. Adding one trains into
``.staging/``, renames the finished folder into ``experts/`` and then
replaces the manifest; a crash at any point leaves the old manifest, so the
ensemble is as it was.

No writer deletes a folder it did not make in the same run: an expert folder
the manifest does not list (a hand edit, an older manifest restored) and the
leftovers of interrupted runs are moved to ``.quarantine/`` with a message.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from see.config import ModelConfig, PromptConfig, RoutingConfig
from see.errors import StoreError
from see.jsonio import strict_json
from see.faults import fault_point
from see.prompt import Indicator

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STAGING = ".staging"
LOCK = ".lock"
QUARANTINE = ".quarantine"
RETIRED = "retired"
RETIRED_RE = re.compile(r"retired/[A-Za-z0-9][A-Za-z0-9_.-]*\.jsonl")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def validate_name(name: str, where: str | None = None) -> str:
    """Expert names become folder names: keep them inside the ensemble."""
    # fullmatch: with match() and "$", a trailing newline would slip through into a folder name
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise StoreError(f"invalid expert name {name!r}", file=where, field="name",
                         hint="use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit, no '..'")
    return name


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    fault_point(f"{path.name}-write", path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~umask())  # mkstemp's 0600 would hide the manifest from other users
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        fault_point(f"{path.name}-written")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def set_mode(path: Path) -> None:
    """Files 0666 and folders 0777 less the umask, as a plain ``open``/``mkdir`` would make them.

    Libraries that write through temp files (safetensors, mkstemp) leave 0600,
    which hides an adapter from another user serving the ensemble.
    """
    mask = umask()
    targets = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in targets:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ExpertRecord:
    name: str
    path: str
    config: dict
    data: dict
    metrics: dict
    created: str
    threshold: float | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {"name": self.name, "path": self.path, "created": self.created, "config": self.config,
               "data": self.data, "metrics": self.metrics, "threshold": self.threshold}
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, d: dict, where: str) -> "ExpertRecord":
        try:
            known = {"name", "path", "created", "config", "data", "metrics", "threshold"}
            rec = cls(name=d["name"], path=d["path"], config=d.get("config", {}), data=d.get("data", {}),
                      metrics=d.get("metrics", {}), created=d.get("created", ""), threshold=d.get("threshold"),
                      extra={k: v for k, v in d.items() if k not in known})
        except (KeyError, TypeError) as exc:
            raise StoreError(f"corrupted expert entry: missing {exc}", file=where, field="experts") from None
        validate_name(rec.name, where)
        for key in ("config", "data", "metrics", "extra"):
            if not isinstance(getattr(rec, key), dict):
                raise StoreError(f"corrupted expert entry: must be an object, got {type(getattr(rec, key)).__name__}",
                                 file=where, field=f"experts.{rec.name}.{key}")
        if rec.path != f"experts/{rec.name}":
            raise StoreError(f"expert path {rec.path!r} must be 'experts/{rec.name}'", file=where,
                             field=f"experts.{rec.name}.path")
        if rec.threshold is not None and not (isinstance(rec.threshold, (int, float)) and 0 <= rec.threshold <= 1):
            raise StoreError(f"threshold {rec.threshold!r} is not in [0, 1]", file=where,
                             field=f"experts.{rec.name}.threshold")
        return rec


@dataclass
class BaseRecord:
    """The base model an ensemble was built on."""

    #: A named base ("embedded", "minilm") or an absolute local path (see ``ModelRef.stored``).
    ref: str
    #: ``see.modeling.base_fingerprint``: catches a base replaced under the ensemble.
    fingerprint: str = ""
    model_type: str = ""
    vocab_size: int = 0


def _section(cls, raw: Any, where: str, key: str):
    """A manifest section as its config dataclass; wrong keys or types name the field."""
    if not isinstance(raw, dict):
        raise StoreError(f"corrupted manifest: must be an object, got {type(raw).__name__}", file=where, field=key)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), raw))
    except OmegaConfBaseException as exc:
        bad = getattr(exc, "full_key", None) or ""
        raise StoreError(f"corrupted manifest: {str(exc).splitlines()[0]}", file=where,
                         field=f"{key}.{bad}" if bad else key) from None


@dataclass
class Manifest:
    """The one source of truth of an ensemble, typed; its JSON layout is ``to_json``'s."""

    base: BaseRecord
    #: The fallback model's stored reference; None: the base with adapters off.
    fallback: str | None
    model: ModelConfig
    prompt: PromptConfig
    routing: RoutingConfig
    indicator: Indicator
    experts: list[ExpertRecord] = field(default_factory=list)
    #: Experts taken out by ``see remove``: name, when it was added and removed, and its kept rehearsal file,
    #: which later experts were trained to reject and keep being calibrated against.
    retired: list[dict] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    created: str = field(default_factory=now)
    see_version: str = ""

    def to_json(self) -> dict:
        return {"format_version": self.format_version, "see_version": self.see_version, "created": self.created,
                "base": dataclasses.asdict(self.base),
                "fallback": {"ref": self.fallback} if self.fallback else None, "tokenizer": "tokenizer",
                "indicator": dataclasses.asdict(self.indicator),
                "settings": {"model": dataclasses.asdict(self.model), "prompt": dataclasses.asdict(self.prompt),
                             "routing": dataclasses.asdict(self.routing)},
                "experts": [e.to_json() for e in self.experts], "retired": self.retired}

    @classmethod
    def from_json(cls, d: Any, where: str) -> "Manifest":
        if not isinstance(d, dict):
            raise StoreError("corrupted manifest: not a JSON object", file=where)
        version = d.get("format_version")
        if not isinstance(version, int):
            raise StoreError("corrupted manifest: no format_version", file=where, field="format_version")
        if version > FORMAT_VERSION:
            raise StoreError(f"manifest format {version} is newer than this see supports ({FORMAT_VERSION})",
                             file=where, field="format_version", hint="upgrade see: pip install -U see")
        for key in ("base", "settings", "experts", "indicator"):
            if key not in d:
                raise StoreError("corrupted manifest: missing key", file=where, field=key)
        if not isinstance(d["experts"], list):
            raise StoreError("corrupted manifest: must be a list", file=where, field="experts")
        experts = [ExpertRecord.from_json(e, where) for e in d["experts"]]
        names = [e.name.casefold() for e in experts]
        if len(set(names)) != len(names):
            raise StoreError("corrupted manifest: duplicate expert names", file=where, field="experts")
        if d.get("tokenizer", "tokenizer") != "tokenizer":
            raise StoreError("tokenizer must be the ensemble's 'tokenizer' folder", file=where, field="tokenizer")
        settings = d["settings"]
        if not isinstance(settings, dict):
            raise StoreError("corrupted manifest: must be an object", file=where, field="settings")
        fallback = d.get("fallback")
        if fallback is not None and not (isinstance(fallback, dict) and isinstance(fallback.get("ref"), str)):
            raise StoreError("corrupted manifest: must be null or {\"ref\": ...}", file=where, field="fallback")
        try:
            base = BaseRecord(**d["base"])
            indicator = Indicator(**d["indicator"])
        except TypeError as exc:
            raise StoreError(f"corrupted manifest: {exc}", file=where,
                             field="base" if "BaseRecord" in str(exc) else "indicator") from None
        if not isinstance(base.ref, str) or not all(isinstance(i, int) for i in (indicator.pos_id, indicator.neg_id)):
            raise StoreError("corrupted manifest: wrong types", file=where, field="base.ref / indicator")
        retired = d.get("retired", [])
        if not isinstance(retired, list) or not all(
                isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("rehearsal"), str)
                and RETIRED_RE.fullmatch(r["rehearsal"]) and ".." not in r["rehearsal"]
                and isinstance(r.get("created", ""), str) for r in retired):
            raise StoreError("corrupted manifest: must be a list of {name, rehearsal: retired/<file>.jsonl, ...}",
                             file=where, field="retired")
        return cls(base=base, fallback=fallback["ref"] if fallback else None, retired=retired,
                   model=_section(ModelConfig, settings.get("model", {}), where, "settings.model"),
                   prompt=_section(PromptConfig, settings.get("prompt", {}), where, "settings.prompt"),
                   routing=_section(RoutingConfig, settings.get("routing", {}), where, "settings.routing"),
                   indicator=indicator, experts=experts, format_version=version, created=d.get("created", ""),
                   see_version=d.get("see_version", ""))

    def expert(self, name: str) -> ExpertRecord | None:
        return next((e for e in self.experts if e.name == name), None)

    def expert_like(self, name: str) -> ExpertRecord | None:
        """The expert whose name equals ``name`` ignoring case: on macOS and Windows both are one folder."""
        return next((e for e in self.experts if e.name.casefold() == name.casefold()), None)


class EnsembleStore:
    """Reads and writes one ensemble directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- paths
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    # -- reading
    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read(self) -> Manifest:
        if not self.root.exists():
            raise StoreError("ensemble directory does not exist", file=self.root,
                             hint=f"create one with: see init {self.root}")
        if not self.root.is_dir():
            raise StoreError("not a directory", file=self.root)
        if not self.manifest_path.is_file():
            raise StoreError("not an ensemble: no manifest.json", file=self.root,
                             hint=f"create one with: see init {self.root}")
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
            data = json.loads(text)
        except UnicodeDecodeError:
            raise StoreError("corrupted manifest: not UTF-8", file=self.manifest_path) from None
        except json.JSONDecodeError as exc:
            raise StoreError(f"corrupted manifest: invalid JSON ({exc.msg})", file=self.manifest_path,
                             line=exc.lineno) from None
        manifest = Manifest.from_json(data, str(self.manifest_path))
        for rec in manifest.experts:
            folder = self.root / rec.path
            if folder.is_symlink() or not folder.resolve().is_relative_to(self.root.resolve()):
                raise StoreError(f"expert '{rec.name}' points outside the ensemble", file=folder)
            if (folder / "adapter_model.bin").is_file() and not (folder / "adapter_model.safetensors").is_file():
                raise StoreError(f"expert '{rec.name}' has only pickle weights (adapter_model.bin), which can run "
                                 "code when loaded; see loads safetensors only", file=folder,
                                 hint="convert the adapter with safetensors.torch.save_file")
            for inner in folder.rglob("*"):
                if inner.is_symlink():  # a link can point anywhere, whatever its target is today
                    raise StoreError(f"expert '{rec.name}' holds a symbolic link; see reads only files inside the "
                                     "ensemble", file=inner, hint="replace the link by the file itself")
            for required in ("adapter_config.json", "adapter_model.safetensors"):
                if not (folder / required).is_file():
                    raise StoreError(f"expert '{rec.name}' is missing {required}", file=folder,
                                     hint="the adapter folder is damaged; restore it or remove the expert")
        return manifest

    # -- writing
    def write(self, manifest: Manifest) -> None:
        atomic_write_text(self.manifest_path, strict_json(manifest.to_json(), indent=2) + "\n")

    @contextlib.contextmanager
    def lock(self, wait: bool = True, message=None) -> Iterator[None]:
        """Exclusive writer lock (``flock``), released when the process dies."""
        path = self.root / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the writer lock: {exc.strerror}", file=path,
                             hint="the ensemble folder must be writable, and .lock a file that see made") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if not wait:
                    raise StoreError("another see process is writing to this ensemble", file=self.root,
                                     hint="wait for it, or drop --no-wait to queue behind it") from None
                if message:
                    message("waiting for another see process writing to this ensemble ...")
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def quarantine(self, path: Path) -> Path:
        """Move ``path`` into ``.quarantine/`` under a unique, dated name; never delete it."""
        box = self.root / QUARANTINE
        box.mkdir(exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        dest = box / f"{stamp}-{path.parent.name}-{path.name}"
        k = 1
        while dest.exists():
            k += 1
            dest = box / f"{stamp}-{path.parent.name}-{path.name}-{k}"
        os.rename(path, dest)
        _fsync_dir(box)
        return dest

    def orphans(self, manifest: Manifest) -> list[Path]:
        """Expert folders the manifest does not list: never experts, and never ours to delete."""
        listed = {e.path for e in manifest.experts}
        experts = self.root / "experts"
        if not experts.is_dir():
            return []
        return sorted(p for p in experts.iterdir() if f"experts/{p.name}" not in listed)

    def set_aside_orphans(self, manifest: Manifest, message=None) -> list[tuple[Path, Path]]:
        """Move unlisted expert folders to the quarantine, saying so. Call with the lock held."""
        moved = []
        for p in self.orphans(manifest):
            dest = self.quarantine(p)
            moved.append((p, dest))
            if message:
                message(f"moved {p} to {dest}: the manifest does not list it, so it is not an expert "
                        "(a hand edit, an older manifest restored, or an interrupted commit); nothing was deleted")
        for p in self.root.glob(f".{MANIFEST}.*.tmp"):  # our own manifest write, killed before its rename
            p.unlink(missing_ok=True)
        return moved

    def commit_expert(self, manifest: Manifest, record: ExpertRecord, staged: Path) -> Manifest:
        """Move a finished staging folder into place, then publish the new manifest."""
        target = self.root / record.path
        target.parent.mkdir(exist_ok=True)
        if manifest.expert_like(record.name):
            raise StoreError(f"an expert named '{manifest.expert_like(record.name).name}' already exists",
                             file=self.manifest_path, field="name")
        if target.exists():  # an orphan (say, of a crash between the rename and the manifest): set aside, kept
            self.quarantine(target)
        set_mode(staged)
        fault_point("before-rename")
        os.rename(staged, target)
        _fsync_dir(target.parent)
        fault_point("after-rename")
        updated = dataclasses.replace(manifest, experts=[*manifest.experts, record])
        try:
            self.write(updated)
        except BaseException:
            with contextlib.suppress(OSError):  # put it back, so the failed add leaves no orphan folder
                os.rename(target, staged)
            raise
        return updated

    def check_writable(self) -> None:
        """Fail now, before minutes of training, if the manifest or an expert cannot be written."""
        for folder in (self.root, self.root / STAGING, self.root / "experts"):
            if not folder.exists():
                continue
            if not folder.is_dir():
                raise StoreError("must be a folder that see made, not a file", file=folder,
                                 hint="move it away; see would write here")
            try:
                fault_point("writable-check", folder)
                with tempfile.TemporaryFile(dir=folder, prefix=".see-write-check-"):
                    pass
            except OSError as exc:
                raise StoreError(f"cannot write here: {exc.strerror}", file=folder,
                                 hint="the ensemble must be on a writable filesystem, with write permission; "
                                      "nothing was changed") from None

    def subset(self, n: int, dest: Path) -> Path:
        """A copy of this ensemble holding only its first ``n`` experts (the ensemble as it was then)."""
        if dest.exists():
            shutil.rmtree(dest)
        manifest = self.read()
        dest.mkdir(parents=True)
        shutil.copytree(self.tokenizer_dir, dest / "tokenizer")
        for rec in manifest.experts[:n]:
            shutil.copytree(self.root / rec.path, dest / rec.path)
        if (self.root / RETIRED).is_dir():
            shutil.copytree(self.root / RETIRED, dest / RETIRED)
        EnsembleStore(dest).write(dataclasses.replace(manifest, experts=manifest.experts[:n]))
        return dest


def read_jsonl(path: Path, required: bool = True) -> list[dict]:
    """The records of one of the ensemble's JSONL files; a missing (when ``required``) or damaged file names
    the file and line instead of being skipped."""
    if not path.is_file():
        if required:
            raise StoreError("missing: the ensemble is damaged", file=path,
                             hint=f"restore it from a backup, or run: see doctor {path.parents[2]}")
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StoreError("damaged: not UTF-8", file=path) from None
    except OSError as exc:
        raise StoreError(f"cannot read: {exc.strerror}", file=path) from None
    rows = []
    for k, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise StoreError(f"damaged: invalid JSON ({getattr(exc, 'msg', 'nested too deeply')})", file=path,
                             line=k) from None
        if not isinstance(row, dict) or not isinstance(row.get("input"), str):
            raise StoreError("damaged: each line must be an object with a string 'input'", file=path, line=k,
                             field="input")
        rows.append(row)
    return rows


def read_queries(path: Path) -> list[tuple[str | None, str]]:
    """(instruction, input) pairs of a rehearsal file."""
    return [(r.get("instruction") if isinstance(r.get("instruction"), str) else None, r["input"])
            for r in read_jsonl(path)]


def write_queries(path: Path, queries) -> None:
    write_jsonl(path, [{"instruction": i, "input": x} for i, x in queries])


def write_jsonl(path: Path, rows: list[dict]) -> None:
    fault_point(f"{path.name}-write", path)
    path.write_text("".join(strict_json(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    set_mode(path)
