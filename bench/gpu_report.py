"""The GPU suite's outputs: the whole report as JSON, and one markdown table of its headline numbers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

JSON_NAME, MARKDOWN_NAME = "gpu_suite.json", "gpu_suite.md"
MFU_GOAL, LAYER_GOAL = 0.45, 1.05

Row = tuple[str, str, str]  # (measurement, value, note)


def write_report(out: Path, report: dict) -> tuple[Path, Path]:
    """`report` as `out/gpu_suite.json` and its table as `out/gpu_suite.md`; both paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = out / JSON_NAME, out / MARKDOWN_NAME
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown_path.write_text(markdown(report), encoding="utf-8")
    return json_path, markdown_path


def markdown(report: dict) -> str:
    device = report["device"]
    lines = [f"GPU suite{' (dry run)' if report['dry_run'] else ''}, {report['date']}: {device['name']}; "
             f"torch {device['torch']}, CUDA {device['cuda']}, transformers {device['transformers']}; "
             f"{report['elapsed_s']:.0f} s in all", "",
             "| part | measurement | value | note |", "| --- | --- | ---: | --- |"]
    for part in report["parts"].values():
        title = part["title"] + (" (cut short)" if part.get("cut_short") else "")
        lines += [f"| {title} | {measurement} | {value} | {note} |" for measurement, value, note in part_rows(part)]
    return "\n".join(lines) + "\n"


def part_rows(part: dict) -> list[Row]:
    if part["status"] != "ok":
        return [(part["status"], "", part["error"].replace("|", "/"))]
    return ROWS[part["key"]](part)


def layer_rows(part: dict) -> list[Row]:
    ms, ratio = part["ms_fwd_bwd"], part["vs_peft_lora"]
    shape = f"d={part['dim']}, {part['tokens']:,} tokens, {part['rounds']} rounds"
    notes = {"fused TMoLE": f"goal <= {LAYER_GOAL}x LoRA", "per-expert loop": f"{part['loop_vs_fused']:.2f}x fused",
             "peft LoRA": f"r={part['rank']}; {shape}"}
    return [(f"{name}, ms fwd+bwd", f"{value:.3f}", f"{ratio[name]:.2f}x LoRA; {notes.get(name, 'yardstick')}")
            for name, value in ms.items()]


def training_rows(part: dict) -> list[Row]:
    steps = f"{part['steps']} steps ({part['warmup_steps']} untimed), {part['tokens_per_step']:,.0f} tokens/step"
    mfu = f"{part['mfu']:.1%}" if part["mfu"] is not None else "n/a (peak unknown)"
    trend = "fell" if part["loss_fell"] else "did not fall"
    return [("tokens/s", f"{part['tokens_per_s']:,.0f}", steps),
            ("peak memory, GiB", f"{part['peak_memory_mib'] / 1024:.1f}", f"{part['backbone']}, built in "
                                                                          f"{part['build_seconds']:.0f} s"),
            ("MFU (6 x params x tokens/s)", mfu, f"{part['model_tflops_per_s']:.1f} TFLOP/s; goal >= {MFU_GOAL:.0%} "
                                                 "on the 7B config"),
            ("loss, first -> last step", f"{part['first_loss']:.3f} -> {part['last_loss']:.3f}", trend)]


def evaluation_rows(part: dict) -> list[Row]:
    batched, single = part["generation"]
    ratio = {batched["batch"]: f"{part['batched_vs_single']:.1f}x batch 1", 1: "1.0x"}
    rows = [(f"greedy generation, batch {g['batch']}, tokens/s", f"{g['tokens_per_s']:,.0f}",
             f"{ratio[g['batch']]}; {g['tokens']:,} new tokens, {g['records']} records") for g in (batched, single)]
    encoded = part["encoding"]
    return rows + [("document encoding, documents/s", f"{encoded['documents_per_s']:,.0f}",
                    f"{encoded['documents']:,} documents, {part['backbone']}")]


def shape_rows(part: dict) -> list[Row]:
    return [(f"{title}, ms a batch", f"{entry['ms_per_batch']:,.1f}",
             f"{part['vs_repeated'][title]:.2f}x one length; first batch {entry['ms_first_batch']:,.1f} ms; "
             f"{entry['batches']} batches of {part['rows']}")
            for title, entry in part["passes"].items()]


ROWS: dict[str, Callable[[dict], list[Row]]] = {
    "tmole_layer": layer_rows, "smollm2_training": training_rows, "mistral7b_training": training_rows,
    "evaluation": evaluation_rows, "attention_shapes": shape_rows,
}
