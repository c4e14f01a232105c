"""Cross-compilation: build a model for a profile's target and export a library with its toolchain.

Arm Linux profiles (phones, Raspberry Pi, Graviton) link a shared library with the profile's
``cross_compiler`` (Debian: ``apt-get install -y gcc-aarch64-linux-gnu g++-aarch64-linux-gnu``). The
library embeds the weights and needs only libc/libm and a TVM runtime on the device.

Microcontrollers have no dynamic loader and TVM 0.27 ships no bare-metal runtime (no CRT, no AOT
executor): their build is exported as an archive of object files (``.tar``), once for the LLVM Thumb
target and once for ``{"kind": "c"}`` (C source), and the sizes of the generated machine code are read
from the objects' ELF section headers. docs/latency.md says what is still needed to run it on a board.

A candidate that does not build or link for its device is infeasible for that device; the caller
records it as such (:class:`CrossBuild` ``ok=False`` with the reason), it is not skipped.
"""

from __future__ import annotations

import shutil
import struct
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

    from nas.hardware.profiles import HardwareProfile


@dataclass(frozen=True)
class CrossBuild:
    """The outcome of building and exporting a model for a profile.

    Attributes:
        profile: Profile name.
        ok: Whether build and export succeeded.
        path: The exported library or archive ('' when not kept or failed).
        library_bytes: Size of the exported file.
        text_bytes: Machine code (executable ELF sections) of MCU object archives; 0 otherwise.
        data_bytes: Other allocated ELF sections (constants such as the weights) of MCU archives; 0 otherwise.
        c_source_bytes: Size of the ``{"kind": "c"}`` source archive (MCUs only).
        build_s: Wall seconds of build + export.
        error: Why it failed (one line) when ``ok`` is False.
    """

    profile: str
    ok: bool
    path: str = ""
    library_bytes: int = 0
    text_bytes: int = 0
    data_bytes: int = 0
    c_source_bytes: int = 0
    build_s: float = 0.0
    error: str = ""
    sections: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_for_profile(executable: Any, profile: HardwareProfile, path: Path) -> Path:
    """Export a built Relax executable as a shared library linked with the profile's cross compiler."""
    from tvm.support import cc

    compiler = profile.cross_compiler or "g++"
    if shutil.which(compiler) is None:
        from nas.errors import NasUserError

        raise NasUserError(
            f"hardware profile '{profile.name}': cross_compiler '{compiler}' is not installed; on Debian/Ubuntu "
            f"run: apt-get install -y gcc-aarch64-linux-gnu g++-aarch64-linux-gnu"
        )
    from nas.hardware.compile import quiet_native_stderr

    with quiet_native_stderr():  # "Scope Saving:" once per constant: noise
        executable.export_library(str(path), fcompile=cc.cross_compiler(compiler))
    return path


def cross_compile(mod: tvm.IRModule, profile: HardwareProfile, out_dir: str | Path | None = None) -> CrossBuild:
    """Build an imported Relax module for ``profile`` and export it with the profile's toolchain.

    Args:
        mod: Output of :func:`nas.hardware.compile.import_model`.
        profile: Any profile; MCUs get object archives (LLVM Thumb and C), others a shared library.
        out_dir: Where to keep the export; default a temporary folder that is removed (sizes are kept).

    Returns:
        The build record; ``ok=False`` with the error when TVM or the linker refuses the model.
    """
    import tvm
    from tvm import relax

    from nas.errors import NasUserError
    from nas.hardware.compile import quiet_native_stderr
    from nas.hardware.profiles import tvm_target

    start = time.perf_counter()
    keep = out_dir is not None
    folder = Path(out_dir) if keep else Path(tempfile.mkdtemp(prefix="lightnas-cross-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        target = tvm_target(profile)
        with quiet_native_stderr():
            executable = relax.build(mod, target=target)
        if profile.is_mcu:
            path = folder / f"{profile.name}.tar"
            with quiet_native_stderr():
                executable.export_library(str(path))  # a tar of object files: nothing to link without an OS
            sections = _archive_sections(path)
            c_path = folder / f"{profile.name}-c.tar"
            with quiet_native_stderr():
                relax.build(mod, target=tvm.target.Target({"kind": "c"})).export_library(str(c_path))
            text = sum(v for k, v in sections.items() if k.startswith("X:"))
            data = sum(v for k, v in sections.items() if k.startswith("A:"))
            return CrossBuild(profile.name, True, str(path) if keep else "", path.stat().st_size, text, data,
                              c_path.stat().st_size, time.perf_counter() - start, sections=sections)
        path = export_for_profile(executable, profile, folder / f"{profile.name}.so")
        return CrossBuild(profile.name, True, str(path) if keep else "", path.stat().st_size,
                          build_s=time.perf_counter() - start)
    except NasUserError:
        raise  # a missing toolchain is the user's to fix, not the candidate's fault
    except Exception as exc:  # TVM and the linker raise many types; the candidate is infeasible here
        first = (str(exc).strip().splitlines() or [""])[-1][:300]
        return CrossBuild(profile.name, False, build_s=time.perf_counter() - start, error=f"{type(exc).__name__}: {first}")
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _archive_sections(path: Path) -> dict[str, int]:
    """Allocated ELF section sizes summed over the object files of a tar archive.

    Keys are ``X:<name>`` for executable sections (machine code) and ``A:<name>`` for other allocated
    sections (read-only data, data, bss).
    """
    totals: dict[str, int] = {}
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            if not member.isfile() or not member.name.endswith(".o"):
                continue
            blob = archive.extractfile(member).read()
            for name, size, is_exec in elf_alloc_sections(blob):
                key = f"{'X' if is_exec else 'A'}:{name}"
                totals[key] = totals.get(key, 0) + size
    return totals


def elf_alloc_sections(blob: bytes) -> list[tuple[str, int, bool]]:
    """(name, size, is_executable) of every SHF_ALLOC section of an ELF32/ELF64 object, any endianness."""
    if blob[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64, little = blob[4] == 2, blob[5] == 1
    end = "<" if little else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", blob, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", blob, 0x3A)
    else:
        shoff, = struct.unpack_from(end + "I", blob, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", blob, 0x2E)

    def header(i: int) -> tuple[int, int, int, int]:
        base = shoff + i * shentsize
        if is64:
            name, _type, flags = struct.unpack_from(end + "IIQ", blob, base)
            offset, size = struct.unpack_from(end + "QQ", blob, base + 0x18)
        else:
            name, _type, flags = struct.unpack_from(end + "III", blob, base)
            offset, size = struct.unpack_from(end + "II", blob, base + 0x10)
        return name, flags, offset, size

    _, _, str_off, _ = header(shstrndx)
    sections = []
    for i in range(shnum):
        name_off, flags, _, size = header(i)
        if not flags & 0x2:  # SHF_ALLOC
            continue
        raw = blob[str_off + name_off : blob.index(b"\0", str_off + name_off)]
        sections.append((raw.decode(errors="replace"), size, bool(flags & 0x4)))  # SHF_EXECINSTR
    return sections
