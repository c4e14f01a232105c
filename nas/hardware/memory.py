"""Does a model fit a device? Flash and SRAM for microcontrollers, compile-ability for every device.

Flash holds the weights as stored plus the machine code. A trial passes the compression outcome's exact
stored size (``nas.compress.size``: per-layer bit-widths, packed codes, scales, sparse bitmaps), plus the
vocabulary-trimming id map at the narrowest integer width it needs; without one (``nas bench`` on an
exported file), weight matrices and embedding tables count at ``weight_bits`` and the rest at fp32. The
code size is read from the real Thumb build (:func:`nas.hardware.cross.cross_compile`) when one was
made, else a fixed allowance.

SRAM holds the activations: the peak over the fused graph of the tensors live at once at batch 1
(:attr:`nas.hardware.graph.GraphSummary.peak_activation_bytes`, inputs included, weights excluded,
since they stay in flash), scaled to int8 activations when the weights are ≤ 8-bit (CMSIS-NN kernels
take int8 activations), plus a fixed allowance for the runtime's stack and state.

A candidate that does not fit, or does not compile for the device, is *infeasible* for that profile: the
search records it as a violated Optuna constraint (:meth:`Feasibility.constraint`), it is not dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.hardware.cross import CrossBuild
    from nas.hardware.graph import GraphSummary
    from nas.hardware.profiles import HardwareProfile

# Code allowance when no Thumb build was made: TVM's generated kernels for a small BERT are ~200 KB of
# Thumb-2 (measured: 2 layers, hidden 128 built for cortex-m7 → 204 KB .text); round up for a runtime.
CODE_ALLOWANCE_BYTES = 256 * 1024
# Stack, runtime state and I/O buffers on an MCU (TFLite Micro's arena overhead is of this order).
SRAM_RUNTIME_BYTES = 16 * 1024


@dataclass(frozen=True)
class Feasibility:
    """Whether a candidate can be deployed on a profile, with the figures behind the verdict.

    Attributes:
        profile: Profile name.
        is_feasible: False if the model did not compile for the device or exceeds a memory limit.
        reasons: One sentence per violated limit (empty when feasible).
        flash_bytes: Weights at their bit-width + code (MCUs; 0 where not computed).
        sram_bytes: Peak live activations + runtime allowance (MCUs; 0 where not computed).
        flash_limit_bytes: The profile's flash, or 0 if unlimited.
        sram_limit_bytes: The profile's SRAM, or 0 if unlimited.
        code_bytes: Machine code of the device build (measured from the objects) or the allowance.
        code_measured: Whether ``code_bytes`` comes from a real build.
        build: The cross build's record (``CrossBuild.to_dict()``), when one was made.
        peak_memory_bytes: Estimated peak working memory at batch 1 on every profile: the SRAM figure on an
            MCU (weights stay in flash); elsewhere the weights held at their stored width plus the peak live
            activations. An estimate from the fused graph, not a measurement.
    """

    profile: str
    is_feasible: bool
    reasons: tuple[str, ...] = ()
    flash_bytes: int = 0
    sram_bytes: int = 0
    flash_limit_bytes: int = 0
    sram_limit_bytes: int = 0
    code_bytes: int = 0
    code_measured: bool = False
    build: dict[str, Any] = field(default_factory=dict)
    peak_memory_bytes: int = 0

    def constraint(self) -> float:
        """An Optuna constraint value: ≤ 0 when feasible, > 0 (worst relative overshoot, or 1) otherwise."""
        if self.is_feasible:
            over = [self.flash_bytes / self.flash_limit_bytes - 1 if self.flash_limit_bytes else -1.0,
                    self.sram_bytes / self.sram_limit_bytes - 1 if self.sram_limit_bytes else -1.0]
            return min(0.0, max(over))
        overs = [self.flash_bytes / self.flash_limit_bytes - 1 if self.flash_limit_bytes else 0.0,
                 self.sram_bytes / self.sram_limit_bytes - 1 if self.sram_limit_bytes else 0.0]
        return max([o for o in overs if o > 0] or [1.0])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Feasibility:
        return cls(**{**data, "reasons": tuple(data.get("reasons", ()))})


def mcu_memory(graph: GraphSummary, weight_bits: int, code_bytes: int, stored_bytes: int | None = None) -> tuple[int, int]:
    """(flash bytes, SRAM bytes) of a model on a microcontroller.

    Args:
        graph: The fused graph at batch 1.
        weight_bits: Stored bit-width of weight matrices and embeddings (32 = fp32).
        code_bytes: Machine code size to add to flash.
        stored_bytes: Exact stored size of the weights (and tables) when known; replaces the estimate
            from ``graph`` at ``weight_bits``.
    """
    weights = stored_bytes if stored_bytes is not None else int(graph.weight_bytes(weight_bits))
    flash = weights + code_bytes
    activation_scale = 8 / 32 if weight_bits <= 8 else 1.0  # int8 kernels take int8 activations
    sram = int(graph.peak_activation_bytes * activation_scale) + SRAM_RUNTIME_BYTES
    return flash, sram


def check_feasibility(
    profile: HardwareProfile,
    graph: GraphSummary,
    weight_bits: int = 32,
    build: CrossBuild | None = None,
    stored_bytes: int | None = None,
) -> Feasibility:
    """Judge one candidate on one profile.

    Args:
        profile: The device.
        graph: The candidate's fused graph at batch 1.
        weight_bits: Stored weight bit-width.
        build: The candidate's build for the device (:func:`nas.hardware.cross.cross_compile`), if made;
            a failed build makes the candidate infeasible.
        stored_bytes: The weights' exact stored size (compression outcome + token map), if known.
    """
    reasons = []
    if build is not None and not build.ok:
        reasons.append(f"does not compile for {profile.name}: {build.error}")
    flash = sram = code = 0
    code_measured = False
    limits = profile.memory
    if profile.is_mcu or limits.flash_bytes or limits.sram_bytes:
        code_measured = build is not None and build.ok and build.text_bytes > 0
        code = build.text_bytes if code_measured else CODE_ALLOWANCE_BYTES
        flash, sram = mcu_memory(graph, weight_bits, code, stored_bytes)
        if limits.flash_bytes and flash > limits.flash_bytes:
            what = "stored weights" if stored_bytes is not None else f"{weight_bits}-bit weights"
            reasons.append(f"needs {flash / 1024:.0f} KiB flash ({what} + code), has {limits.flash_bytes / 1024:.0f} KiB")
        if limits.sram_bytes and sram > limits.sram_bytes:
            reasons.append(f"needs {sram / 1024:.0f} KiB SRAM (peak activations), has {limits.sram_bytes / 1024:.0f} KiB")
    if limits.ram_bytes and graph.weight_bytes(32) + graph.peak_activation_bytes > limits.ram_bytes:
        # Host-side RAM check: the built library holds fp32 weights (fake quantization) plus activations.
        reasons.append(f"needs more than the {limits.ram_bytes / 2**20:.0f} MiB RAM budget")
    return Feasibility(
        profile=profile.name,
        is_feasible=not reasons,
        reasons=tuple(reasons),
        flash_bytes=flash,
        sram_bytes=sram,
        flash_limit_bytes=limits.flash_bytes or 0,
        sram_limit_bytes=limits.sram_bytes or 0,
        code_bytes=code,
        code_measured=code_measured,
        build=build.to_dict() if build is not None else {},
        peak_memory_bytes=sram if sram else int((stored_bytes or graph.weight_bytes(weight_bits)) + graph.peak_activation_bytes),
    )
