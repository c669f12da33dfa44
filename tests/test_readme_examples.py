"""scripts/readme_examples.py: the extractor and runner (fast, no data), and the README's examples in order (slow)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_data

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "readme_examples.py"

spec = importlib.util.spec_from_file_location("readme_examples", SCRIPT)
readme_examples = importlib.util.module_from_spec(spec)
sys.modules["readme_examples"] = readme_examples
spec.loader.exec_module(readme_examples)

MARKDOWN = """# Title

```bash
# a comment line
cxrkit train --recipe tb-fast --data ../shared/data/tb   # [slow]
cxrkit evaluate runs/tb-fast --out 'a # b'   # not a tag: slow
cxrkit data audit ../shared/data/pneumonia --strict \\
    --group-pattern 'person(\\d+)_'   # [exit 1] leakage found
pip install -e .
```

```python
cxrkit.train()
```

<!-- readme-examples: [not run] a batch script -->
```bash
#!/bin/bash
srun cxrkit train --data /shared/nih
```

```text
cxrkit looks like a command but is output
```
"""


def test_extract_reads_commands_in_order_with_their_tags():
    examples = readme_examples.extract(MARKDOWN)
    assert [(e.line, e.kind, e.expected_exit) for e in examples] == [
        (5, "slow", 0), (6, "run", 0), (7, "run", 1), (9, "setup", 0), (19, "not run", 0)]
    assert examples[1].code == "cxrkit evaluate runs/tb-fast --out 'a # b'"
    assert examples[2].code == "cxrkit data audit ../shared/data/pneumonia --strict --group-pattern 'person(\\d+)_'"
    assert examples[2].comment == "[exit 1] leakage found"
    assert examples[4].code == "srun cxrkit train --data /shared/nih"


def test_split_comment_ignores_hashes_in_quotes_and_words():
    assert readme_examples.split_comment("echo '# x' a#b  # note") == ("echo '# x' a#b", "note")
    assert readme_examples.split_comment('echo "it\'s # here"') == ('echo "it\'s # here"', "")
    assert readme_examples.split_comment("# whole line") == ("", "whole line")


def test_path_arguments_tell_inputs_from_outputs():
    inputs, outputs = readme_examples.path_arguments(
        "cxrkit predict runs/tb-fast ../shared/data/tb/Normal --out preds.csv --set augment.hflip=0.5 "
        "--group-pattern 'person(\\d+)_' --storage sqlite:///study.db --layer features.12 "
        "--split-file=runs/a/split.csv")
    assert inputs == ["runs/tb-fast", "../shared/data/tb/Normal"]
    assert outputs == ["preds.csv"]
    assert readme_examples.path_arguments("python benchmarks/bench_ood.py > out/x.txt") == (
        ["benchmarks/bench_ood.py"], ["out/x.txt"])


def _run(markdown: str, tmp_path: Path, **options):
    workdir = tmp_path / "repo"
    workdir.mkdir(parents=True)
    lines: list[str] = []
    results = readme_examples.run_examples(readme_examples.extract(markdown), workdir, echo=lines.append, **options)
    return results, "\n".join(lines)


def test_a_missing_output_of_a_skipped_example_fails_and_names_it(tmp_path):
    markdown = "```bash\necho x > made.txt   # [slow]\ncat made.txt\n```\n"
    results, printed = _run(markdown, tmp_path)
    assert [r.status for r in results] == ["skipped: slow", "MISSING"]
    assert "made.txt does not exist: the example on line 2 should have made it (skipped: slow)" in printed
    results, _ = _run(markdown, tmp_path / "all", run_slow=True)
    assert [r.status for r in results] == ["ok", "ok"]


def test_exit_codes_and_timeouts_are_checked(tmp_path):
    results, printed = _run("```bash\nfalse\nbash -c 'exit 3'   # [exit 3]\nbash -c 'exit 0'  # [exit 3]\n"
                            "sleep 5\nls nowhere.csv\n```\n", tmp_path, timeout=1)
    assert [r.status for r in results] == ["FAILED", "ok", "FAILED", "TIMEOUT", "MISSING"]
    assert [r.failed for r in results] == [True, False, True, True, True]
    assert "exit 0, expected 3" in printed
    assert "nowhere.csv does not exist: no earlier example makes it" in printed
    assert results[3].seconds < 4


def test_every_shortened_command_is_in_the_readme_and_ci_examples_have_their_runs():
    """The README and SHORTENED agree, and each run folder a CI-run example reads is made before it."""
    examples = readme_examples.extract((REPO / "README.md").read_text())
    assert readme_examples.stale_overrides(examples) == []
    made: set[str] = set()
    for example in examples:
        command, _ = readme_examples.plan(example, run_slow=False)
        if command is None:
            continue
        for path in readme_examples.path_arguments(command)[0]:
            parts = Path(path).parts
            if parts[0] == "runs":
                assert parts[1] in made, f"README line {example.line} reads {path}, which no earlier CI example makes"
        made.add(readme_examples._run_name(command) or "")
        made.update(Path(out).parts[1] for out in readme_examples.path_arguments(command)[1]
                    if Path(out).parts[0] == "runs" and len(Path(out).parts) > 1)


@pytest.mark.slow
def test_readme_examples_run_in_order():
    shared_data()
    completed = subprocess.run([sys.executable, str(SCRIPT), "--timeout", "600"], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-2000:]
