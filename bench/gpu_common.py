"""What every part of the GPU suite shares: the device it measures (name, memory, versions, bf16 peak),
the wall-clock box each part runs in, and running a part (its failure reported, not raised)."""

from __future__ import annotations

import gc
import platform
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch

# Dense bf16 peak TFLOP/s by device name, most specific name first (the vendors' data sheets).
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0))


class NoGPU(RuntimeError):
    """No CUDA device is visible to torch."""


@dataclass(frozen=True)
class Device:
    """Where the suite runs: one CUDA device, or the CPU in a dry run."""

    kind: str  # "cuda" or "cpu"
    name: str
    memory_gib: float | None
    peak_tflops: float | None  # dense bf16; None when unknown (no MFU then)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.kind)

    def sync(self) -> None:
        """Wait for the device's queued work (timings must cover the kernels, not their launch)."""
        if self.kind == "cuda":
            torch.cuda.synchronize()

    def reset_peak_memory(self) -> None:
        if self.kind == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_memory_mib(self) -> float:
        """The CUDA allocator's peak since the last reset; on the CPU the process's peak RSS so far."""
        if self.kind == "cuda":
            return torch.cuda.max_memory_allocated() / 2 ** 20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name, "memory_gib": self.memory_gib,
                "peak_bf16_tflops": self.peak_tflops, "torch": torch.__version__, "cuda": torch.version.cuda,
                "transformers": _version("transformers"), "peft": _version("peft"),
                "python": platform.python_version()}

    def line(self) -> str:
        memory = f", {self.memory_gib:.0f} GiB" if self.memory_gib else ""
        peak = f", bf16 peak {self.peak_tflops:.0f} TFLOP/s" if self.peak_tflops else ", bf16 peak unknown"
        return (f"device: {self.name}{memory}{peak}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
                f"transformers {_version('transformers')}, Python {platform.python_version()}")


def find_device(dry_run: bool, peak_tflops: float | None = None) -> Device:
    """The first CUDA device (or the CPU when `dry_run`); `peak_tflops` overrides the table. Raises
    NoGPU when a real run finds no GPU."""
    if dry_run:
        # One thread: tiny ops gain nothing from more, and on a busy machine threads spin waiting for each other
        # (two took 6x longer than one beside other work on 2 cores).
        torch.set_num_threads(1)
        return Device("cpu", "CPU (1 thread)", None, peak_tflops)
    if not torch.cuda.is_available():
        raise NoGPU(f"no CUDA GPU is visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}); "
                    "run this on a GPU machine, or pass --dry-run for the CPU check")
    properties = torch.cuda.get_device_properties(0)
    return Device("cuda", properties.name, properties.total_memory / 2 ** 30,
                  peak_tflops or table_peak_tflops(properties.name))


def table_peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of a device by name, from PEAK_BF16_TFLOPS; None for a device not listed."""
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


class TimeBox:
    """A wall-clock budget that starts when it is made, or at `started` (a `time.perf_counter()` reading)."""

    def __init__(self, seconds: float, started: float | None = None) -> None:
        self.seconds = seconds
        self.started = time.perf_counter() if started is None else started

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def expired(self) -> bool:
        return self.elapsed() >= self.seconds


@dataclass(frozen=True)
class Part:
    """One part of the suite: its key in the report, its title (also its console label), what it runs."""

    key: str
    title: str
    run: Callable[[TimeBox, str], dict]  # (its box, its console label) -> what it measured


def run_part(part: Part, budget: float, suite: TimeBox, device: Device) -> dict:
    """The part's measurements, or why it failed, with its box and the time it took."""
    seconds = min(budget, suite.seconds - suite.elapsed())
    result = {"key": part.key, "title": part.title, "budget_s": seconds}
    if seconds <= 0:
        return {**result, "status": "skipped", "error": "the suite's time was spent", "elapsed_s": 0.0}
    print(f"== {part.title}: box {seconds:.0f} s (suite elapsed {suite.elapsed():.0f} s)", flush=True)
    # The previous part's model and adapter hold each other through hooks: only the cycle collector frees them.
    gc.collect()
    device.reset_peak_memory()
    box = TimeBox(seconds)
    try:
        result.update(status="ok", **part.run(box, part.title))
    except Exception as error:  # one part's failure must not cost the other parts' numbers
        traceback.print_exc()
        result.update(status="failed", error=f"{type(error).__name__}: {error}".splitlines()[0])
    result["elapsed_s"] = box.elapsed()
    print(f"== {part.title}: {result['status']} in {result['elapsed_s']:.1f} s"
          f"{' (cut short)' if result.get('cut_short') else ''}", flush=True)
    return result
